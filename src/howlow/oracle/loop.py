"""The Oracle loop of one image, whatever trains its network.

An `OracleState` holds the image's full label map. Each round the engine trains the image's network
on the revealed pixels and hands over its prediction; the state scores it (howlow.oracle.scorer),
stops at `oracle.target_accuracy` or at the `oracle.max_fraction` budget, or reveals more pixels with
the selection rule (howlow.oracle.select). The budget is the revealed count over all H*W pixels.
`run_oracle_many` runs many images through the batched engine; results depend neither on the order
of the images nor on the batch size (bit for bit when the slots train on equally many pixels, else
up to float rounding, see howlow.oracle.engine).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..io import VOID, DataError
from ..metrics import confusion, mean_iou, pixel_accuracy
from ..params import OracleParams
from .engine import Job, run_recipe
from .features import pixel_features
from .networks import PixelMLP, oracle_network
from .scorer import Scorer, labels
from .select import UNCERTAINTY_RULES, select_pixels


def image_seed(seed: int, image_id: str) -> int:
    # stable across processes and Python runs (unlike hash())
    return (seed * 1_000_003 + zlib.crc32(image_id.encode())) % 2**31


@dataclass
class OracleRun:
    """The result of one image's Oracle loop."""

    revealed: list[list[int]] = field(default_factory=list)  # [y, x, class, round] in reveal order
    curve: list[dict] = field(default_factory=list)
    reached: bool = False
    seconds: float = 0.0
    model: PixelMLP | None = None
    prediction: np.ndarray | None = None


class OracleState:
    """The Oracle's side of one image: it holds the full label map, tells the trainer which pixels
    are revealed, and after each round scores the prediction, stops at the target or the budget, or
    reveals more pixels with the selection rule."""

    def __init__(self, image: np.ndarray, label: np.ndarray, n_classes: int, p: OracleParams, seed: int):
        if not (label != VOID).any():
            raise DataError("every pixel is void: there is nothing to reveal")
        self.label, self.n_classes, self.p = label, n_classes, p
        self.scorer = Scorer(image, p)
        self.valid = label != VOID
        self.mask = np.zeros(label.shape, bool)
        self.rng = np.random.default_rng(seed)
        self.budget = max(int(p.max_fraction * label.size), p.initial_pixels)
        self.run = OracleRun()
        self.round = 0
        self._reveal(select_pixels("random", self.mask, self.valid, self.mask, p.initial_pixels, self.rng))

    def _reveal(self, points: np.ndarray) -> None:
        for y, x in points:
            self.mask[y, x] = True
            self.run.revealed.append([int(y), int(x), int(self.label[y, x]), self.round])

    def train_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat (raster-order) indices, classes and loss weights (summing to 1) of the revealed pixels."""
        flat = np.flatnonzero(self.mask)
        cls = self.label.ravel()[flat].astype(np.int64)
        return flat, cls, np.full(len(flat), 1.0 / len(flat), np.float32)

    def next_round_size(self) -> int:
        """pixels_per_round, or a share of what is already revealed when `round_growth` asks for more."""
        return max(self.p.pixels_per_round, int(np.ceil(self.p.round_growth * len(self.run.revealed))))

    def wants_prediction(self) -> bool:
        return True  # every round is scored

    def observe(self, logits: torch.Tensor | None, loss: float) -> bool:
        """Score this round's (H*W, K) logits; True when the image is done."""
        assert logits is not None
        h, w = self.label.shape
        logits = self.scorer.logits(logits, self.run.revealed)
        pred = labels(logits, (h, w))
        cm = confusion(pred, self.label, self.n_classes)
        acc = pixel_accuracy(cm)
        n = len(self.run.revealed)
        self.run.curve.append(
            {
                "round": self.round,
                "revealed": n,
                "revealed_fraction": n / self.label.size,
                "accuracy": acc,
                "miou": mean_iou(cm),
                "loss": loss,
            }
        )
        self.run.reached = acc >= self.p.target_accuracy
        self.run.prediction = pred
        k = self.next_round_size()
        if self.run.reached or n + k > self.budget:
            return True
        self.round += 1
        prob = None
        if self.p.strategy in UNCERTAINTY_RULES:  # only they look at the probabilities
            prob = logits.float().softmax(1).T.reshape(-1, h, w).cpu().numpy()
        error = (pred != self.label) & self.valid
        new = select_pixels(self.p.strategy, error, self.valid, self.mask, k, self.rng, prob)
        if len(new) == 0:  # nothing left to reveal: the network cannot fit its own labels
            return True
        self._reveal(new)
        return False


def run_oracle_many(
    items: Iterable[tuple[str, np.ndarray, np.ndarray, int]],
    n_classes: int,
    p: OracleParams,
    batch_size: int = 1,
    on_done: Callable[[str, OracleRun], None] | None = None,
    device: str = "cpu",
    select_workers: int = 1,
) -> None:
    """The Oracle loop on many images, (id, image, label, seed) each, `batch_size` images' networks
    training at once. `on_done(id, run)` gets each image's result as soon as it is done."""

    def jobs():
        for key, image, label, seed in items:
            state = OracleState(image, label, n_classes, p, seed)  # raises DataError for an all-void label
            yield Job(key, pixel_features(image, p), seed, state)

    def finished(job: Job, state_dict: dict, seconds: float) -> None:
        assert isinstance(job.state, OracleState)
        run = job.state.run
        run.model = oracle_network(p, n_classes, 0)
        run.model.load_state_dict(state_dict)
        run.seconds = seconds
        if on_done is not None:
            on_done(job.key, run)

    run_recipe(jobs(), p, n_classes, batch_size, finished, device, select_workers)


def run_oracle(image: np.ndarray, label: np.ndarray, n_classes: int, p: OracleParams, seed: int) -> OracleRun:
    """The Oracle loop on one image: the engine with one slot. Deterministic for a given seed on CPU."""
    t0 = time.perf_counter()
    out: list[OracleRun] = []
    run_oracle_many([("image", image, label, seed)], n_classes, p, 1, lambda _, run: out.append(run))
    out[0].seconds = time.perf_counter() - t0
    return out[0]
