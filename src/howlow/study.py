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

from .data import load_prepared, prepare
from .evaluate import evaluate_source
from .io import PREPARED, REPORTS, atomic_write_bytes, read_csv, read_json, write_csv, write_json
from .oracle import oracle
from .params import Params
from .pseudolabel import pseudolabel
from .track import PIP_REQUIREMENTS, tracking_uri
from .train import load_model, normalise, train_source
from .validate import validate

WORK = Path("studies/work")
OUT = REPORTS / "dataset_level"


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
        info = train_source(p, source, prepared, ids, models)
        scores = evaluate_source(prepared, models / f"{source}.pt")
        oracle_totals = read_json(Path("data/oracle/totals.json"))
    row = {"key": key, "name": name, "dataset": params.dataset_name, "source": source,
           "target": target, "seed": seed, **scores,
           "annotated_pixels": info["annotated_pixels"], "annotated_pct": info["annotated_pct"],
           "annotated_px_per_image": info["annotated_pixels"] / info["images"], "images": info["images"],
           "train_seconds": info["seconds"], "epochs": info["epochs"],
           "oracle_reached_fraction": None if target is None else oracle_totals["reached_fraction"]}
    row["mlflow_run_id"] = log_row(params, row, models / f"{source}.pt", prepared, mlflow_experiment, uri)
    write_json(row_path, row)
    return row


def log_row(params: Params, row: dict, model_path: Path, prepared, experiment: str, uri: str) -> str:
    """One MLflow run per row: the same param and metric names for every source, budget and seed."""
    import logging

    import mlflow

    logging.getLogger("torch._export").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=row["name"]) as run:
        mlflow.set_tags({"howlow.kind": "dataset-level", "dataset": row["dataset"], "source": row["source"]})
        mlflow.log_params({"dataset": row["dataset"], "source": row["source"],
                           "budget_target": "none" if row["target"] is None else row["target"],
                           "seed": row["seed"], "data.scale": params.data.scale, "train.model": params.train.model,
                           "train.width": params.train.width, "train.epochs": params.train.epochs,
                           "train.crop": str(params.train.crop), "train.confidence": params.train.confidence,
                           "train.batch_size": params.train.batch_size,
                           "train.lr": params.train.lr,
                           "images": row["images"]})
        metrics = {k: float(row[k]) for k in ("miou", "pixel_accuracy", "annotated_pct", "annotated_pixels",
                                               "annotated_px_per_image", "train_seconds")}
        metrics.update({f"iou.{c}": v for c, v in row["per_class_iou"].items() if v is not None})
        mlflow.log_metrics(metrics)
        model, mean, std = load_model(model_path)
        example_image = prepared.image(prepared.split("val")[0])
        example = normalise(torch.from_numpy(example_image).permute(2, 0, 1)[None], mean, std).numpy()
        mlflow.pytorch.log_model(model, name="model", input_example=example, pip_requirements=PIP_REQUIREMENTS)
        return run.info.run_id


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


def curve_figure(dataset: str, agg: list[dict], path: Path) -> None:
    from .evaluate import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for source in dict.fromkeys(a["source"] for a in agg):
        pts = sorted((a for a in agg if a["source"] == source), key=lambda a: a["annotated_pct"])
        x = [a["annotated_pct"] for a in pts]
        if source == "full":
            m, s = pts[0]["miou_mean"], pts[0]["miou_std"]
            ax.axhline(m, color="k", lw=1.2, label=f"full ({x[0]:.0f} % labelled)")
            ax.axhspan(m - s, m + s, color="k", alpha=0.08)
            continue
        ax.errorbar(x, [a["miou_mean"] for a in pts], yerr=[a["miou_std"] for a in pts], marker="o",
                    capsize=3, label=source)
    ax.set_xscale("log")
    ax.set_xlabel("annotated training pixels (% of all, log scale)")
    ax.set_ylabel("val mIoU (mean ± std over seeds)")
    ax.set_title(f"{dataset}: data-set network by label source and budget")
    ax.legend(fontsize=8)
    save_figure(fig, path)


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


def study(params: Params) -> dict:
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
        prepare(params)
        validate(params)
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
            oracle(po, Path("data/oracle"), Path("eval"))
            pseudolabel(po, Path("data/oracle"), Path("data/pseudo"))
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
    curve_figure(name, agg, out / f"{name}.png")
    md = write_report(out)
    print(f"[study {name}] {len(rows)} runs; report {md}, MLflow experiment {experiment}", file=sys.stderr)
    return {"dataset": name, "rows": len(rows), "report": str(md), "experiment": experiment}
