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

from ...data import Prepared, load_prepared
from ...io import VOID, DataError, atomic_write_bytes, read_json, write_csv, write_json
from ...layout import Layout
from ...params import Params
from ...plots import dataset_level_figure, learning_curve_figure
from ...segmentation.datasets import label_map
from ..common import machine, paired_difference
from . import (
    CONVERGENCE,
    budget_sources,
    results_dir,
    row_name,
    row_path,
    study_name,
    target_name,
    training_images,
)
from .annotations import RANDOM_PSEUDO, annotations_dir, budget_annotations, budget_table, sequence
from .convergence import checked, longer_name

ORDER = ["full", "pseudo", "confident", "random_pseudo", "sparse", "random"]
# the claim: pseudo-labels against each alternative at the same budget (full: at any budget)
CLAIM = ("random", "random_pseudo", "sparse", "full")


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
    """Per target: val mIoU of pseudo minus random, random_pseudo, sparse and full, paired by seed
    (mean and 95 % t interval over the seeds both have); only for the sources the study trained."""
    by = {(r["source"], r["target"], r["seed"]): r["miou"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for target in targets:
        for other in CLAIM:
            key = None if other == "full" else target
            both = [s for s in seeds if ("pseudo", target, s) in by and (other, key, s) in by]
            if not both:
                continue
            d = paired_difference([by["pseudo", target, s] for s in both], [by[other, key, s] for s in both])
            out.append({"target": target, "comparison": f"pseudo - {other}", "seeds": both, **d})
    return out


def load_rows(params: Params, root: Path) -> tuple[list[dict], dict | None, list[str]]:
    """The rows of the current params there are (rows/ may also hold rows of seeds or targets since
    removed), the convergence row (None when skipped or not trained yet) and the names of the rows
    not trained yet: a study under way is reported as far as it has got, and says what is missing."""
    s = params.study
    names = [row_name("full", None, seed) for seed in s.seeds]
    names += [row_name(src, t, seed) for src in budget_sources(params) for t in s.targets for seed in s.seeds]
    rows, missing = [], []
    for name in names:
        path = row_path(root, name)
        if path.is_file():
            rows.append(read_json(path))
        else:
            missing.append(name)
    if not rows or rows[0]["source"] != "full":
        raise DataError(f"{row_path(root, names[0])}: missing; every row is compared with it (dvc repro trains it)")
    conv_path = row_path(root, CONVERGENCE)
    conv = read_json(conv_path) if conv_path.is_file() else None
    if conv is None and s.convergence_check:
        missing.append(CONVERGENCE)
    if checked(params):
        missing += [n for n in map(longer_name, budget_sources(params)) if not row_path(root, n).is_file()]
    return rows, None if conv is None or conv.get("skipped") else conv, missing


def longer_rows(params: Params, root: Path) -> list[dict]:
    """The budget sources' rows at twice the schedule there are (stage convergence_sources)."""
    if not checked(params):
        return []
    paths = [row_path(root, longer_name(src)) for src in budget_sources(params)]
    found = [read_json(p) for p in paths if p.is_file()]
    return [r for r in found if not r.get("skipped")]


def schedule_checks(rows: list[dict], conv: dict | None, longer: list[dict]) -> list[dict]:
    """Each row at twice the schedule beside the same source, target and seed at the usual one: the
    relative change in val mIoU (the study's rule: under 2 % is converged). The two may come from
    different machines (training is deterministic per machine only): both are named."""
    by = {(r["source"], r["target"], r["seed"]): r for r in rows}
    out = []
    for x2 in ([conv] if conv else []) + longer:
        base = by.get((x2["source"], x2["target"], x2["seed"]))
        if base is None:
            continue
        change = 100 * (x2["miou"] / base["miou"] - 1)
        out.append(
            {
                "source": x2["source"],
                "target": x2["target"],
                "seed": x2["seed"],
                "epochs": base["epochs"],
                "miou": base["miou"],
                "epochs_x2": x2["epochs"],
                "miou_x2": x2["miou"],
                "change_pct": change,
                "converged": abs(change) < 2,
                "machine": base["machine"],
                "machine_x2": x2["machine"],
            }
        )
    return out


def augment_text(setup: dict) -> str:
    if not setup["augment"]:
        return "no augmentation (a plain crop)"
    zoom = setup.get("zoom", [0.35, 1.0])  # reports made before train.zoom had this zoom
    return f"random crop zoomed to {zoom[0]:g}-{zoom[1]:g} of the area + flip" if zoom else "random crop + flip"


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


def missing_text(names: list[str]) -> str:
    """'pseudo-0.95 seeds 2, 3; full-x2': row names grouped by source and target."""
    seeds: dict[str, list[str]] = {}
    for name in names:
        head, _, last = name.rpartition("-")
        key, seed = (head, last) if last.isdigit() else (name, "")
        seeds.setdefault(key, []).append(seed)
    return "; ".join(f"{k} seeds {', '.join(v)}" if v[0] else k for k, v in seeds.items())


def markdown(rep: dict) -> str:
    s, name = rep["setup"], rep["study"]
    lines = [
        f"# Data-set level study `{name}`",
        "",
        f"Made by `dvc repro studies/{name}/dvc.yaml` (howlow.studies.dataset). Every number is a mean ± std "
        "over training seeds; % of full compares each seed with the full-label network of the same seed. "
        "Annotated % counts the pixels a person labels: all valid pixels for `full`, the Oracle's revealed "
        "pixels for `pseudo`, `confident` and `sparse`, as many random clicks for `random_pseudo` and as many "
        "random pixels for `random`.",
        "",
        f"- Data: {rep['dataset']} at scale {s['scale']}; {len(rep['frames']['train'])} training images "
        f"({s['train_size']}; {by_sequence(rep['frames']['train'])}); {len(rep['frames']['val'])} val images "
        f"({by_sequence(rep['frames']['val'])}); the ids are in report.json.",
        f"- Network: {s['model']} width {s['width']} depth {s['depth']} ({s.get('norm', 'group')} norm), from "
        f"scratch, {s['epochs']} epochs of batches of {s['batch_size']} crops {s['crop']}, Adam + one-cycle lr "
        f"{s['lr']}, {augment_text(s)}; class weights {s.get('class_weights', 'none')} (from each source's own "
        f"labels); `confident` keeps pseudo-labels at least {s['confidence']} sure.",
        f"- Oracle: {s['oracle']}, annotating at scale {s['oracle_scale']}; budgets are the Oracle targets "
        f"{s['targets']}; seeds {s['seeds']}.",
        f"- Machine: {'; '.join(rep['machines'])} (rows trained there; report {rep['date']}).",
    ]
    if rep.get("missing"):
        lines.append(
            f"- **Under way:** {len(rep['rows'])} rows trained, {len(rep['missing'])} not yet "
            f"({missing_text(rep['missing'])}); every mean below is over the seeds there are."
        )
    c = rep["convergence"]
    if c:
        lines.append(
            f"- Convergence check: `full`, seed {c['seed']}: val mIoU {c['miou']:.3f} after {c['epochs']} "
            f"epochs, {c['miou_x2']:.3f} after {c['epochs_x2']} ({c['miou_x2'] - c['miou']:+.3f}, "
            f"{100 * (c['miou_x2'] / c['miou'] - 1):+.1f} %, "
            f"{'under' if abs(c['miou_x2'] / c['miou'] - 1) < 0.02 else 'over'} the 2 % rule)."
        )
    checks = rep.get("schedule_checks", [])
    for x in (x for x in checks if x["source"] != "full"):  # full's is the line above
        lines.append(
            f"- Convergence check: `{x['source']}` at Oracle target {x['target']}, seed {x['seed']}: val mIoU "
            f"{x['miou']:.3f} after {x['epochs']} epochs, {x['miou_x2']:.3f} after {x['epochs_x2']} "
            f"({x['change_pct']:+.1f} %, {'under' if x['converged'] else 'over'} the 2 % rule)."
        )
    if any(x["machine"] != x["machine_x2"] for x in checks):
        lines.append(
            "- Some of these pairs were trained in different sessions (machine and date of each in "
            "report.json); training is deterministic per machine only, so a change can hold a machine's share."
        )
    if rep["curve_ends"]:
        done = ", ".join(f"`{x['source']}`" for x in checks) or "no source"
        lines.append(
            f"- Twice the schedule was run for {done}. Where each curve ends (val mIoU, mean over seeds, at "
            "the last two evaluations) is below; the one-cycle learning rate falls to 0 at the end, so a flat "
            "end is weaker evidence than twice the schedule."
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
            "The claim, paired by seed (val mIoU difference, mean and 95 % t interval over the seeds "
            "both sources have; an interval without 0 is a difference these seeds resolve):",
            "",
            "| Oracle target | comparison | seeds | mean | 95 % interval |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {d['target']} | {d['comparison']} | {d['n']} | {d['mean']:+.3f} | {_interval(d)} |"
            for d in rep["paired"]
        ]
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
    if rep["curve_ends"]:
        lines += ["", "Where the learning curves end (val mIoU, mean over seeds):", ""]
        lines += ["| source | target | epoch | val mIoU | epoch | val mIoU | change |", "|---|---|---|---|---|---|---|"]
        for e in rep["curve_ends"]:
            lines.append(
                f"| {e['source']} | {'-' if e['target'] is None else e['target']} | {e['epochs'][0]} | "
                f"{e['miou'][0]:.3f} | {e['epochs'][1]} | {e['miou'][1]:.3f} | "
                f"{100 * (e['miou'][1] / e['miou'][0] - 1):+.1f} % |"
            )
    lines += budget_markdown(rep)
    lines += [
        "",
        "![val mIoU against annotated %](report.png)",
        "",
        f"Training time: {rep['time']['train_hours']:.1f} h for {len(rep['rows'])} networks. Learning curve "
        "of the `full` trainings:",
        "",
        "![learning curve](learning_curve.png)",
        "",
    ]
    return "\n".join(lines)


def by_sequence(ids: list[str]) -> str:
    """'0001TP: 62, 0006R0: 101': frames per sequence (file-name prefix)."""
    counts: dict[str, int] = {}
    for i in ids:
        counts[sequence(i)] = counts.get(sequence(i), 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def budget_markdown(rep: dict) -> list[str]:
    """The per-image budget by sequence, held-out sequences apart, and the pseudo-labels' quality."""
    t = rep["time"]
    lines = ["", "## Per-image budget", "", *budget_table(rep["budget"]), ""]
    lines.append(
        f"Native {rep['annotation_size']}; an image's Oracle run took {t['annotate_mean_s']:.0f} s of wall time on "
        f"average ({t['annotate_images']} images, {t['annotate_machine']}), trained together with the rest of its "
        "batch (`runtime.oracle_batch`), so these seconds overlap and are no cost per image: "
        "benchmarks/RESULTS.md times whole passes."
    )
    if rep["pseudo_quality"]:
        lines += [
            "",
            "Pseudo-labels against the ground truth (training frames, native, mean per image): the "
            "Oracle's clicks and as many random clicks, propagated alike.",
            "",
            "| target | pseudo accuracy | pseudo mIoU | random_pseudo accuracy | random_pseudo mIoU |",
            "|---|---|---|---|---|",
        ]
        for target, q in rep["pseudo_quality"].items():
            lines.append(
                f"| {target} | {q['pseudo']['mean_accuracy']:.4f} | {q['pseudo']['mean_miou']:.3f} | "
                f"{q[RANDOM_PSEUDO]['mean_accuracy']:.4f} | {q[RANDOM_PSEUDO]['mean_miou']:.3f} |"
            )
    if rep["sparse_quality"]:
        lines += [
            "",
            "The clicks alone (`sparse`) at the training scale, mean per image: a native click labels the "
            "training pixel it falls in (the last of several wins), so clicks on class edges can give a "
            "training pixel another class than its training-scale ground truth.",
            "",
            "| target | clicks | training pixels labelled | of them, the ground truth's class |",
            "|---|---|---|---|",
        ]
        for target, q in rep["sparse_quality"].items():
            lines.append(
                f"| {target} | {q['clicks_per_image']:.1f} | {q['labelled_px_per_image']:.1f} | "
                f"{100 * q['agreement']:.1f} % |"
            )
    return lines


def sparse_quality(params: Params, layout: Layout, prepared: Prepared, targets: list[float]) -> dict:
    """Per target, what `sparse` trains on: the clicks, the training pixels they label and the share
    of those whose label is the training-scale ground truth (the Oracle's later clicks sit on class
    edges, which a downscale moves)."""
    rows = {r["id"]: r for r in prepared.split("train")}
    truth: dict[str, np.ndarray] = {}  # read once for every target
    out = {}
    for target in targets:
        anns = budget_annotations(layout.root, target)
        clicks = labelled = agree = 0
        for image_id, ann in anns.items():
            sparse = label_map("sparse", params, prepared, rows[image_id], layout, ann)
            if image_id not in truth:
                truth[image_id] = prepared.label(rows[image_id])
            mask = sparse != VOID
            clicks += len(ann.clicks)
            labelled += int(mask.sum())
            agree += int((sparse[mask] == truth[image_id][mask]).sum())
        out[target_name(target)] = {
            "clicks_per_image": clicks / len(anns),
            "labelled_px_per_image": labelled / len(anns),
            "agreement": agree / max(labelled, 1),
        }
    return out


def pseudo_quality(root: Path, targets: list[float]) -> dict:
    """The pseudo-labels' accuracy per target, from stage propagate's results/pseudo_quality.json."""
    path = results_dir(root) / "pseudo_quality.json"
    if not path.is_file():
        return {}
    quality = read_json(path)
    return {t: quality[t] for t in map(target_name, targets) if t in quality}


def _brief(row: dict) -> dict:
    """A row as report.json lists it: the learning curve is in rows/<name>.json and the figure."""
    return {k: v for k, v in row.items() if k not in ("history", "epoch_seconds")}


def curve_ends(rows: list[dict]) -> list[dict]:
    """Per (source, target): the mean over seeds of the last two val evaluations of the learning curve,
    where a training's convergence shows short of twice the schedule."""
    groups: dict[tuple, list[list[tuple[int, float]]]] = {}
    for r in rows:
        evals = [(h["epoch"], h["val_miou"]) for h in r.get("history", []) if h.get("val_miou") is not None]
        if len(evals) >= 2:
            groups.setdefault((r["source"], r["target"]), []).append(evals[-2:])
    out = []
    for (source, target), ends in groups.items():
        if len({tuple(e for e, _ in end) for end in ends}) != 1:  # seeds evaluated at other epochs
            continue
        out.append(
            {
                "source": source,
                "target": target,
                "seeds": len(ends),
                "epochs": [e for e, _ in ends[0]],
                "miou": [float(np.mean([end[i][1] for end in ends])) for i in (0, 1)],
            }
        )
    return sorted(out, key=lambda e: (ORDER.index(e["source"]), e["target"] or 0))


def learning_curves(rows: list[dict]) -> dict[str, list[dict]]:
    """The `full` trainings' histories (val mIoU every train.eval_every epochs, training seconds)."""
    return {
        r["name"]: [{**h, "seconds": s} for h, s in zip(r["history"], r["epoch_seconds"], strict=True)]
        for r in rows
        if r["source"] == "full"
    }


def run(params: Params, layout: Layout) -> dict:
    root = layout.root
    rows, conv, missing = load_rows(params, root)
    longer = longer_rows(params, root)
    s, t = params.study, params.train
    prepared = load_prepared(training_images(root))
    train_ids = rows[0]["train_ids"]  # full, first seed: every training image
    for r in rows:
        if r["train_ids"] != train_ids:
            raise DataError(
                f"{row_path(root, r['name'])}: trained on {len(r['train_ids'])} images, `full` on "
                f"{len(train_ids)}: every source must train on the same images (annotate every training image)"
            )
    budget = read_json(results_dir(root) / "budget.json")
    if budget["annotated"] != len(train_ids):
        raise DataError(
            f"{results_dir(root) / 'budget.json'}: {budget['annotated']} images, trained on {len(train_ids)}"
        )
    timing = read_json(results_dir(root) / "annotate_time.json")
    first_ann = read_json(annotations_dir(root) / f"{train_ids[0]}.json")
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
        "machines": sorted({r["machine"] for r in rows + ([conv] if conv else []) + longer}),
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
            "zoom": t.zoom,
            "norm": t.norm,
            "class_weights": t.class_weights,
            "confidence": t.confidence,
            "targets": s.targets,
            "seeds": s.seeds,
            "label_sources": ["full", *s.label_sources],
            "oracle": oracle_text(params),
            "oracle_scale": s.oracle_scale or params.data.scale,
        },
        "budget": budget,
        "annotation_size": f"{first_ann['width']}x{first_ann['height']}",
        "pseudo_quality": pseudo_quality(root, s.targets),
        "sparse_quality": sparse_quality(params, layout, prepared, s.targets) if "sparse" in s.label_sources else {},
        "time": {
            "annotate_images": timing["images"],
            "annotate_mean_s": timing["mean_s_per_image"],
            "annotate_machine": timing["machine"],
            "train_hours": sum(r["train_seconds"] for r in rows) / 3600,
        },
        "convergence": convergence,
        "schedule_checks": schedule_checks(rows, conv, longer),
        "curve_ends": curve_ends(rows),
        "aggregate": agg,
        "paired": paired(rows, s.targets),
        "rows": [_brief(r) for r in rows],
        "missing": missing,
        "convergence_row": conv and _brief(conv),
        "convergence_source_rows": [_brief(r) for r in longer],
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
    curves = learning_curves([*rows, *([conv] if conv else [])])
    learning_curve_figure(study_name(root), curves, out / "learning_curve.png")
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
