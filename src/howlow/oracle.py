"""Stage `oracle`: per image, how few revealed pixels does a from-scratch network need?

For each training image a small network (by default a per-pixel MLP on cues computed from the image;
`oracle.model: unet` is the convolutional option) is trained from scratch on that image alone, using
only the pixels the Oracle has revealed. Per-pixel MLPs of several images train at once (howlow.engine,
`runtime.oracle_batch`); the results are the same as one image at a time. Each round: train, predict,
compare with the full label map (void excluded); stop at `target_accuracy` or `max_fraction`, else
reveal `pixels_per_round` more pixels chosen by the selection rule. The prediction is the network's
(the mean softmax of `oracle.ensemble` networks), blended with the geodesic vote of the revealed
pixels when `oracle.geodesic` > 0 (howlow.geodesic). The budget is the revealed count over all H*W
pixels of the image.

Outputs in `data/oracle/`: `<id>.pt` (final network), `<id>.json` (revealed pixels in reveal order as
[y, x, class, round], the round-by-round curve, a summary), `summary.csv`; and `eval/plots/
oracle_curves.csv` for `dvc plots`. The json is written last and marks the image done, so a rerun
skips finished images (same fingerprint) and never reads a half-written result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from .data import Prepared, load_prepared
from .io import EVAL, ORACLE, PREPARED, VOID, DataError, read_json, save_torch, write_csv, write_json
from .metrics import confusion, mean_iou, pixel_accuracy
from .engine import Job, run_batched
from .geodesic import blend, edge_cost, vote_for
from .models import build_model
from .params import OracleParams, Params, ParamsError
from .select import UNCERTAINTY_RULES, select_pixels


def use_runtime(params: Params) -> None:
    """torch threads from `runtime.threads`; a clear error when `runtime.device` names a missing GPU."""
    if params.runtime.device == "cuda" and not torch.cuda.is_available():
        raise ParamsError("runtime.device: 'cuda' is set but torch sees no CUDA device (use 'cpu')")
    torch.set_num_threads(params.runtime.threads or os.cpu_count() or 1)


def superpixel_cues(rgb: np.ndarray, n_segments: int) -> list[np.ndarray]:
    """Mean RGB and grey-level std of each pixel's SLIC superpixel (about `n_segments` per image).
    Unlike a Gaussian blur these stop at image edges, so every pixel of a region gets the same cue and
    one revealed pixel can speak for its whole region."""
    from skimage.segmentation import slic  # imported here: only this cue needs scikit-image

    seg = slic(rgb, n_segments=n_segments, compactness=10, start_label=0, channel_axis=2).ravel()
    count = np.maximum(np.bincount(seg), 1)
    grey = rgb.mean(2).ravel()
    chans = [(np.bincount(seg, rgb[..., c].ravel()) / count)[seg] for c in range(3)]
    mean = np.bincount(seg, grey) / count
    var = np.bincount(seg, grey * grey) / count - mean * mean
    chans.append(np.sqrt(np.maximum(var, 0))[seg])
    return [c.reshape(rgb.shape[:2]).astype(np.float32) for c in chans]


def grid_corners(h: int, w: int, grid: list[int]) -> torch.Tensor:
    """(8 x len(grid), H, W): for each lattice of n x n cells spanning the image, every pixel's four
    corner nodes (flat index into all lattices' nodes, as a float) and then their bilinear weights.
    What models.StackedMLP reads its position embedding with."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    idx, wts, offset = [], [], 0
    for n in grid:
        # position in cell units, the last row/column kept inside the last cell
        fy = np.minimum(yy / max(h - 1, 1) * n, n - 1e-6)
        fx = np.minimum(xx / max(w - 1, 1) * n, n - 1e-6)
        y0, x0 = np.floor(fy), np.floor(fx)
        ty, tx = fy - y0, fx - x0
        node = lambda y, x: offset + y * (n + 1) + x  # noqa: E731
        idx += [node(y0, x0), node(y0, x0 + 1), node(y0 + 1, x0), node(y0 + 1, x0 + 1)]
        wts += [(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx]
        offset += (n + 1) ** 2
    return torch.from_numpy(np.stack(idx + wts).astype(np.float32)) if grid else torch.zeros(0, h, w)


def image_features(image: np.ndarray, p: OracleParams) -> torch.Tensor:
    """(C, H, W) per-image standardised cues: RGB; per scale, blurred RGB and local contrast (std of
    grey levels in a Gaussian window); per superpixel count, the superpixel's mean RGB and contrast;
    y/x in [-1, 1] when `p.coords`; sin/cos of pi 2^k y and x for k < `p.fourier`. The position
    channels are then scaled by `p.position_gain`. With `p.grid`, the lattice corners and weights
    follow, unstandardised (grid_corners)."""
    rgb = image.astype(np.float32) / 255.0
    grey = rgb.mean(2)
    chans = [rgb[..., c] for c in range(3)]
    for s in p.scales:
        chans += [ndimage.gaussian_filter(rgb[..., c], s) for c in range(3)]
        mean = ndimage.gaussian_filter(grey, s)
        chans.append(np.sqrt(np.maximum(ndimage.gaussian_filter(grey * grey, s) - mean * mean, 0)))
    for n in p.superpixels:
        chans += superpixel_cues(rgb, n)
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h - 1, 1) * 2 - 1, xx / max(w - 1, 1) * 2 - 1
    if p.coords:
        chans += [yy, xx]
    for k in range(p.fourier):
        f = np.pi * 2**k
        chans += [np.sin(f * yy), np.cos(f * yy), np.sin(f * xx), np.cos(f * xx)]
    x = torch.from_numpy(np.stack(chans).astype(np.float32))
    x = (x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), keepdim=True) + 1e-6)
    n_position = (2 if p.coords else 0) + 4 * p.fourier  # the last channels
    if n_position and p.position_gain != 1.0:
        x[-n_position:] *= p.position_gain
    return torch.cat([x, grid_corners(h, w, p.grid)]) if p.grid else x


def n_features(p: OracleParams) -> int:
    return (3 + 4 * len(p.scales) + 4 * len(p.superpixels) + (2 if p.coords else 0) + 4 * p.fourier
            + 8 * len(p.grid))


def image_seed(seed: int, image_id: str) -> int:
    # stable across processes and Python runs (unlike hash())
    return (seed * 1_000_003 + zlib.crc32(image_id.encode())) % 2**31


def oracle_network(p: OracleParams, n_classes: int, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    return build_model(p.model, n_features(p), n_classes, p.width, p.depth, gen, p.grid, p.grid_dim, p.ensemble)


@dataclass
class OracleRun:
    """The result of one image's Oracle loop."""
    revealed: list[list[int]] = field(default_factory=list)  # [y, x, class, round] in reveal order
    curve: list[dict] = field(default_factory=list)
    reached: bool = False
    seconds: float = 0.0
    model: torch.nn.Module | None = None
    prediction: np.ndarray | None = None


class OracleState:
    """The Oracle's side of one image, whatever trains the network: it holds the full label map,
    tells the trainer which pixels are revealed, and after each round scores the prediction, stops at
    the target or the budget, or reveals more pixels with the selection rule."""

    def __init__(self, label: np.ndarray, n_classes: int, p: OracleParams, seed: int,
                 image: np.ndarray | None = None):
        if not (label != VOID).any():
            raise DataError("every pixel is void: there is nothing to reveal")
        self.label, self.n_classes, self.p = label, n_classes, p
        # the geodesic click vote (howlow.geodesic) needs the image's edges
        if p.geodesic and image is None:
            raise ValueError("oracle.geodesic needs the image")
        self.cost = edge_cost(image, p.geodesic_edge) if p.geodesic else None
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
        """Flat (raster-order) indices, classes and loss weights (summing to 1) of the revealed pixels.
        With `class_balance` every revealed class weighs the same, however few of its pixels are shown."""
        flat = np.flatnonzero(self.mask)
        cls = self.label.ravel()[flat].astype(np.int64)
        if self.p.class_balance:
            counts = np.bincount(cls, minlength=self.n_classes)
            weight = 1.0 / (counts[cls] * np.count_nonzero(counts))
        else:
            weight = np.full(len(flat), 1.0 / len(flat))
        return flat, cls, weight.astype(np.float32)

    def next_round_size(self) -> int:
        """pixels_per_round, or a share of what is already revealed when `round_growth` asks for more."""
        return max(self.p.pixels_per_round, int(np.ceil(self.p.round_growth * len(self.run.revealed))))

    def observe(self, logits: torch.Tensor, loss: float) -> bool:
        """Score this round's (H*W, K) logits, blended with the geodesic vote of the revealed pixels
        when `oracle.geodesic` > 0; True when the image is done."""
        h, w = self.label.shape
        if self.cost is not None:
            logits = blend(logits, vote_for(self.cost, self.run.revealed), self.p.geodesic)
        pred = logits.argmax(1).to(torch.uint8).cpu().numpy().reshape(h, w)
        cm = confusion(pred, self.label, self.n_classes)
        acc = pixel_accuracy(cm)
        n = len(self.run.revealed)
        self.run.curve.append({"round": self.round, "revealed": n, "revealed_fraction": n / self.label.size,
                               "accuracy": acc, "miou": mean_iou(cm), "loss": loss})
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


def pixel_features(image: np.ndarray, p: OracleParams) -> torch.Tensor:
    """(H*W, C) cues in raster order: what the per-pixel network sees."""
    x = image_features(image, p)
    return x.flatten(1).T.contiguous()


def run_oracle_many(items: Iterable[tuple[str, np.ndarray, np.ndarray, int]], n_classes: int,
                    p: OracleParams, batch_size: int = 1,
                    on_done: Callable[[str, OracleRun], None] | None = None, device: str = "cpu",
                    select_workers: int = 1) -> None:
    """The Oracle loop on many images, (id, image, label, seed) each, `batch_size` per-image MLPs
    training at once (howlow.engine). `on_done(id, run)` gets each image's result as soon as it is done.
    Results do not depend on the order of the images, nor on the batch size: bit for bit when the
    slots train on equally many pixels, else up to float rounding (see howlow.engine)."""
    if p.model != "mlp":
        for key, image, label, seed in items:
            run = run_oracle(image, label, n_classes, p, seed)
            if on_done is not None:
                on_done(key, run)
        return

    def jobs():
        for key, image, label, seed in items:
            state = OracleState(label, n_classes, p, seed, image)  # raises DataError for an all-void label
            yield Job(key, pixel_features(image, p), seed, state)

    def finished(job: Job, state_dict: dict, seconds: float) -> None:
        run = job.state.run
        run.model = oracle_network(p, n_classes, 0)
        run.model.load_state_dict(state_dict)
        run.seconds = seconds
        if on_done is not None:
            on_done(job.key, run)

    run_batched(jobs(), n_features(p), n_classes, p.width, p.depth, p.lr, p.steps_per_round, batch_size,
                p.warm_start, finished, device, select_workers, p.grid, p.grid_dim, p.ensemble)


def run_oracle(image: np.ndarray, label: np.ndarray, n_classes: int, p: OracleParams, seed: int) -> OracleRun:
    """The Oracle loop on one image (see module docstring). Deterministic for a given seed on CPU."""
    t0 = time.perf_counter()
    if p.model == "mlp":  # the batched engine with one slot: the same code as a batch
        out: list[OracleRun] = []
        run_oracle_many([("image", image, label, seed)], n_classes, p, 1, lambda _, run: out.append(run))
        out[0].seconds = time.perf_counter() - t0
        return out[0]
    state = OracleState(label, n_classes, p, seed, image)
    x = image_features(image, p)[None]
    target = torch.from_numpy(label.astype(np.int64)).ravel()
    net = optim = None
    while True:
        if net is None or not p.warm_start:
            net = oracle_network(p, n_classes, seed)
            optim = torch.optim.Adam(net.parameters(), lr=p.lr, fused=True)  # fused: less per-step overhead
        flat, _, weight = state.train_pixels()
        idx, weight = torch.from_numpy(flat), torch.from_numpy(weight)
        net.train()
        for _ in range(p.steps_per_round):
            # the loss sees the revealed pixels only
            loss = (F.cross_entropy(net(x)[0].flatten(1)[:, idx].T, target[idx], reduction="none") * weight).sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
        net.eval()
        with torch.no_grad():
            logits = net(x)[0].flatten(1).T
        if state.observe(logits, float(loss.detach())):
            break
    state.run.model = net
    state.run.seconds = time.perf_counter() - t0
    return state.run


# --------------------------------------------------------------------------- stage plumbing
@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """Hash of the code an Oracle result depends on, so a code change never reuses old results."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("oracle.py", "engine.py", "geodesic.py", "select.py", "models.py", "metrics.py", "data.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(params: Params, image_id: str) -> str:
    """What an image's result depends on: data import and oracle params (not train/eval params), code."""
    blob = json.dumps({"data": params.data.model_dump(mode="json"), "code": _code_version(),
                       "oracle": params.oracle.model_dump(mode="json"), "id": image_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_path(image_id: str, out_dir: Path = ORACLE) -> Path:
    return Path(out_dir) / f"{image_id}.json"


def load_result(image_id: str, out_dir: Path = ORACLE) -> dict:
    return read_json(result_path(image_id, out_dir))


def _reusable(params: Params, image_id: str, out_dir: Path) -> dict | None:
    """The stored summary when this image's result is complete and has the same fingerprint."""
    done = result_path(image_id, out_dir)
    if done.is_file() and (out_dir / f"{image_id}.pt").is_file():
        previous = read_json(done)
        if previous.get("fingerprint") == fingerprint(params, image_id):
            return previous["summary"]
    return None


def _save_result(params: Params, image_id: str, label: np.ndarray, run: OracleRun, out_dir: Path) -> dict:
    """Write one image's result (weights first, json last: the json marks it done); its summary row."""
    last = run.curve[-1]
    summary = {
        "id": image_id, "height": label.shape[0], "width": label.shape[1],
        "pixels": label.size, "revealed": len(run.revealed),
        "revealed_pct": 100.0 * len(run.revealed) / label.size,
        "rounds": len(run.curve), "accuracy": last["accuracy"], "miou": last["miou"],
        "reached": run.reached, "seconds": round(run.seconds, 3),
    }
    save_torch(out_dir / f"{image_id}.pt", run.model.state_dict())
    write_json(result_path(image_id, out_dir), {"id": image_id, "fingerprint": fingerprint(params, image_id),
                                               "summary": summary, "curve": run.curve, "revealed": run.revealed})
    return summary


def _train_row(prepared: Prepared, image_id: str) -> dict:
    row = next((r for r in prepared.split("train") if r["id"] == image_id), None)
    if row is None:
        raise KeyError(f"{prepared.root / 'manifest.csv'}: no training image with id {image_id!r}")
    return row


def oracle_images(params: Params, image_ids: list[str], prepared: Prepared | Path = PREPARED,
                  out_dir: Path = ORACLE, progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Run (or reuse) the Oracle for these training images, `runtime.oracle_batch` at a time;
    their summary rows in the order given.

    Outputs are written atomically as each image finishes, the json last: a killed run leaves either
    no result for an image or a complete one, and a rerun with the same fingerprint skips it."""
    out_dir = Path(out_dir)
    if not isinstance(prepared, Prepared):
        prepared = load_prepared(prepared)
    summaries = {i: s for i in image_ids if (s := _reusable(params, i, out_dir)) is not None}
    for s in summaries.values():
        if progress:
            progress(s)
    todo = [_train_row(prepared, i) for i in image_ids if i not in summaries]
    labels: dict[str, np.ndarray] = {}

    def items():
        for row in todo:
            labels[row["id"]] = label = prepared.label(row)
            if not (label != VOID).any():
                raise DataError(f"{prepared.root / row['label']}: every pixel is void: there is nothing to reveal")
            yield row["id"], prepared.image(row), label, image_seed(params.oracle.seed, row["id"])

    def done(image_id: str, run: OracleRun) -> None:
        summaries[image_id] = _save_result(params, image_id, labels.pop(image_id), run, out_dir)
        if progress:
            progress(summaries[image_id])

    run_oracle_many(items(), prepared.n_classes, params.oracle, params.runtime.oracle_batch, done,
                    params.runtime.device, params.runtime.select_workers)
    return [summaries[i] for i in image_ids]


def oracle_image(params: Params, image_id: str, prepared: Prepared | Path = PREPARED,
                 out_dir: Path = ORACLE) -> dict:
    """Run (or reuse) the Oracle for one training image (the Prefect flow maps this); its summary row."""
    return oracle_images(params, [image_id], prepared, out_dir)[0]


def remove_stale_files(ids: set[str], out_dir: Path = ORACLE, eval_dir: Path = EVAL) -> list[Path]:
    """Delete what this run's results must not be mixed with: temporary files (`.<name>.<random>.tmp`)
    a killed run left behind, and results of images that are no longer in the run.

    Temporary files are never read as results (a result is only ever a renamed, complete file), but
    DVC would cache them (and stale images) as part of the persisted `data/oracle` output. Called once
    every image is done, so no write of this run is in flight."""
    out_dir = Path(out_dir)
    stale = sorted(out_dir.glob(".*.tmp")) + sorted(Path(eval_dir, "plots").glob(".oracle_curves.csv.*.tmp"))
    stale += sorted(p for p in out_dir.glob("*.pt") if p.stem not in ids)
    stale += sorted(p for p in out_dir.glob("*.json") if p.stem not in ids and p.name != "totals.json")
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def finish_oracle(summaries: list[dict], out_dir: Path = ORACLE, eval_dir: Path = EVAL) -> dict:
    """summary.csv, the plot data of the budget curves, and the aggregate figures (totals.json)."""
    out_dir, eval_dir = Path(out_dir), Path(eval_dir)
    remove_stale_files({s['id'] for s in summaries}, out_dir, eval_dir)
    curves = []
    for s in summaries:
        for point in load_result(s["id"], out_dir)["curve"]:
            curves.append({"image": s["id"], "revealed": point["revealed"],
                           "revealed_pct": round(100 * point["revealed_fraction"], 5),
                           "accuracy": round(point["accuracy"], 5), "miou": round(point["miou"], 5)})
    write_csv(eval_dir / "plots" / "oracle_curves.csv", curves)
    pct = np.array([s["revealed_pct"] for s in summaries])
    px = np.array([s["revealed"] for s in summaries])
    totals = {
        "images": len(summaries), "mean_revealed_pct": float(pct.mean()),
        "median_revealed_pct": float(np.median(pct)), "mean_revealed_px": float(px.mean()),
        "median_revealed_px": float(np.median(px)),
        "reached_fraction": float(np.mean([s["reached"] for s in summaries])),
        "mean_accuracy": float(np.mean([s["accuracy"] for s in summaries])),
        "mean_seconds": float(np.mean([s["seconds"] for s in summaries])),
    }
    write_json(out_dir / "totals.json", totals)
    write_csv(out_dir / "summary.csv", summaries)  # last: later stages read the image list from it
    return totals


def oracle_image_ids(params: Params, prepared: Prepared) -> list[str]:
    ids = [r["id"] for r in prepared.split("train")]
    return ids[: params.oracle.max_images] if params.oracle.max_images else ids


def oracle(params: Params, out_dir: Path = ORACLE, eval_dir: Path = EVAL) -> dict:
    """Stage entry point: the Oracle over every training image, with progress on stderr."""
    use_runtime(params)
    prepared = load_prepared(PREPARED)
    ids = oracle_image_ids(params, prepared)
    count = iter(range(1, len(ids) + 1))

    def progress(s: dict) -> None:
        print(f"[oracle {next(count)}/{len(ids)}] {s['id']}: {s['revealed']} px ({s['revealed_pct']:.3f} %), "
              f"acc {s['accuracy']:.4f} {'reached' if s['reached'] else 'NOT reached'}, {s['seconds']:.1f} s",
              file=sys.stderr, flush=True)

    return finish_oracle(oracle_images(params, ids, prepared, out_dir, progress), out_dir, eval_dir)
