"""`howlow study`: the data-set level comparison over Oracle budgets and training seeds.

For every Oracle target in `study.targets` (each target is a budget: a lower target reveals fewer
pixels) the Oracle and the pseudo-labels are made once; then, for every seed in `study.seeds`, one
data-set network per label source is trained from scratch with the same recipe (`train.*`) and scored
on the whole val split. `full` does not depend on the budget and is trained once per seed.

Work files go to `studies/work/<dataset>/` (git-ignored; a rerun reuses finished rows). Results:
  reports/dataset_level/<dataset>.json       every (source, budget, seed) row, aggregates, machine
  reports/dataset_level/<dataset>.png        val mIoU against annotated %, one curve per label source
  reports/dataset_level/<dataset>_curve.csv  the same as DVC plot data
  reports/dataset_level.md                   the tables of every data set studied so far
  MLflow experiment `<tracking.experiment>-dataset-<dataset>`: one run per row, same param and
  metric names everywhere, with its model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ..data import load_prepared, prepare
from ..io import atomic_write_bytes, read_csv, read_json, write_csv, write_json
from ..layout import Layout
from ..params import Params
from ..plots import dataset_level_figure
from ..segmentation.train import evaluate_source, train_source
from ..stages import oracle, pseudolabel
from ..tracking import log_study_row, tracking_uri
from ..validation import validate

WORK = Path("studies/work")
OUT = Path("reports") / "dataset_level"


def _update(params: Params, **groups: dict) -> Params:
    return params.model_copy(update={g: getattr(params, g).model_copy(update=v) for g, v in groups.items()})


def _row_key(params: Params, source: str, target: float | None, seed: int) -> str:
    blob = json.dumps({"data": params.data.model_dump(mode="json"), "oracle": params.oracle.model_dump(mode="json"),
                       "train": params.train.model_dump(mode="json"), "source": source, "target": target,
                       "seed": seed, "oracle_scale": params.study.oracle_scale}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def machine() -> str:
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()} x{os.cpu_count()} CPUs{gpu}, torch {torch.__version__}, {date.today()}"


def run_row(params: Params, source: str, target: float | None, seed: int, budget_dir: Path, work: Path,
            mlflow_experiment: str, uri: str, name: str | None = None) -> dict:
    """Train and score one (source, budget, seed); reuse the stored row when its inputs are unchanged."""
    name = name or (f"{source}-s{seed}" if target is None else f"{source}-t{target:g}-s{seed}")
    row_path = work / "rows" / f"{name}.json"
    key = _row_key(params, source, target, seed)
    if row_path.is_file() and read_json(row_path).get("key") == key:
        return read_json(row_path)
    p = _update(params, train={"seed": seed})
    models = budget_dir / "models" / name
    with contextlib.chdir(budget_dir):  # the stage functions read data/ relative to the cwd
        prepared = load_prepared(work / "data" / "prepared")  # the training scale; absolute paths
        ids = [r["id"] for r in read_csv(Path("data/oracle/summary.csv"))]
        info = train_source(p, source, prepared, ids, Layout(budget_dir), models)
        scores = evaluate_source(prepared, models / f"{source}.pt")
        oracle_totals = read_json(Path("data/oracle/totals.json"))
    row = {"key": key, "name": name, "dataset": params.dataset_name, "source": source,
           "target": target, "seed": seed, **scores,
           "annotated_pixels": info["annotated_pixels"], "annotated_pct": info["annotated_pct"],
           "annotated_px_per_image": info["annotated_pixels"] / info["images"], "images": info["images"],
           "train_seconds": info["seconds"], "epochs": info["epochs"],
           "oracle_reached_fraction": None if target is None else oracle_totals["reached_fraction"]}
    row["mlflow_run_id"] = log_study_row(params, row, models / f"{source}.pt", prepared, mlflow_experiment, uri)
    write_json(row_path, row)
    return row




def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (source, budget), with % of full (same seed's full run)."""
    full = {r["seed"]: r["miou"] for r in rows if r["source"] == "full"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["target"]), []).append(r)
    out = []
    for (source, target), rs in groups.items():
        miou = np.array([r["miou"] for r in rs])
        pct = np.array([100 * r["miou"] / full[r["seed"]] for r in rs if full.get(r["seed"])])
        out.append({"source": source, "target": target, "seeds": len(rs),
                    "miou_mean": float(miou.mean()), "miou_std": float(miou.std(ddof=1)) if len(rs) > 1 else 0.0,
                    "pct_of_full_mean": float(pct.mean()) if len(pct) else None,
                    "pct_of_full_std": float(pct.std(ddof=1)) if len(pct) > 1 else 0.0,
                    "pixel_accuracy_mean": float(np.mean([r["pixel_accuracy"] for r in rs])),
                    "annotated_pct": float(np.mean([r["annotated_pct"] for r in rs])),
                    "annotated_px_per_image": float(np.mean([r["annotated_px_per_image"] for r in rs])),
                    "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs])),
                    "oracle_reached_fraction": rs[0]["oracle_reached_fraction"],
                    "per_class_iou_mean": {c: float(np.mean([r["per_class_iou"][c] for r in rs
                                                              if r["per_class_iou"][c] is not None] or [np.nan]))
                                           for c in rs[0]["per_class_iou"]}})
    order = {s: i for i, s in enumerate(["full", "pseudo", "confident", "sparse", "random"])}
    return sorted(out, key=lambda a: (order.get(a["source"], 9), a["target"] or 0))




def write_report(out_dir: Path = OUT) -> Path:
    """reports/dataset_level.md from every data set's JSON."""
    lines = ["# Data-set level: pseudo-labels vs full, sparse and random labels", "",
             "Made by `howlow study -p studies/<dataset>.yaml` (see README). Every number is a mean ± std",
             "over training seeds; % of full compares each seed with the full-label network of the same seed.",
             "Annotated % counts the pixels a person labels: all valid pixels for `full`, the Oracle's revealed",
             "pixels for `pseudo`, `confident` and `sparse`, and the same number at random for `random`.", ""]
    for path in sorted(Path(out_dir).glob("*.json")):
        rep = read_json(path)
        s = rep["setup"]
        lines += [f"## {rep['dataset']}", "",
                  f"- Data: scale {s['scale']}, {s['train_images']} training images ({s['train_size']}), "
                  f"val split {s['val_images']} images at the same scale.",
                  f"- Network: {s['model']} width {s['width']}, from scratch, {s['epochs']} epochs of batches of "
                  f"{s['batch_size']} crops {s['crop']}, Adam + one-cycle lr {s['lr']}, augmentation "
                  f"{'RandomResizedCrop (35-100 % of the image) + flip' if s['augment'] else 'crop only'}, "
                  "no class weighting.",
                  f"- Oracle: {s['oracle']}, annotating at scale {s['oracle_scale']} (annotated % is "
                  "of the image at that scale); budgets are the Oracle targets "
                  f"{s['targets']}; seeds {s['seeds']}.",
                  f"- Machine: {rep['machine']}; wall time {rep['wall_minutes']:.0f} min."]
        c = rep.get("convergence")
        if c:
            lines.append(f"- Convergence check: `full`, seed {c['seed']}: val mIoU {c['miou']:.3f} after {c['epochs']} "
                         f"epochs, {c['miou_x2']:.3f} after {c['epochs_x2']} ({c['miou_x2'] - c['miou']:+.3f}); pixel "
                         f"accuracy {c['pixel_accuracy']:.3f} vs {c['pixel_accuracy_x2']:.3f}.")
        lines += ["",
                  "| source | Oracle target | annotated % | px / image | val mIoU | % of full | pixel acc | Oracle reached | train s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for a in rep["aggregate"]:
            pct = "-" if a["pct_of_full_mean"] is None else f"{a['pct_of_full_mean']:.1f} ± {a['pct_of_full_std']:.1f}"
            reached = "-" if a["oracle_reached_fraction"] is None else f"{a['oracle_reached_fraction']:.0%}"
            lines.append(f"| {a['source']} | {'-' if a['target'] is None else a['target']} | {a['annotated_pct']:.3g} | "
                         f"{a['annotated_px_per_image']:.0f} | {a['miou_mean']:.3f} ± {a['miou_std']:.3f} | {pct} | "
                         f"{a['pixel_accuracy_mean']:.3f} | {reached} | {a['train_seconds_mean']:.0f} |")
        classes = list(rep["aggregate"][0]["per_class_iou_mean"])
        lines += ["", "Per-class IoU (mean over seeds):", "",
                  "| source | target | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
        for a in rep["aggregate"]:
            lines.append(f"| {a['source']} | {'-' if a['target'] is None else a['target']} | "
                         + " | ".join(f"{a['per_class_iou_mean'][c]:.3f}" for c in classes) + " |")
        lines += ["", f"![{rep['dataset']}](dataset_level/{rep['dataset']}.png)", ""]
    extra = Path(out_dir) / "NOTES.md"  # what the numbers mean, written by whoever ran the study
    if extra.is_file():
        lines += [extra.read_text()]
    path = Path(out_dir).parent / "dataset_level.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path


def study(params: Params, layout: Layout) -> dict:
    """Entry point of `howlow study` (see module docstring)."""
    t0 = time.perf_counter()
    s = params.study
    if params.data.source != "synthetic":  # the stages run in work folders: make the source absolute
        params = _update(params, data={"source": str(Path(params.data.source).resolve())})
    name = params.report_name(s.tag)
    work = (WORK / name).resolve()
    uri = tracking_uri(params)
    experiment = f"{params.tracking.experiment}-dataset-{name}"
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(work):
        prepare(params, Path("data/prepared"))
        validate(params, Path("data/prepared"), Path("reports/validation"))
    # the Oracle annotates at study.oracle_scale when it differs from the training scale
    oracle_params = params
    annotated = work / "data" / "prepared"
    if s.oracle_scale is not None and s.oracle_scale != params.data.scale:
        oracle_params = _update(params, data={"scale": s.oracle_scale})
        annotated = prepare(oracle_params, work / "data" / f"prepared_x{s.oracle_scale:g}").resolve()
    rows = []
    for i, target in enumerate(s.targets):
        budget_dir = work / f"t{target:g}"
        (budget_dir / "data").mkdir(parents=True, exist_ok=True)
        link = budget_dir / "data" / "prepared"
        link.unlink(missing_ok=True)  # re-pointed every run: study.oracle_scale may have changed
        link.symlink_to(annotated, target_is_directory=True)
        p = _update(params, oracle={"target_accuracy": target})
        with contextlib.chdir(budget_dir):
            po = _update(oracle_params, oracle={"target_accuracy": target})
            oracle.run(po, Layout(budget_dir))
            pseudolabel.run(po, Layout(budget_dir))
        for seed in s.seeds:
            for source in s.label_sources:
                if source == "full" and i > 0:
                    continue  # full labels do not depend on the budget
                print(f"[study {name}] target {target:g}, seed {seed}, source {source}", file=sys.stderr, flush=True)
                rows.append(run_row(p, source, None if source == "full" else target, seed, budget_dir, work,
                                    experiment, uri))
    convergence = None
    if s.convergence_check and "full" in s.label_sources:
        seed, epochs = s.seeds[0], params.train.epochs
        print(f"[study {name}] convergence check: full, seed {seed}, {2 * epochs} epochs", file=sys.stderr, flush=True)
        longer = run_row(_update(params, train={"epochs": 2 * epochs}), "full", None, seed, work / f"t{s.targets[0]:g}",
                         work, experiment, uri, name=f"full-s{seed}-x2epochs")
        base = next(r for r in rows if r["source"] == "full" and r["seed"] == seed)
        convergence = {"seed": seed, "epochs": epochs, "miou": base["miou"], "epochs_x2": 2 * epochs,
                       "miou_x2": longer["miou"], "pixel_accuracy": base["pixel_accuracy"],
                       "pixel_accuracy_x2": longer["pixel_accuracy"]}
    prepared = load_prepared(work / "data" / "prepared")
    train_rows = prepared.split("train")
    agg = aggregate(rows)
    report = {"dataset": name, "machine": machine(), "wall_minutes": (time.perf_counter() - t0) / 60,
              "mlflow_experiment": experiment,
              "setup": {"scale": params.data.scale, "train_images": len(train_rows),
                        "train_size": f"{train_rows[0]['width']}x{train_rows[0]['height']} (first image)",
                        "val_images": len(prepared.split("val")), "model": params.train.model,
                        "width": params.train.width, "epochs": params.train.epochs, "crop": params.train.crop,
                        "batch_size": params.train.batch_size,
                        "lr": params.train.lr, "augment": params.train.augment, "targets": s.targets,
                        "seeds": s.seeds, "confidence": params.train.confidence,
                        "oracle": f"{params.oracle.strategy}, per-pixel {params.oracle.model} width "
                                  f"{params.oracle.width}, {params.oracle.fourier} position octaves"
                                  + (f", position lattices {params.oracle.grid}" if params.oracle.grid else "")
                                  + (f", ensemble of {params.oracle.ensemble}" if params.oracle.ensemble > 1 else "")
                                  + (f", geodesic click vote {params.oracle.geodesic:g}" if params.oracle.geodesic else "")
                                  + f", lr "
                                  f"{params.oracle.lr:g}, cap {params.oracle.max_fraction:.0%} of the image",
                        "oracle_scale": oracle_params.data.scale},
              "convergence": convergence, "aggregate": agg, "rows": rows}
    out = OUT
    write_json(out / f"{name}.json", report)
    write_csv(out / f"{name}_curve.csv", [{"source": a["source"], "target": a["target"] or 1.0,
                                            "annotated_pct": round(a["annotated_pct"], 5),
                                            "miou": round(a["miou_mean"], 5), "miou_std": round(a["miou_std"], 5)}
                                           for a in agg])
    dataset_level_figure(name, agg, out / f"{name}.png")
    md = write_report(out)
    print(f"[study {name}] {len(rows)} runs; report {md}, MLflow experiment {experiment}", file=sys.stderr)
    return {"dataset": name, "rows": len(rows), "report": str(md), "experiment": experiment}
