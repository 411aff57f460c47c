"""Stage `evaluate`: val-split metrics per label source, plot data for `dvc plots`, and figures.

Outputs in `eval/`:
  metrics.json                    oracle budget, pseudo-label quality, per-source mIoU / accuracy / IoU
  plots/miou_by_source.csv        val mIoU and annotation % per label source
  plots/oracle_curves.csv         (written by the oracle stage) revealed % vs accuracy per image
  figures/budget_curves.png       accuracy against revealed % for every image
  figures/miou_by_source.png      val mIoU per label source, with its annotation cost
  figures/oracle_<id>.png         image | ground truth | revealed pixels | pseudo-label
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from .data import Prepared, load_prepared
from .io import (EVAL, MODELS, ORACLE, PREPARED, PSEUDO, atomic_write_bytes, read_csv, read_json, read_label,
                 write_csv, write_json)
from .metrics import confusion, iou_per_class, mean_iou, pixel_accuracy
from .oracle import use_runtime
from .params import Params
from .train import load_model, predict


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def palette(classes: list[dict]) -> np.ndarray:
    """(256, 3) colours: classes.json colours where given, grey-ish defaults else, void black."""
    pal = np.zeros((256, 3), np.uint8)
    fallback = pyplot().get_cmap("tab20")
    for c in classes:
        col = c.get("color", "")
        if isinstance(col, str) and col.startswith("#") and len(col) == 7:
            pal[c["id"]] = [int(col[i:i + 2], 16) for i in (1, 3, 5)]
        else:
            pal[c["id"]] = np.array(fallback(c["id"] % 20)[:3]) * 255
    return pal


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def evaluate_source(prepared: Prepared, model_path: Path) -> dict:
    model, mean, std = load_model(model_path)
    cm = np.zeros((prepared.n_classes, prepared.n_classes), np.int64)
    for row in prepared.split("val"):
        cm += confusion(predict(model, prepared.image(row), mean, std), prepared.label(row), prepared.n_classes)
    iou = iou_per_class(cm)
    return {"miou": mean_iou(cm), "pixel_accuracy": pixel_accuracy(cm),
            "per_class_iou": {c["name"]: (None if np.isnan(iou[c["id"]]) else float(iou[c["id"]]))
                              for c in prepared.classes}}


def oracle_figure(prepared: Prepared, row: dict, oracle_dir: Path, pseudo_dir: Path, path: Path) -> None:
    pal = palette(prepared.classes)
    image, truth = prepared.image(row), prepared.label(row)
    result = read_json(Path(oracle_dir) / f"{row['id']}.json")
    revealed = np.array(result["revealed"], np.int64).reshape(-1, 4)
    pseudo = read_label(Path(pseudo_dir) / f"{row['id']}.png")
    s = result["summary"]
    fig, axes = pyplot().subplots(1, 4, figsize=(16, 3.6))
    panels = [(image, "image"), (pal[truth], "ground truth"), (image // 2 + 64, f"revealed: {s['revealed']} px "
              f"({s['revealed_pct']:.3f} %)"), (pal[pseudo], f"pseudo-label: acc {s['accuracy']:.3f}")]
    for ax, (arr, title) in zip(axes, panels):
        ax.imshow(arr)
        ax.set_title(title)
        ax.axis("off")
    # revealed pixels as dots in their class colour, ringed in white so they show on any background
    axes[2].scatter(revealed[:, 1], revealed[:, 0], s=14, c=pal[revealed[:, 2]] / 255.0,
                    edgecolors="white", linewidths=0.6)
    fig.suptitle(row["id"])
    save_figure(fig, path)


def budget_figure(curves: list[dict], target: float, path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for image in dict.fromkeys(r["image"] for r in curves):
        pts = [r for r in curves if r["image"] == image]
        ax.plot([float(p["revealed_pct"]) for p in pts], [float(p["accuracy"]) for p in pts], alpha=0.6, lw=1)
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel("revealed pixels (% of image)")
    ax.set_ylabel("pixel accuracy (void excluded)")
    ax.set_title("Oracle budget curves, one line per image")
    ax.legend(loc="lower right")
    save_figure(fig, path)


def sources_figure(rows: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    names = [r["source"] for r in rows]
    bars = ax.bar(names, [r["miou"] for r in rows], color="tab:blue")
    for bar, r in zip(bars, rows):
        ax.annotate(f"{r['annotated_pct']:.3g} % labelled", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("val mIoU")
    ax.set_ylim(0, 1.05)
    ax.set_title("Data-set network by label source")
    save_figure(fig, path)


def evaluate(params: Params, eval_dir: Path = EVAL, models_dir: Path = MODELS, oracle_dir: Path = ORACLE,
             pseudo_dir: Path = PSEUDO) -> dict:
    """Stage entry point (see module docstring)."""
    use_runtime(params)
    eval_dir = Path(eval_dir)
    prepared = load_prepared(PREPARED)
    totals = read_json(Path(oracle_dir) / "totals.json")
    pseudo = read_json(Path(pseudo_dir) / "metrics.json")
    dataset, rows = {}, []
    for source in params.train.label_sources:
        info = read_json(Path(models_dir) / f"{source}.json")
        m = evaluate_source(prepared, Path(models_dir) / f"{source}.pt")
        m.update(annotated_pixels=info["annotated_pixels"], annotated_pct=info["annotated_pct"],
                 train_seconds=info["seconds"])
        dataset[source] = m
        rows.append({"source": source, "miou": round(m["miou"], 5), "pixel_accuracy": round(m["pixel_accuracy"], 5),
                     "annotated_pct": round(info["annotated_pct"], 5)})
        print(f"[evaluate] {source}: val mIoU {m['miou']:.4f}, accuracy {m['pixel_accuracy']:.4f}, "
              f"{info['annotated_pct']:.3f} % labelled", file=sys.stderr, flush=True)
    if "full" in dataset:
        for m in dataset.values():
            m["miou_pct_of_full"] = 100.0 * m["miou"] / dataset["full"]["miou"] if dataset["full"]["miou"] else None
    metrics = {"oracle": totals,
               "pseudo": {"mean_accuracy": pseudo["mean_accuracy"], "mean_miou": pseudo["mean_miou"]},
               "dataset": dataset}
    write_csv(eval_dir / "plots" / "miou_by_source.csv", rows)
    budget_figure(read_csv(eval_dir / "plots" / "oracle_curves.csv"), params.oracle.target_accuracy,
                  eval_dir / "figures" / "budget_curves.png")
    sources_figure(rows, eval_dir / "figures" / "miou_by_source.png")
    oracle_ids = {r["id"] for r in read_csv(Path(oracle_dir) / "summary.csv")}
    for row in [r for r in prepared.split("train") if r["id"] in oracle_ids][: params.evaluate.n_figures]:
        oracle_figure(prepared, row, oracle_dir, pseudo_dir, eval_dir / "figures" / f"oracle_{row['id']}.png")
    write_json(eval_dir / "metrics.json", metrics)
    return metrics
