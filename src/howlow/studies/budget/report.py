"""`howlow budget-report`: a budget study's aggregate (stage `report`).

Reads runs/<rule>-<seed>.json for every rule in `budget.strategies` and seed in `budget.seeds` (other
files in runs/, left by rules or seeds no longer in the study, are ignored) and training_order.json.
Writes results/:
  report.json     setup (frames, machine, date), per-seed means, mean ± std over seeds, paired
                  per-seed differences of each rule against the first with a 95 % interval,
                  accuracy at fixed budgets, training order, per-image rows
  metrics.json    the headline numbers per rule (`dvc metrics show`, `dvc exp show`)
  curves.csv      accuracy against revealed % per rule and image, first seed (`dvc plots show`)
  curves.png      the same, mean over images per rule
  report.md       all of it as tables
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np

from ...io import DataError, atomic_write_bytes, read_json, write_csv, write_json
from ...layout import Layout
from ...params import Params
from ...plots import budget_rules_figure
from ..common import paired_difference
from . import order_path, results_dir, run_path

# per-seed statistics (each a mean over images unless named otherwise), with their decimals in report.md
STATS = {
    "revealed_pct": 3,
    "revealed_px": 0,
    "median_revealed_px": 0,
    "reached_fraction": 2,
    "final_accuracy": 3,
    "rounds": 1,
    "seconds_per_image": 1,
}
COMPARED = ("revealed_pct", "revealed_px", "reached_fraction", "final_accuracy")
BUDGETS = (0.05, 0.1)  # % revealed at which the accuracy is read (the budgets)


def seed_stats(run: dict) -> dict:
    """One run's (rule, seed) means over its images."""
    im = run["images"]
    px = [i["revealed"] for i in im]
    return {
        "revealed_pct": float(np.mean([i["revealed_pct"] for i in im])),
        "revealed_px": float(np.mean(px)),
        "median_revealed_px": float(np.median(px)),
        "reached_fraction": float(np.mean([i["reached"] for i in im])),
        "final_accuracy": float(np.mean([i["final_accuracy"] for i in im])),
        "rounds": float(np.mean([i["rounds"] for i in im])),
        "seconds_per_image": float(np.mean([i["seconds"] for i in im])),
    }


def mean_std_over(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def aggregate(runs: dict[tuple[str, int], dict], rules: list[str], seeds: list[int]) -> dict:
    """Per-seed means, mean ± std over seeds per rule, and each later rule minus the first, paired by seed."""
    per_seed = [{"rule": r, "seed": s, **seed_stats(runs[r, s])} for r in rules for s in seeds]
    by = {(row["rule"], row["seed"]): row for row in per_seed}
    table = [
        {"rule": r, "seeds": len(seeds), **{k: mean_std_over([by[r, s][k] for s in seeds]) for k in STATS}}
        for r in rules
    ]
    first = rules[0]
    differences = [
        {
            "rule": r,
            "against": first,
            **{k: paired_difference([by[r, s][k] for s in seeds], [by[first, s][k] for s in seeds]) for k in COMPARED},
        }
        for r in rules[1:]
    ]
    return {"per_seed": per_seed, "table": table, "differences": differences}


def curve_rows(runs: dict[tuple[str, int], dict], rules: list[str], seed: int) -> list[dict]:
    """Plot data: accuracy against revealed % per round, every image of every rule, one seed."""
    rows = []
    for r in rules:
        for im in runs[r, seed]["images"]:
            size = im["height"] * im["width"]
            rows += [
                {"strategy": r, "image": im["id"], "revealed_pct": round(100 * n / size, 5), "accuracy": round(acc, 5)}
                for n, acc in im["curve"]
            ]
    return rows


def accuracy_at(curves: list[dict], budgets: tuple[float, ...]) -> dict[str, dict[float, float]]:
    """Per rule, the mean over images of the accuracy reached with `budget` % of the pixels revealed
    (the last point before it; an image that stopped earlier keeps its final accuracy)."""
    out: dict[str, dict[float, float]] = {}
    for rule in dict.fromkeys(c["strategy"] for c in curves):
        per_image: dict[str, list] = {}
        for c in curves:
            if c["strategy"] == rule:
                per_image.setdefault(c["image"], []).append((float(c["revealed_pct"]), float(c["accuracy"])))
        out[rule] = {
            b: float(
                np.mean([[a for x, a in pts if x <= b][-1] if pts[0][0] <= b else np.nan for pts in per_image.values()])
            )
            for b in budgets
        }
    return out


def mean_std(stat: dict, digits: int, n_seeds: int) -> str:
    """'mean ± std' over seeds; the mean alone for one seed, whose std of 0 would read as a measured spread."""
    if n_seeds < 2:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _interval(d: dict, digits: int) -> str:
    if d["ci95"] is None:  # one seed
        return f"{d['mean']:+.{digits}f}"
    lo, hi = d["ci95"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def markdown(rep: dict) -> str:
    s, o, n = rep["setup"], rep["setup"]["oracle"], len(rep["setup"]["seeds"])
    lines = [
        f"# Per-image Oracle budget: {rep['study']}",
        "",
        f"Made by `dvc repro studies/{rep['study']}/dvc.yaml` on {rep['date']}; one network per image, from "
        "scratch, trained on the revealed pixels only. Mean ± std over seeds of the per-seed means over images.",
        "",
        f"- Data: {s['dataset']} at scale {s['scale']}; {s['images']} images of the {s['split']} split: "
        + ", ".join(s["frames"])
        + ".",
        f"- Rules {s['rules']}, seeds {s['seeds']}; target {o['target_accuracy']:.0%}, budget cap "
        f"{o['max_fraction']:.1%} of the image; {o['initial_pixels']} random pixels, then "
        f"max({o['pixels_per_round']}, {o['round_growth']:g} x revealed) per round, {o['steps_per_round']} "
        f"steps per round; MLP {o['depth']}x{o['width']}, lattices {o['grid']}, ensemble {o['ensemble']}, "
        f"geodesic vote {o['geodesic']:g}.",
        "- Machine and date of the runs: " + "; ".join(rep["machines"]) + ".",
        "",
        "| rule | revealed % | pixels (mean) | pixels (median) | reached target | final acc | rounds | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in rep["table"]:
        lines.append(f"| {t['rule']} | " + " | ".join(mean_std(t[k], d, n) for k, d in STATS.items()) + " |")
    if rep["differences"]:
        lines += [
            "",
            f"Paired per-seed differences against {rep['differences'][0]['against']} "
            "(mean [95 % t interval over seeds]; no interval with one seed):",
            "",
            "| rule | revealed % | pixels | reached target | final acc |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {d['rule']} | " + " | ".join(_interval(d[k], STATS[k]) for k in COMPARED) + " |"
            for d in rep["differences"]
        ]
    lines += [
        "",
        "Pixel accuracy at fixed budgets (first seed, mean over images; a curve that stopped earlier "
        "counts its last point; - where a first round already reveals more):",
        "",
        "| rule | " + " | ".join(f"at {b:g} % revealed" for b in BUDGETS) + " |",
        "|---|" + "---|" * len(BUDGETS),
    ]
    lines += [
        f"| {r} | " + " | ".join("-" if a[str(b)] is None else f"{a[str(b)]:.3f}" for b in BUDGETS) + " |"
        for r, a in rep["accuracy_at"].items()
    ]
    order = rep["training_order"]
    if order:
        lines += [
            "",
            f"Training order ({order['rule']}, seed {order['seed']}; a fresh network on the same revealed "
            "pixels, same steps):",
            "",
            "| order | final accuracy (mean over images) |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.4f} |" for k, v in order["final_accuracy"].items()]
    lines += ["", "![budget curves](curves.png)", ""]
    return "\n".join(lines)


def run(params: Params, layout: Layout) -> dict:
    b = params.budget
    rules: list[str] = list(b.strategies)
    runs: dict[tuple[str, int], dict] = {}
    for rule in rules:
        for seed in b.seeds:
            path = run_path(layout, rule, seed)
            if not path.is_file():
                raise DataError(f"{path}: not found; stage run@{rule}-{seed} writes it (dvc repro)")
            runs[rule, seed] = read_json(path)
    first = runs[rules[0], b.seeds[0]]["images"]
    frames = [im["id"] for im in first]
    for (rule, seed), r in runs.items():
        if [im["id"] for im in r["images"]] != frames:
            raise DataError(f"{run_path(layout, rule, seed)}: other images than {run_path(layout, *next(iter(runs)))}")
    order = read_json(order_path(layout)) if order_path(layout).is_file() else {}
    curves = curve_rows(runs, rules, b.seeds[0])
    at = accuracy_at(curves, BUDGETS)
    oracle = params.oracle.model_dump(mode="json")
    for key in ("strategy", "seed", "max_images"):  # set per run by the matrix, or unused here
        oracle.pop(key)
    rep = {
        "study": layout.root.resolve().name,
        "date": str(date.today()),
        "machines": sorted({r["machine"] for r in runs.values()}),
        "setup": {
            "dataset": params.dataset_name,
            "split": b.split,
            "images": len(frames),
            "frames": frames,
            "scale": params.data.scale,
            "size": f"{first[0]['width']}x{first[0]['height']} (first image)",
            "rules": rules,
            "seeds": list(b.seeds),
            "oracle": oracle,
        },
        **aggregate(runs, rules, list(b.seeds)),
        # None where an image's first round already reveals more than the budget
        "accuracy_at": {r: {str(k): None if np.isnan(v) else v for k, v in a.items()} for r, a in at.items()},
        "training_order": order,
        "per_image": [
            {"rule": rule, "seed": seed, **{k: v for k, v in im.items() if k != "curve"}}
            for (rule, seed), r in runs.items()
            for im in r["images"]
        ],
    }
    out = results_dir(layout)
    write_json(out / "report.json", rep)
    metrics = {
        t["rule"]: {k: round(t[k]["mean"], 6) for k in COMPARED}
        | {"revealed_pct_std": round(t["revealed_pct"]["std"], 6)}
        for t in rep["table"]
    }
    write_json(out / "metrics.json", metrics)
    write_csv(out / "curves.csv", curves)
    budget_rules_figure(rep["study"], curves, params.oracle.target_accuracy, out / "curves.png")
    atomic_write_bytes(out / "report.md", markdown(rep).encode())
    return {"report": str(Path("results") / "report.md"), **{r: m["revealed_pct"] for r, m in metrics.items()}}
