"""`howlow study-report` (stage report): a data-set study's rows aggregated into results/.

report.json   every row, the mean ± std over seeds per (source, target), % of full, the paired
              per-seed differences behind the claim, the frames, machine and date
report.md     the same as tables
curve.csv     val mIoU against annotated % per (source, target), for `dvc plots`
report.png    the same as a figure
metrics.json  the headline numbers, for `dvc metrics` / `dvc exp show`
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np

from ...data import load_prepared
from ...io import DataError, atomic_write_bytes, read_json, write_csv, write_json
from ...layout import Layout
from ...params import Params
from ...plots import dataset_level_figure
from ..common import machine, paired_difference
from . import CONVERGENCE, budget_sources, results_dir, row_name, rows_dir, study_name, training_images

ORDER = ["full", "pseudo", "confident", "sparse", "random"]
# the claim: pseudo-labels against each alternative at the same budget (full: at any budget)
CLAIM = ("random", "sparse", "full")


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
        out.append(
            {
                "source": source,
                "target": target,
                "seeds": len(rs),
                "miou_mean": float(miou.mean()),
                "miou_std": float(miou.std(ddof=1)) if len(rs) > 1 else 0.0,
                "pct_of_full_mean": float(pct.mean()) if len(pct) else None,
                "pct_of_full_std": float(pct.std(ddof=1)) if len(pct) > 1 else 0.0,
                "pixel_accuracy_mean": float(np.mean([r["pixel_accuracy"] for r in rs])),
                "annotated_pct": float(np.mean([r["annotated_pct"] for r in rs])),
                "annotated_px_per_image": float(np.mean([r["annotated_px_per_image"] for r in rs])),
                "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs])),
                "oracle_reached_fraction": rs[0]["oracle_reached_fraction"],
                "per_class_iou_mean": {
                    c: float(
                        np.mean([r["per_class_iou"][c] for r in rs if r["per_class_iou"][c] is not None] or [np.nan])
                    )
                    for c in rs[0]["per_class_iou"]
                },
            }
        )
    order = {s: i for i, s in enumerate(ORDER)}
    return sorted(out, key=lambda a: (order.get(a["source"], 9), a["target"] or 0))


def paired(rows: list[dict], targets: list[float]) -> list[dict]:
    """Per target: val mIoU of pseudo minus random, sparse and full, paired by seed (mean and 95 %
    t interval over seeds); only for the sources the study trained."""
    by = {(r["source"], r["target"], r["seed"]): r["miou"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for target in targets:
        if ("pseudo", target, seeds[0]) not in by:
            continue
        for other in CLAIM:
            key = None if other == "full" else target
            if (other, key, seeds[0]) not in by:
                continue
            d = paired_difference([by["pseudo", target, s] for s in seeds], [by[other, key, s] for s in seeds])
            out.append({"target": target, "comparison": f"pseudo - {other}", **d})
    return out


def load_rows(params: Params, root: Path) -> tuple[list[dict], dict | None]:
    """The rows of the current params (rows/ may also hold rows of seeds or targets since removed)
    and the convergence row (None when skipped)."""
    s = params.study
    names = [row_name("full", None, seed) for seed in s.seeds]
    names += [row_name(src, t, seed) for src in budget_sources(params) for t in s.targets for seed in s.seeds]
    rows = []
    for name in [*names, CONVERGENCE]:
        path = rows_dir(root) / name / "row.json"
        if not path.is_file():
            raise DataError(f"{path}: missing; run the study's stages first (dvc repro)")
        rows.append(read_json(path))
    conv = rows.pop()
    return rows, None if conv.get("skipped") else conv


def oracle_text(params: Params) -> str:
    o = params.oracle
    return (
        f"{o.strategy}, per-pixel MLP width {o.width}, {o.fourier} position octaves"
        + (f", position lattices {o.grid}" if o.grid else "")
        + (f", ensemble of {o.ensemble}" if o.ensemble > 1 else "")
        + (f", geodesic click vote {o.geodesic:g}" if o.geodesic else "")
        + f", lr {o.lr:g}, "
        f"cap {o.max_fraction:.0%} of the image"
    )


def _interval(d: dict) -> str:
    return "-" if d["ci95"] is None else f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def markdown(rep: dict) -> str:
    s, name = rep["setup"], rep["study"]
    lines = [
        f"# Data-set level study `{name}`",
        "",
        f"Made by `dvc repro studies/{name}/dvc.yaml` (howlow.studies.dataset). Every number is a mean ± std "
        "over training seeds; % of full compares each seed with the full-label network of the same seed. "
        "Annotated % counts the pixels a person labels: all valid pixels for `full`, the Oracle's revealed "
        "pixels for `pseudo`, `confident` and `sparse`, as many at random for `random`.",
        "",
        f"- Data: {rep['dataset']} at scale {s['scale']}; {len(rep['frames']['train'])} training images "
        f"({s['train_size']}): {', '.join(rep['frames']['train'])}; {len(rep['frames']['val'])} val images: "
        f"{', '.join(rep['frames']['val'])}.",
        f"- Network: {s['model']} width {s['width']} depth {s['depth']}, from scratch, {s['epochs']} epochs of "
        f"batches of {s['batch_size']} crops {s['crop']}, Adam + one-cycle lr {s['lr']}, augmentation "
        f"{'RandomResizedCrop + flip' if s['augment'] else 'crop only'}; `confident` keeps pseudo-labels "
        f"at least {s['confidence']} sure.",
        f"- Oracle: {s['oracle']}, annotating at scale {s['oracle_scale']}; budgets are the Oracle targets "
        f"{s['targets']}; seeds {s['seeds']}.",
        f"- Machine: {'; '.join(rep['machines'])} (rows trained there; report {rep['date']}).",
    ]
    c = rep["convergence"]
    if c:
        lines.append(
            f"- Convergence check: `full`, seed {c['seed']}: val mIoU {c['miou']:.3f} after {c['epochs']} "
            f"epochs, {c['miou_x2']:.3f} after {c['epochs_x2']} ({c['miou_x2'] - c['miou']:+.3f})."
        )
    lines += [
        "",
        "| source | Oracle target | annotated % | px / image | val mIoU | % of full | pixel acc | "
        "Oracle reached | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in rep["aggregate"]:
        pct = "-" if a["pct_of_full_mean"] is None else f"{a['pct_of_full_mean']:.1f} ± {a['pct_of_full_std']:.1f}"
        reached = "-" if a["oracle_reached_fraction"] is None else f"{a['oracle_reached_fraction']:.0%}"
        lines.append(
            f"| {a['source']} | {'-' if a['target'] is None else a['target']} | {a['annotated_pct']:.3g} | "
            f"{a['annotated_px_per_image']:.0f} | {a['miou_mean']:.3f} ± {a['miou_std']:.3f} | {pct} | "
            f"{a['pixel_accuracy_mean']:.3f} | {reached} | {a['train_seconds_mean']:.0f} |"
        )
    if rep["paired"]:
        lines += [
            "",
            "The claim, paired by seed (val mIoU difference, mean and 95 % t interval over "
            f"{rep['paired'][0]['n']} seeds; an interval without 0 is a difference these seeds resolve):",
            "",
            "| Oracle target | comparison | mean | 95 % interval |",
            "|---|---|---|---|",
        ]
        lines += [f"| {d['target']} | {d['comparison']} | {d['mean']:+.3f} | {_interval(d)} |" for d in rep["paired"]]
    classes = list(rep["aggregate"][0]["per_class_iou_mean"])
    lines += [
        "",
        "Per-class IoU (mean over seeds):",
        "",
        "| source | target | " + " | ".join(classes) + " |",
        "|---|---|" + "---|" * len(classes),
    ]
    for a in rep["aggregate"]:
        lines.append(
            f"| {a['source']} | {'-' if a['target'] is None else a['target']} | "
            + " | ".join(f"{a['per_class_iou_mean'][c]:.3f}" for c in classes)
            + " |"
        )
    lines += ["", "![val mIoU against annotated %](report.png)", ""]
    return "\n".join(lines)


def run(params: Params, layout: Layout) -> dict:
    root = layout.root
    rows, conv = load_rows(params, root)
    s, t = params.study, params.train
    prepared = load_prepared(training_images(root))
    train_ids = rows[0]["train_ids"]  # full, first seed: the images every row trained on
    first = next(r for r in prepared.split("train") if r["id"] == train_ids[0])
    agg = aggregate(rows)
    convergence = None
    if conv:
        base = next(r for r in rows if r["source"] == "full" and r["seed"] == conv["seed"])
        convergence = {
            "seed": conv["seed"],
            "epochs": base["epochs"],
            "miou": base["miou"],
            "epochs_x2": conv["epochs"],
            "miou_x2": conv["miou"],
            "pixel_accuracy": base["pixel_accuracy"],
            "pixel_accuracy_x2": conv["pixel_accuracy"],
        }
    rep: dict = {
        "study": study_name(root),
        "dataset": params.dataset_name,
        "date": str(date.today()),
        "report_machine": machine(),
        "machines": sorted({r["machine"] for r in rows + ([conv] if conv else [])}),
        "frames": {"train": train_ids, "val": [r["id"] for r in prepared.split("val")]},
        "setup": {
            "scale": params.data.scale,
            "train_size": f"{first['width']}x{first['height']} (first image)",
            "model": t.model,
            "width": t.width,
            "depth": t.depth,
            "epochs": t.epochs,
            "crop": t.crop,
            "batch_size": t.batch_size,
            "lr": t.lr,
            "augment": t.augment,
            "confidence": t.confidence,
            "targets": s.targets,
            "seeds": s.seeds,
            "label_sources": ["full", *s.label_sources],
            "oracle": oracle_text(params),
            "oracle_scale": s.oracle_scale or params.data.scale,
        },
        "convergence": convergence,
        "aggregate": agg,
        "paired": paired(rows, s.targets),
        "rows": rows,
        "convergence_row": conv,
    }
    out = results_dir(root)
    write_json(out / "report.json", rep)
    atomic_write_bytes(out / "report.md", markdown(rep).encode())
    write_csv(
        out / "curve.csv",
        [
            {
                "source": a["source"],
                "target": a["target"] or 1.0,
                "annotated_pct": round(a["annotated_pct"], 5),
                "miou": round(a["miou_mean"], 5),
                "miou_std": round(a["miou_std"], 5),
            }
            for a in agg
        ],
    )
    dataset_level_figure(study_name(root), agg, out / "report.png")
    metrics = {
        f"{a['source']}@{a['target'] or 'all'}": {
            "miou": round(a["miou_mean"], 5),
            "annotated_pct": round(a["annotated_pct"], 5),
            **({"pct_of_full": round(a["pct_of_full_mean"], 3)} if a["pct_of_full_mean"] is not None else {}),
        }
        for a in agg
    }
    metrics["paired"] = {
        f"{d['comparison'].replace(' ', '')}@{d['target']}": round(d["mean"], 5) for d in rep["paired"]
    }
    write_json(out / "metrics.json", metrics)
    return {"rows": len(rows), "report": str(out / "report.md")}
