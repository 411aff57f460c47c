"""Batched per-image training: G independent per-pixel MLPs advance in one step.

The Oracle trains one small network per image for hundreds of tiny steps; one image at a time, the
step is all per-kernel overhead (CPU) or an idle GPU. Here the networks of G images are stacked:
every layer's weights are one (G, in, out) tensor, a step is a few batched matmuls over all slots,
and each slot has its own revealed pixels (padded, masked), its own Adam state and step count, and
its own stopping rule. A slot whose image is done takes the next image at once (continuous
batching), so the batch stays full. Images of different sizes work: only the revealed pixels enter
a step, and each image is predicted whole on its own (StackedMLP.predict).

Slots never mix: slot g's loss depends on slot g's parameters only, padding rows carry zero weight,
and the optimizer is element-wise. A batch of G images gives the same results as G runs of one image:
bit for bit when the slots train on equally many pixels (tests/test_engine.py). With padding, the
last layer's weight gradient is a GEMM whose summation order on CPU depends on the padded length, so
weights agree to float rounding, and long runs on real images can part ways (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch.nn import functional as F

from ..params import OracleParams
from .features import n_features
from .networks import StackedMLP, ensemble_logits


class SlotAdam:
    """Adam (PyTorch's defaults, no weight decay) with per-slot moments and step counts, so a slot
    restarted on a new image starts its optimizer afresh while the others go on."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros(params[0].shape[0], device=params[0].device)

    def reset_slot(self, g: int) -> None:
        for m, v in zip(self.m, self.v):
            m[g].zero_()
            v[g].zero_()
        self.t[g] = 0

    def slot_state(self, g: int, n: int = 1) -> dict[str, list[torch.Tensor]]:
        """Slots g .. g + n - 1's moments and step counts (copies), for `load_slot`."""
        return {
            "m": [m[g : g + n].clone() for m in self.m],
            "v": [v[g : g + n].clone() for v in self.v],
            "t": [self.t[g : g + n].clone()],
        }

    @torch.no_grad()
    def load_slot(self, g: int, state: dict[str, list[torch.Tensor]]) -> None:
        for mine, theirs in zip(self.m + self.v + [self.t], state["m"] + state["v"] + state["t"]):
            mine[g : g + len(theirs)].copy_(theirs)

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the `active` slots (bool, (G,)); the others keep their parameters."""
        b1, b2 = self.betas
        self.t += active
        t = self.t.clamp(min=1).view(-1, 1, 1)
        step_size = (self.lr / (1 - b1**t)) * active.view(-1, 1, 1)
        bc2_sqrt = (1 - b2**t).sqrt()
        for p, m, v in zip(self.params, self.m, self.v):
            g = cast(torch.Tensor, p.grad)  # every parameter took part in the loss
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(step_size * m / (v.sqrt() / bc2_sqrt + self.eps))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class RoundState(Protocol):
    """What the engine asks of an image's Oracle (howlow.oracle.loop.OracleState, or a replay)."""

    def train_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat indices, classes and loss weights (summing to 1) of the pixels to train on."""
        ...

    def wants_prediction(self) -> bool:
        """Whether this round needs the whole image's prediction (a replay only needs some rounds')."""
        ...

    def observe(self, logits: torch.Tensor | None, loss: float) -> bool:
        """Take the round's (H*W, K) logits (None when it wanted none); True when the image is done."""
        ...


@dataclass
class Job:
    """One image for the engine: `features` (H*W, C) flattened in raster order, and the callbacks of
    its Oracle (howlow.oracle.loop.OracleState): which pixels to train on, and what to do with a
    prediction (returns True when the image is done)."""

    key: str
    features: torch.Tensor
    seed: int
    state: RoundState
    # A warm start: what the engine left here when this image was last done (its networks' weights
    # and Adam moments), so a later run goes on where that one stopped, as if its rounds had been
    # one run's (the Label Studio backend: one run per update). None: fresh weights from `seed`.
    resume: dict | None = None
    keep: bool = False  # leave the state in `resume` when done (held in memory: only when asked)


def revealed_batch(picks: list[tuple], slots: list[int], feats: list[torch.Tensor], groups: int, device):
    """Features (G, n, C), classes (G, n) and loss weights (G, n) of every slot's revealed pixels,
    padded to the largest count; padding and idle slots weigh 0."""
    n_max = max(len(idx) for idx, *_ in picks)
    x = torch.zeros(groups, n_max, feats[slots[0]].shape[1], device=device)
    y = torch.zeros(groups, n_max, dtype=torch.long, device=device)
    weight = torch.zeros(groups, n_max, device=device)
    for g, (idx, cls, w) in zip(slots, picks):
        n = len(idx)
        x[g, :n] = feats[g][torch.as_tensor(idx, device=device)]
        y[g, :n] = torch.as_tensor(cls, device=device)
        weight[g, :n] = torch.as_tensor(w, device=device)  # the slot's own weights, summing to 1
    return x, y, weight


def train_round(model: StackedMLP, adam: SlotAdam, x, y, weight, on: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` Adam steps of every active slot on its own pixels; returns the last step's per-pixel losses."""
    for _ in range(steps):
        ce = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="none")
        # a sum of per-slot weighted means: each slot's gradient is that of its own loss
        loss = (ce * weight.flatten()).sum()
        adam.zero_grad()
        loss.backward()
        adam.step(on)
    return ce.detach().view_as(weight)


def run_batched(
    jobs: Iterable[Job],
    n_features: int,
    n_classes: int,
    hidden: int,
    layers: int,
    lr: float,
    steps_per_round: int,
    batch_size: int,
    warm_start: bool = True,
    on_done: Callable[[Job, dict, float], None] | None = None,
    device: str | torch.device = "cpu",
    select_workers: int = 1,
    grid: list[int] | tuple[int, ...] = (),
    grid_dim: int = 4,
    members: int = 1,
) -> None:
    """Run every job's Oracle loop, `batch_size` images at a time with continuous batching.

    One tick = one round for every active slot: train `steps_per_round` steps on its revealed pixels,
    predict its whole image, hand the logits to its OracleState (which scores, stops or reveals).
    `on_done(job, state_dict, seconds)` is called as soon as an image is done. `select_workers` > 1
    runs the slots' scoring and pixel selection in that many threads (scipy releases the GIL for most
    of it), overlapped with the prediction of the next chunk. `grid`/`grid_dim`: the networks' position
    lattices (models.StackedMLP); the features then end with their corner columns. `members`: each
    image trains that many networks on the same pixels (an ensemble; their initial weights are
    consecutive draws from the image's generator), and its Oracle sees their mean softmax
    (models.ensemble_logits). Image slot g owns the model's slots g x members .. (g + 1) x members - 1."""
    queue = iter(jobs)
    model = StackedMLP(batch_size * members, n_features, n_classes, hidden, layers, grid, grid_dim).to(device)
    adam = SlotAdam(list(model.parameters()), lr)
    slot_job: list[Job | None] = [None] * batch_size
    slot_feats: list[torch.Tensor | None] = [None] * batch_size
    slot_lattice: list[torch.Tensor | None] = [None] * batch_size  # StackedMLP.lattice_matrix, once per image
    slot_t0 = [0.0] * batch_size

    def member_slots(g: int) -> range:
        return range(g * members, (g + 1) * members)

    def current(g: int) -> Job:
        job = slot_job[g]
        assert job is not None, f"slot {g} is idle"
        return job

    def restart(g: int) -> None:
        # every (re)start draws from the image's own generator: the same weights whatever the slot
        gen = torch.Generator().manual_seed(current(g).seed)
        for s in member_slots(g):
            model.reset_slot(s, gen)
            adam.reset_slot(s)

    def fill(g: int) -> None:
        slot_t0[g] = time.perf_counter()
        slot_job[g] = job = next(queue, None)
        slot_feats[g] = None if job is None else job.features.to(device)
        slot_lattice[g] = None if job is None else model.lattice_matrix(cast(torch.Tensor, slot_feats[g]))
        if job is not None and job.resume is not None:
            model.load_slot(g * members, job.resume["model"])
            adam.load_slot(g * members, job.resume["adam"])
        elif job is not None:
            restart(g)

    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(select_workers)) if select_workers > 1 else None
        for g in range(batch_size):
            fill(g)
        while active := [g for g in range(batch_size) if slot_job[g] is not None]:
            if not warm_start:
                for g in active:
                    restart(g)
            picks = [current(g).state.train_pixels() for g in active]
            slots = [s for g in active for s in member_slots(g)]
            # per model slot; idle slots hold None and are never read
            feats = cast(list[torch.Tensor], [slot_feats[s // members] for s in range(batch_size * members)])
            x, y, weight = revealed_batch(
                [pk for pk in picks for _ in range(members)], slots, feats, batch_size * members, device
            )
            on = torch.zeros(batch_size * members, dtype=torch.bool, device=device)
            on[slots] = True
            ce = train_round(model, adam, x, y, weight, on, steps_per_round)
            # each image's last loss over its own pixels only (a sum over padding would round
            # differently), the mean over its members
            per_slot = [
                (ce[s, : len(pk[0])] * weight[s, : len(pk[0])]).sum()
                for g, pk in zip(active, picks)
                for s in member_slots(g)
            ]
            losses = dict(zip(active, torch.stack(per_slot).view(len(active), members).mean(1).tolist()))
            # each slot's Oracle scores its prediction and picks pixels (CPU work); with a pool this
            # overlaps the next chunk's prediction. Slots are independent: results do not depend on it.
            # each image's whole prediction (StackedMLP.predict, one image at a time: its cues enter
            # once for all its members), and only where its state asks for one
            outcome: dict[int, Any] = {}
            for g in active:
                state = current(g).state
                logits = None
                if state.wants_prediction():
                    logits = ensemble_logits(
                        model.predict(cast(torch.Tensor, slot_feats[g]), member_slots(g), slot_lattice[g])
                    )
                outcome[g] = pool.submit(state.observe, logits, losses[g]) if pool else state.observe(logits, losses[g])
            for g in active:
                if outcome[g].result() if pool else outcome[g]:
                    job = current(g)
                    weights = model.slot_state(g * members, members)
                    if job.keep:
                        job.resume = {"model": weights, "adam": adam.slot_state(g * members, members)}
                    if on_done is not None:
                        on_done(job, weights, time.perf_counter() - slot_t0[g])
                    fill(g)


def run_recipe(
    jobs: Iterable[Job],
    p: OracleParams,
    n_classes: int,
    batch_size: int,
    on_done: Callable[[Job, dict, float], None] | None = None,
    device: str | torch.device = "cpu",
    select_workers: int = 1,
) -> None:
    """run_batched with the networks and training schedule of the Oracle recipe `p`: every caller that
    trains per-image networks (the Oracle, its replays) trains them the same way."""
    run_batched(
        jobs,
        n_features(p),
        n_classes,
        p.width,
        p.depth,
        p.lr,
        p.steps_per_round,
        batch_size,
        p.warm_start,
        on_done,
        device,
        select_workers,
        p.grid,
        p.grid_dim,
        p.ensemble,
    )
