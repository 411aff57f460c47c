"""Stage `oracle`: per image, how few revealed pixels does a from-scratch network need?

For each training image a small U-Net is trained from scratch on that image alone, using only the
pixels the Oracle has revealed. Each round: train, predict, compare with the full label map (void
excluded); stop at `target_accuracy` or `max_fraction`, else reveal `pixels_per_round` more pixels
chosen by the selection rule. The budget is the revealed count over all H*W pixels of the image.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from .data import Prepared, load_prepared
from .io import EVAL, ORACLE, PREPARED, VOID, DataError, read_json, save_torch, write_csv, write_json
from .metrics import confusion, mean_iou, pixel_accuracy
from .models import PixelMLP, build_model
from .params import OracleParams, Params
from .select import select_pixels


def set_threads(params: Params) -> None:
    torch.set_num_threads(params.runtime.threads or os.cpu_count() or 1)


def image_features(image: np.ndarray, p: OracleParams) -> torch.Tensor:
    """(C, H, W) per-image standardised cues: RGB; per scale, blurred RGB and local contrast (std of
    grey levels in a Gaussian window); and y/x in [-1, 1] when `p.coords`."""
    rgb = image.astype(np.float32) / 255.0
    grey = rgb.mean(2)
    chans = [rgb[..., c] for c in range(3)]
    for s in p.scales:
        chans += [ndimage.gaussian_filter(rgb[..., c], s) for c in range(3)]
        mean = ndimage.gaussian_filter(grey, s)
        chans.append(np.sqrt(np.maximum(ndimage.gaussian_filter(grey * grey, s) - mean * mean, 0)))
    if p.coords:
        h, w = grey.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        chans += [yy / max(h - 1, 1) * 2 - 1, xx / max(w - 1, 1) * 2 - 1]
    x = torch.from_numpy(np.stack(chans).astype(np.float32))
    return (x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), keepdim=True) + 1e-6)


def n_features(p: OracleParams) -> int:
    return 3 + 4 * len(p.scales) + (2 if p.coords else 0)


def image_seed(seed: int, image_id: str) -> int:
    # stable across processes and Python runs (unlike hash())
    return (seed * 1_000_003 + zlib.crc32(image_id.encode())) % 2**31


def oracle_network(p: OracleParams, n_classes: int, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    return build_model(p.model, n_features(p), n_classes, p.width, p.depth, gen)


def revealed_inputs(net: torch.nn.Module, x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor):
    """A function giving the (n, K) logits at the revealed pixels. A per-pixel network is fed the
    revealed pixels' features only, gathered once per round rather than once per step."""
    if isinstance(net, PixelMLP):
        feats = x[0, :, ys, xs].T.contiguous()
        return lambda: net.pixels(feats)
    return lambda: net(x)[0][:, ys, xs].T


@dataclass
class OracleRun:
    """The result of one image's Oracle loop."""
    revealed: list[list[int]] = field(default_factory=list)  # [y, x, class, round] in reveal order
    curve: list[dict] = field(default_factory=list)
    reached: bool = False
    seconds: float = 0.0
    model: torch.nn.Module | None = None
    prediction: np.ndarray | None = None


def run_oracle(image: np.ndarray, label: np.ndarray, n_classes: int, p: OracleParams, seed: int) -> OracleRun:
    """The Oracle loop on one image (see module docstring). Deterministic for a given seed on CPU."""
    t0 = time.perf_counter()
    h, w = label.shape
    n_pixels = h * w
    valid = label != VOID
    if not valid.any():
        raise DataError("every pixel is void: there is nothing to reveal")
    x = image_features(image, p)[None]
    target = torch.from_numpy(label.astype(np.int64))
    rng = np.random.default_rng(seed)
    budget = max(int(p.max_fraction * n_pixels), p.initial_pixels)

    revealed_mask = np.zeros((h, w), bool)
    run = OracleRun()

    def reveal(points: np.ndarray, round_: int) -> None:
        for y, xx in points:
            revealed_mask[y, xx] = True
            run.revealed.append([int(y), int(xx), int(label[y, xx]), round_])

    reveal(select_pixels("random", revealed_mask, valid, revealed_mask, p.initial_pixels, rng), 0)
    net = optim = None
    round_ = 0
    while True:
        if net is None or not p.warm_start:
            net = oracle_network(p, n_classes, seed)
            optim = torch.optim.Adam(net.parameters(), lr=p.lr, fused=True)  # fused: less per-step overhead
        ys, xs = torch.from_numpy(revealed_mask).nonzero(as_tuple=True)
        y_true = target[ys, xs]
        net.train()
        logits_at_revealed = revealed_inputs(net, x, ys, xs)
        for _ in range(p.steps_per_round):
            # the loss sees the revealed pixels only
            loss = F.cross_entropy(logits_at_revealed(), y_true)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
        net.eval()
        with torch.no_grad():
            prob = net(x)[0].softmax(0).numpy()
        pred = prob.argmax(0).astype(np.uint8)
        cm = confusion(pred, label, n_classes)
        acc = pixel_accuracy(cm)
        run.curve.append({"round": round_, "revealed": len(run.revealed),
                          "revealed_fraction": len(run.revealed) / n_pixels,
                          "accuracy": acc, "miou": mean_iou(cm), "loss": float(loss.detach())})
        run.reached = acc >= p.target_accuracy
        if run.reached or len(run.revealed) + p.pixels_per_round > budget:
            break
        round_ += 1
        error = (pred != label) & valid
        new = select_pixels(p.strategy, error, valid, revealed_mask, p.pixels_per_round, rng, prob)
        if len(new) == 0:  # nothing left to reveal: the network cannot fit its own labels
            break
        reveal(new, round_)
    run.model, run.prediction = net, pred
    run.seconds = time.perf_counter() - t0
    return run


# --------------------------------------------------------------------------- stage plumbing
@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """Hash of the code an Oracle result depends on, so a code change never reuses old results."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("oracle.py", "select.py", "models.py", "metrics.py", "data.py"):
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


def oracle_image(params: Params, image_id: str, prepared: Prepared | Path = PREPARED,
                 out_dir: Path = ORACLE) -> dict:
    """Run (or reuse) the Oracle for one training image; returns its summary row.

    Outputs are written atomically, the json last: a killed run leaves either no result for the image
    or a complete one, and a rerun with the same fingerprint skips it."""
    out_dir = Path(out_dir)
    fp = fingerprint(params, image_id)
    done = result_path(image_id, out_dir)
    if done.is_file() and (out_dir / f"{image_id}.pt").is_file():
        previous = read_json(done)
        if previous.get("fingerprint") == fp:
            return previous["summary"]
    if not isinstance(prepared, Prepared):
        prepared = load_prepared(prepared)
    row = next((r for r in prepared.split("train") if r["id"] == image_id), None)
    if row is None:
        raise KeyError(f"{prepared.root / 'manifest.csv'}: no training image with id {image_id!r}")
    image, label = prepared.image(row), prepared.label(row)
    try:
        run = run_oracle(image, label, prepared.n_classes, params.oracle, image_seed(params.oracle.seed, image_id))
    except DataError as exc:
        raise DataError(f"{prepared.root / row['label']}: {exc}") from None
    last = run.curve[-1]
    summary = {
        "id": image_id, "height": label.shape[0], "width": label.shape[1],
        "pixels": label.size, "revealed": len(run.revealed),
        "revealed_pct": 100.0 * len(run.revealed) / label.size,
        "rounds": len(run.curve), "accuracy": last["accuracy"], "miou": last["miou"],
        "reached": run.reached, "seconds": round(run.seconds, 3),
    }
    save_torch(out_dir / f"{image_id}.pt", run.model.state_dict())
    write_json(done, {"id": image_id, "fingerprint": fp, "summary": summary, "curve": run.curve,
                      "revealed": run.revealed})
    return summary


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
    set_threads(params)
    prepared = load_prepared(PREPARED)
    ids = oracle_image_ids(params, prepared)
    summaries = []
    for i, image_id in enumerate(ids, 1):
        s = oracle_image(params, image_id, prepared, out_dir)
        summaries.append(s)
        print(f"[oracle {i}/{len(ids)}] {image_id}: {s['revealed']} px ({s['revealed_pct']:.3f} %), "
              f"acc {s['accuracy']:.4f} {'reached' if s['reached'] else 'NOT reached'}, {s['seconds']:.1f} s",
              file=sys.stderr, flush=True)
    return finish_oracle(summaries, out_dir, eval_dir)
