"""Where do the Oracle's last clicks go? Run the Oracle of a budget config on a few frames up to a
fixed pixel count, then take its prediction apart:

- how many of its errors lie within 1 and 2 px of a true label edge, and the accuracy if every error
  in the 1-px band were fixed (what perfect boundary placement would buy);
- how many connected error regions there are, and how many of the largest hold the pixels that
  separate the prediction from the target;
- whether the image can place the label edges: erase a band of 1 px around every true label edge and
  refill it from the pixels outside, by plain distance or by a watershed on the colour gradient; and
  the same refills applied to the network's own prediction;
- the mean colour step across a true label edge, and one pixel to either side of it.

    python scripts/error_anatomy.py -p params.yaml -p studies/budget_camvid/params.yaml data.max_val=0 \
        --frames 0,25,50,75 --pixels 173

Prints a table and writes reports/oracle_budget/anatomy/error_anatomy.{json,png} (image, errors coloured by
their distance to a label edge, clicks). Used for the session-7 section of reports/oracle_budget/NOTES.md.

With --alignment it runs no Oracle and measures, over a whole split and per axis, whether the label
edges are registered with the image's colour edges (the session-8 check in NOTES):

    python scripts/error_anatomy.py -p params.yaml -p studies/budget_camvid/params.yaml data.max_val=0 --alignment \
        --out reports/oracle_budget/anatomy/edge_alignment
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from howlow.data import load_prepared, prepare
from howlow.layout import project_root
from howlow.oracle import image_seed, run_oracle
from howlow.oracle.geodesic import edge_cost, nearest_click
from howlow.params import load_params
from howlow.stages.oracle import use_runtime
from howlow.studies.common import machine

VOID = 255


def edge_band(label: np.ndarray, r: int) -> np.ndarray:
    """Pixels within r px (Chebyshev) of a label edge; void counts as a class of its own."""
    return ndimage.maximum_filter(label, 2 * r + 1) != ndimage.minimum_filter(label, 2 * r + 1)


def refill(label_map: np.ndarray, band: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    """The band's pixels refilled from the pixels outside it: nearest in plain distance, or a watershed
    of the vote's edge cost (howlow.oracle.geodesic.edge_cost: flooding from the outside, so new edges fall
    on colour-gradient ridges)."""
    from skimage.segmentation import watershed

    known = ~band
    flat = nearest_click(np.ones(label_map.shape), np.argwhere(known), label_map[known].astype(np.int64))
    markers = np.where(known, label_map.astype(np.int64) + 1, 0)
    ws = watershed(edge_cost(image, 1.0), markers=markers) - 1
    return {"distance": flat, "watershed": ws}


def edge_pairs(label: np.ndarray, axis: int) -> np.ndarray:
    """Neighbour pairs along `axis` whose two (non-void) labels differ; element i is the pair (i, i+1)."""
    a = label[:, 1:] if axis == 1 else label[1:]
    b = label[:, :-1] if axis == 1 else label[:-1]
    return (a != b) & (a != VOID) & (b != VOID)


def edge_step_profile(
    image: np.ndarray, label: np.ndarray, shifts=(-2, -1, 0, 1, 2), axis: int = 1
) -> dict[int | str, float]:
    """Mean |RGB step| (sum over channels, 0-765) between neighbours along `axis` (1: horizontal
    neighbours, 0: vertical) at true label edges, shifted by s px along that axis; s = 0 is the edge
    itself, s > 0 lies right of it (axis 1) or below it (axis 0). "all" is the mean over every pair."""
    step = np.abs(np.diff(image.astype(np.float32), axis=axis)).sum(2)
    cross = edge_pairs(label, axis)
    n = cross.shape[axis]
    out: dict[int | str, float] = {}
    for s in shifts:
        m = np.zeros_like(cross)
        src = [slice(None)] * 2
        dst = [slice(None)] * 2
        src[axis] = slice(0, n - s) if s >= 0 else slice(-s, n)
        dst[axis] = slice(s, n) if s >= 0 else slice(0, n + s)
        m[tuple(dst)] = cross[tuple(src)]
        out[s] = float(step[m].mean()) if m.any() else float("nan")  # no label edge
    out["all"] = float(step.mean())
    return out


def step_offset(profile: dict) -> float:
    """Where the colour step sits relative to the label edge, in px: the centroid of the profile's
    excess over the image's mean step. 0: the image's edges are centred on the label edges; +0.3: a
    third of a pixel right of (below) them. A centroid, not a parabola, so a peak at the window's end
    still reads right."""
    s = np.array([k for k in profile if k != "all"], np.float64)
    excess = np.clip(np.array([profile[int(k)] for k in s]) - profile["all"], 0, None)
    return float((s * excess).sum() / excess.sum()) if excess.sum() > 0 else 0.0


def alignment(frames: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Per axis, the colour-step profile across true label edges and its offset, pooled over the
    frames (each frame weighted by its edge count) and per frame (mean, std): is the labelling
    registered with the image, or do the annotators' edges sit off the colour edges one way?"""
    out = {}
    for axis, name in ((1, "columns"), (0, "rows")):
        edged = [(img, lab) for img, lab in frames if edge_pairs(lab, axis).any()]  # others have no profile
        if not edged:
            raise ValueError(f"no label edge between {name} in any of the {len(frames)} frames")
        profiles = [edge_step_profile(img, lab, (-2, -1, 0, 1, 2), axis) for img, lab in edged]
        weights = np.array([edge_pairs(lab, axis).sum() for _, lab in edged], float)
        pooled = {k: float(np.average([p[k] for p in profiles], weights=weights)) for k in profiles[0]}
        per = np.array([step_offset(p) for p in profiles])
        out[name] = {
            "profile": pooled,
            "offset": step_offset(pooled),
            "offset_per_frame_mean": float(per.mean()),
            "offset_per_frame_std": float(per.std()),
        }
    return out


def anatomy(image: np.ndarray, label: np.ndarray, pred: np.ndarray, target: float) -> dict:
    valid = label != VOID
    n_valid = int(valid.sum())

    def acc(p):
        return float(((p == label) & valid).sum() / n_valid)

    err = (pred != label) & valid
    band1, band2 = edge_band(label, 1), edge_band(label, 2)
    regions, _ = ndimage.label(err)
    sizes = np.sort(np.bincount(regions.ravel())[1:])[::-1]
    to_fix = err.sum() - (1 - target) * n_valid
    n_regions_needed = int(np.searchsorted(np.cumsum(sizes), to_fix) + 1) if to_fix > 0 else 0
    gt = np.where(valid, label, 0)  # void filled with a class: only valid pixels are scored
    truth_refill = refill(gt, edge_band(gt, 1), image)
    pred_refill = refill(pred, edge_band(pred, 1), image)
    return {
        "accuracy": acc(pred),
        "errors": int(err.sum()),
        "errors_within_1px": float((err & band1).sum() / max(err.sum(), 1)),
        "errors_within_2px": float((err & band2).sum() / max(err.sum(), 1)),
        "band_1px_share": float((band1 & valid).sum() / n_valid),
        "accuracy_if_1px_band_fixed": acc(np.where(band1, label, pred)),
        "error_regions": len(sizes),
        "largest_regions_to_target": n_regions_needed,
        "truth_refill_distance": acc(truth_refill["distance"]),
        "truth_refill_watershed": acc(truth_refill["watershed"]),
        "prediction_refill_distance": acc(pred_refill["distance"]),
        "prediction_refill_watershed": acc(pred_refill["watershed"]),
        "edge_step": edge_step_profile(image, label),
    }


def run_alignment(a: argparse.Namespace, prepared, rows: list[dict]) -> int:
    """--alignment: no Oracle; the registration of label edges and colour edges over the whole split
    (or --frames if given)."""
    idx = range(len(rows)) if a.frames == "all" else [int(s) for s in a.frames.split(",")]
    frames = [(prepared.image(rows[i]), prepared.label(rows[i])) for i in idx]
    r = alignment(frames)
    print("axis | step at the edge shifted by -2 .. 2 px (mean over all pairs) | offset pooled | per frame")
    for name, v in r.items():
        prof = v["profile"]
        print(
            f"{name} | " + " ".join(f"{prof[k]:.1f}" for k in (-2, -1, 0, 1, 2)) + f" ({prof['all']:.1f}) | "
            f"{v['offset']:+.3f} | {v['offset_per_frame_mean']:+.3f} +/- {v['offset_per_frame_std']:.3f}"
        )
    out = Path(a.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"params": a.params, "overrides": a.overrides, "frames": len(frames), "machine": machine(), "alignment": r},
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}", flush=True)
    return 0


def figure(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.9 * len(panels)), squeeze=False)
    for row, (name, image, label, pred, clicks) in zip(axes, panels):
        valid = label != VOID
        err = (pred != label) & valid
        b1, b2 = edge_band(label, 1), edge_band(label, 2)
        over = image.astype(np.float32) / 255 * 0.45
        over[err & b1] = (1.0, 0.15, 0.15)
        over[err & b2 & ~b1] = (1.0, 0.65, 0.0)
        over[err & ~b2] = (0.2, 0.55, 1.0)
        row[0].imshow(image)
        row[0].scatter(clicks[:, 1], clicks[:, 0], s=6, c="yellow", edgecolors="black", linewidths=0.3)
        row[0].set_title(f"{name}: {len(clicks)} clicks", fontsize=9)
        row[1].imshow(over)
        row[1].set_title(
            f"errors: red within 1 px of a label edge, orange 2 px, blue farther "
            f"({100 * err.sum() / valid.sum():.1f} % wrong)",
            fontsize=8,
        )
        for a in row:
            a.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    shrink_png(path)


def shrink_png(path: Path) -> None:
    """A 256-colour palette: photos with flat overlays lose nothing visible, and the file a third."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "-p",
        "--params",
        action="append",
        required=True,
        help="params files, overlaid in order (params.yaml -p studies/budget_camvid/params.yaml)",
    )
    ap.add_argument(
        "--frames",
        default=None,
        help="indices into the config's split, or 'all' (default 0,25,50,75; with --alignment all)",
    )
    ap.add_argument(
        "--alignment",
        action="store_true",
        help="no Oracle: measure how label edges sit on the image's colour edges, per axis",
    )
    ap.add_argument("--pixels", type=int, default=173, help="stop the Oracle at this many revealed pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        default="reports/oracle_budget/anatomy/error_anatomy",
        help="path stem of the .json and .png (kept out of the budget JSONs' folder)",
    )
    ap.add_argument("overrides", nargs="*", help="key=value overrides, as for howlow")
    a = ap.parse_args(argv)
    params = load_params(a.params, a.overrides)
    work = tempfile.TemporaryDirectory(prefix="error_anatomy.")
    prepared = load_prepared(prepare(params, Path(work.name) / "prepared", project_root()))
    rows = prepared.split(params.budget.split)
    if a.alignment:
        a.frames = a.frames or "all"
        return run_alignment(a, prepared, rows)
    a.frames = a.frames or "0,25,50,75"
    use_runtime(params)
    results, panels = {}, []
    print(
        "frame | px | acc | err <=1px | <=2px | acc, 1-px band fixed | regions | largest to target | "
        "truth refill dist / ws | pred refill dist / ws",
        flush=True,
    )
    for i in (int(s) for s in a.frames.split(",")):
        row = rows[i]
        image, label = prepared.image(row), prepared.label(row)
        # the Oracle stops before a round would pass the cap, so it ends at or just under a.pixels
        p = params.oracle.model_copy(
            update={"seed": a.seed, "max_fraction": a.pixels / label.size, "target_accuracy": 1.0}
        )
        run = run_oracle(image, label, prepared.n_classes, p, image_seed(a.seed, row["id"]))
        r = anatomy(image, label, run.prediction, params.oracle.target_accuracy)
        r["revealed"] = len(run.revealed)
        results[row["id"]] = r
        clicks = np.asarray(run.revealed, np.int64).reshape(-1, 4)
        panels.append((row["id"], image, label, run.prediction, clicks))
        print(
            f"{row['id']} | {r['revealed']} | {r['accuracy']:.4f} | {r['errors_within_1px']:.2f} | "
            f"{r['errors_within_2px']:.2f} | {r['accuracy_if_1px_band_fixed']:.4f} | {r['error_regions']} | "
            f"{r['largest_regions_to_target']} | {r['truth_refill_distance']:.4f} / "
            f"{r['truth_refill_watershed']:.4f} | {r['prediction_refill_distance']:.4f} / "
            f"{r['prediction_refill_watershed']:.4f}",
            flush=True,
        )
        steps = r["edge_step"]
        print(
            "    colour step at the label edge shifted by s px: "
            + ", ".join(f"{k}: {v:.0f}" for k, v in steps.items()),
            flush=True,
        )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "params": a.params,
                "overrides": a.overrides,
                "pixels": a.pixels,
                "seed": a.seed,
                "machine": machine(),
                "frames": results,
            },
            indent=1,
        )
        + "\n"
    )
    figure(panels[:3], out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
