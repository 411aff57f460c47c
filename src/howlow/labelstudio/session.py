"""One task's per-image network, trained on the person's clicks by the Oracle's engine.

A task's network is a function of its clicks in order: one Oracle round per click, each training
`labelstudio.steps_per_update` steps on every click up to it (howlow.oracle.replay.PropagateState, the
engine's `run_recipe`), from the image's Oracle seed; the prediction is read by the Oracle's scorer.
Label Studio's editor sends only the keypoint just placed (an API caller may send all so far), so a
session gathers the keypoints by region id in the order first seen. It keeps where its last update
left the network (weights and Adam moments, engine.Job.resume) and the clicks it had: an update that
adds clicks trains only their rounds, warm-started; clicks that are no continuation (a keypoint moved
or relabelled, or deleted as the webhook reports) replay every round from the start.
`label-studio-import` replays the same rounds, so the pipeline's pseudo-label is the map the person
saw last. Sessions live in memory, the least recently used dropped beyond `labelstudio.cache_tasks`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..oracle import Scorer, image_seed
from ..oracle.engine import Job, run_recipe
from ..oracle.features import pixel_features
from ..oracle.replay import PropagateState
from ..params import OracleParams
from .clicks import Point, unique_pixels


@dataclass
class Session:
    path: Path
    mtime: float
    shape: tuple[int, int]
    features: torch.Tensor
    scorer: Scorer
    seed: int
    # region id -> (y %, x %, class) in click order: Label Studio's editor sends only the keypoint just
    # placed, so the task's clicks are gathered here (a known id moved or relabelled keeps its place)
    points: dict[str, Point] = field(default_factory=dict)
    clicks: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # trained on so far
    resume: dict | None = None  # where the last update left the network (engine.Job.resume)
    last: tuple[np.ndarray, np.ndarray] | None = None  # the last update's (labels, confidence)


def open_session(path: Path, image: np.ndarray, p: OracleParams) -> Session:
    """A fresh session on an image: its cues and scorer computed once; its seed is the one the Oracle
    and `label-studio-import` give an image of that id (the file name without extension)."""
    return Session(
        path,
        path.stat().st_mtime,
        image.shape[:2],
        pixel_features(image, p),
        Scorer(image, p),
        image_seed(p.seed, path.stem),
    )


def update(
    session: Session, clicks: np.ndarray, p: OracleParams, n_classes: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """The network after the clicks ((n, 3) [y, x, class] in click order, n >= 1; one per pixel, a
    pixel clicked again taking the later class), `p.steps_per_round` steps per click: (labels uint8
    (H, W), confidence float32 (H, W)) as the Oracle's scorer reads its prediction."""
    clicks = unique_pixels(clicks)
    k = len(session.clicks)
    if k > len(clicks) or not np.array_equal(clicks[:k], session.clicks):
        k, session.resume, session.last = 0, None, None  # no continuation: from the start
    if k == len(clicks) and session.last is not None:
        return session.last  # the same clicks again (the editor reloaded)
    flat, cls = clicks[:, 0] * session.shape[1] + clicks[:, 1], clicks[:, 2]
    rounds = [(flat[: r + 1], cls[: r + 1]) for r in range(k, len(clicks))]
    state = PropagateState(session.shape, rounds, {len(rounds) - 1: "update"}, session.scorer)
    job = Job(str(session.path), session.features, session.seed, state, resume=session.resume, keep=True)
    run_recipe([job], p, n_classes, 1, device=device)
    session.clicks, session.resume, session.last = clicks, job.resume, state.out["update"]
    return session.last


class Sessions:
    """Task id -> Session, at most `size`, least recently used first out. A session whose image file
    changed (another path, or a newer file) starts afresh."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[int, Session] = OrderedDict()
        self.lock = threading.Lock()  # one update at a time: each uses every core already

    def get(self, task: int, path: Path, image_loader, p: OracleParams) -> Session:
        s = self.items.get(task)
        if s is None or s.path != path or s.mtime != path.stat().st_mtime:
            s = open_session(path, image_loader(path), p)
            self.items[task] = s
        self.items.move_to_end(task)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return s
