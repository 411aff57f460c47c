"""How a per-image prediction is read: the one scorer that the Oracle, pseudo-labelling and the
training-order replay all call.

The prediction is the network's softmax (an ensemble's mean softmax), blended with the geodesic vote
of the revealed pixels when `oracle.geodesic` > 0: log((1 - w) softmax + w onehot(vote)). The vote
wins wherever the network's top two classes are less than w / (1 - w) apart. It uses only the image
and the revealed pixels, so the budget is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from ..params import OracleParams
from .geodesic import edge_cost, nearest_click


class Scorer:
    """The scorer of one image. `logits` takes the network's (H*W, K) logits and the revealed
    pixels as rows [y, x, class, ...] and returns what every consumer reads: (H*W, K)
    log-probabilities (argmax and softmax read them like logits)."""

    def __init__(self, image: np.ndarray, p: OracleParams):
        self.weight = p.geodesic
        self.cost = edge_cost(image, p.geodesic_edge) if p.geodesic else None
        self._last: tuple[bytes, np.ndarray] | None = None  # the vote of the last pixel set

    def vote(self, revealed: np.ndarray | list) -> np.ndarray:
        """(H, W) class of each pixel's geodesically nearest revealed pixel; computed once per distinct
        pixel set (the replay's "all at once" order shows the same set every round)."""
        assert self.cost is not None, "the vote needs oracle.geodesic > 0"
        arr = np.asarray(revealed, np.int64).reshape(len(revealed), -1)[:, :3]
        key = arr.tobytes()
        if self._last is None or self._last[0] != key:
            self._last = key, nearest_click(self.cost, arr[:, :2], arr[:, 2])
        return self._last[1]

    def logits(self, logits: torch.Tensor, revealed: np.ndarray | list) -> torch.Tensor:
        if not self.weight:
            return logits
        onehot = torch.nn.functional.one_hot(
            torch.from_numpy(self.vote(revealed).ravel()).to(logits.device), logits.shape[1]
        )
        return ((1 - self.weight) * logits.float().softmax(1) + self.weight * onehot).log()


def labels(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 class map of (H*W, K) scores."""
    return logits.argmax(1).to(torch.uint8).cpu().numpy().reshape(shape)
