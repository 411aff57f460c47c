"""One task's per-image network, trained on the person's clicks by the Oracle's engine.

Each update trains the network `labelstudio.steps_per_update` steps on every click so far, as one
Oracle round (howlow.oracle.replay.PropagateState, the engine's `run_recipe`), warm-started where the
task's previous update stopped (weights and Adam moments), and reads the prediction with the Oracle's
scorer. So the updates of a session, one click each, are the rounds that `label-studio-import`
replays: the pipeline's pseudo-label is what the person saw. Sessions live in memory, the least
recently used dropped beyond `labelstudio.cache_tasks`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..oracle import Scorer, image_seed
from ..oracle.engine import Job, run_recipe
from ..oracle.features import pixel_features
from ..oracle.replay import PropagateState
from ..params import OracleParams
from .clicks import unique_pixels


@dataclass
class Session:
    path: Path
    mtime: float
    shape: tuple[int, int]
    features: torch.Tensor
    scorer: Scorer
    seed: int
    resume: dict | None = None  # where the last update left the network (engine.Job.resume)
    updates: int = 0


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
    """Train on the clicks ((n, 3) [y, x, class], n >= 1) for one round of `p.steps_per_round` steps;
    (labels uint8 (H, W), confidence float32 (H, W)) as the Oracle's scorer reads the prediction."""
    clicks = unique_pixels(clicks)
    flat = clicks[:, 0] * session.shape[1] + clicks[:, 1]
    state = PropagateState(session.shape, [(flat, clicks[:, 2])], {0: "update"}, session.scorer)
    job = Job(str(session.path), session.features, session.seed, state, resume=session.resume)
    run_recipe([job], p, n_classes, 1, device=device)
    session.resume, session.updates = job.resume, session.updates + 1
    return state.out["update"]


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
