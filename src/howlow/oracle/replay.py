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
from .engine import Job, run_recipe
from .features import pixel_features
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

    def wants_prediction(self) -> bool:
        return True  # every round's accuracy is recorded

    def observe(self, logits: torch.Tensor | None, loss: float) -> bool:
        assert logits is not None
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
    run_recipe(jobs, p, n_classes, batch, device=device)
    return {name: float(np.mean([s.accuracy[-1] for s in states])) for name, states in results.items()}


class PropagateState:
    """Replays fixed clicks round by round, as the Oracle trained on them, and keeps the scored
    prediction of the rounds in `keep` (round index -> name) only: pseudo-labels at several budgets
    from one pass. `rounds[r]` holds the flat indices and classes of every click trained on in round r."""

    def __init__(
        self, shape: tuple[int, int], rounds: list[tuple[np.ndarray, np.ndarray]], keep: dict[int, str], scorer: Scorer
    ):
        self.shape, self.rounds, self.keep, self.scorer = shape, rounds, keep, scorer
        self.last = max(keep)
        assert self.last < len(rounds), "a kept round lies beyond the clicks"
        self.r = 0
        self.out: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (labels uint8, confidence float32)

    def train_pixels(self):
        flat, cls = self.rounds[self.r]
        order = np.argsort(flat, kind="stable")  # raster order, as the Oracle trains (OracleState)
        return flat[order], cls[order], np.full(len(flat), 1.0 / len(flat), np.float32)

    def wants_prediction(self) -> bool:
        return self.r in self.keep

    def observe(self, logits: torch.Tensor | None, loss: float) -> bool:
        if logits is not None:
            flat, cls = self.rounds[self.r]
            ys, xs = np.unravel_index(flat, self.shape)
            scored = self.scorer.logits(logits, np.stack([ys, xs, cls], 1))
            conf = scored.float().softmax(1).amax(1).cpu().numpy().reshape(self.shape)
            self.out[self.keep[self.r]] = labels(scored, self.shape), conf
        self.r += 1
        return self.r > self.last


def propagate(
    items: list[tuple[str, np.ndarray, list[tuple[np.ndarray, np.ndarray]], dict[int, str], int]],
    n_classes: int,
    p: OracleParams,
    batch: int,
    device: str = "cpu",
    on_done=None,
) -> None:
    """Per-image networks trained on given clicks, as the Oracle trains them (same engine, steps and
    seeds, warm-started round by round), scored by the Oracle's scorer. Items are (id, image, rounds,
    keep, seed) as PropagateState takes them; `on_done(id, {name: (labels, confidence)})` per image."""

    def jobs():
        for key, image, rounds, keep, seed in items:
            yield Job(
                key, pixel_features(image, p), seed, PropagateState(image.shape[:2], rounds, keep, Scorer(image, p))
            )

    def finished(job: Job, state_dict: dict, seconds: float) -> None:
        if on_done is not None:
            assert isinstance(job.state, PropagateState)
            on_done(job.key, job.state.out)

    run_recipe(jobs(), p, n_classes, batch, finished, device)
