"""The training-order experiment: does the order in which pixels are revealed matter?

A fresh network is trained on the pixels an Oracle run revealed, in reveal order (round by round),
all at once (the same number of steps), or in a shuffled order cut into rounds of the same sizes,
with the same engine, steps and seeds as the Oracle, and scored by the same scorer.
"""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import confusion, pixel_accuracy
from ..params import OracleParams
from .engine import Job, run_batched
from .features import n_features, pixel_features
from .scorer import Scorer, labels


class ReplayState:
    """Replays a fixed schedule of revealed pixels (no selection): round r trains on `rounds[r]`
    (flat indices) and records the accuracy of the prediction after it, scored as the Oracle scores."""

    def __init__(self, label: np.ndarray, n_classes: int, rounds: list[np.ndarray], scorer: Scorer):
        self.label, self.n_classes, self.rounds, self.scorer = label, n_classes, rounds, scorer
        self.r = 0
        self.accuracy: list[float] = []

    def train_pixels(self):
        flat = self.rounds[self.r]
        return flat, self.label.ravel()[flat].astype(np.int64), np.full(len(flat), 1.0 / len(flat), np.float32)

    def observe(self, logits: torch.Tensor, loss: float) -> bool:
        flat = self.rounds[self.r]
        ys, xs = np.unravel_index(flat, self.label.shape)
        revealed = np.stack([ys, xs, self.label.ravel()[flat]], 1)
        pred = labels(self.scorer.logits(logits, revealed), self.label.shape)
        self.accuracy.append(pixel_accuracy(confusion(pred, self.label, self.n_classes)))
        self.r += 1
        return self.r == len(self.rounds)


def order_schedules(revealed: list[list[int]], width: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """The three training orders of one image's revealed pixels ([y, x, class, round] in reveal order)."""
    arr = np.array(revealed, np.int64).reshape(-1, 4)
    flat = arr[:, 0] * width + arr[:, 1]
    sizes = np.bincount(arr[:, 3])
    ends = np.cumsum(sizes)
    shuffled = rng.permutation(flat)
    return {
        "reveal order": [np.sort(flat[:e]) for e in ends],
        "all at once": [np.sort(flat)] * len(ends),
        "shuffled": [np.sort(shuffled[:e]) for e in ends],
    }


def training_order(
    items: list[tuple[str, np.ndarray, np.ndarray, int]],
    revealed: dict[str, list],
    n_classes: int,
    p: OracleParams,
    batch: int,
    device: str,
) -> dict[str, float]:
    """Mean final accuracy per training order over the images (id, image, label, seed), given each
    image's revealed pixels."""
    jobs: list[Job] = []
    results: dict[str, list[ReplayState]] = {}
    for key, image, label, seed in items:
        scheds = order_schedules(revealed[key], label.shape[1], np.random.default_rng(seed))
        feats = pixel_features(image, p)
        for name, rounds in scheds.items():
            state = ReplayState(label, n_classes, rounds, Scorer(image, p))
            results.setdefault(name, []).append(state)
            jobs.append(Job(f"{key}/{name}", feats, seed, state))
    run_batched(
        jobs,
        n_features(p),
        n_classes,
        p.width,
        p.depth,
        p.lr,
        p.steps_per_round,
        batch,
        p.warm_start,
        device=device,
        grid=p.grid,
        grid_dim=p.grid_dim,
        members=p.ensemble,
    )
    return {name: float(np.mean([s.accuracy[-1] for s in states])) for name, states in results.items()}
