"""`howlow budget`: the per-image Oracle budget report (how few pixels reach the target accuracy).

For every selection rule in `budget.strategies` and seed in `budget.seeds`, the Oracle runs on the
first `budget.images` images of `budget.split` at the prepared scale. Per (rule, seed): mean revealed
% and pixels, the fraction reaching the target, rounds and seconds per image; then mean ± std over
seeds. Also the training-order experiment: for the first rule's seed-0 runs, a fresh network is
trained on the same revealed pixels in reveal order (round by round), all at once (the same number
of steps), and in a shuffled order cut into rounds of the same sizes; its final accuracy is reported.

Outputs: reports/oracle_budget/<dataset>.json, <dataset>_curves.png (accuracy vs revealed % per
rule) and <dataset>_curves.csv (DVC plot data); reports/oracle_budget.md gathers every data set.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data import load_prepared, prepare
from ..io import atomic_write_bytes, read_csv, read_json, write_csv, write_json
from ..layout import Layout
from ..oracle import image_seed, run_oracle_many
from ..oracle.replay import training_order
from ..params import Params
from ..plots import budget_rules_figure
from ..stages.oracle import use_runtime
from .common import machine
from .dataset import WORK, _update

OUT = Path("reports") / "oracle_budget"








def summarise(per_seed: list[dict]) -> dict:
    out = {}
    for key in per_seed[0]:
        vals = np.array([s[key] for s in per_seed], float)
        out[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    return out


def budget(params: Params, layout: Layout) -> dict:
    """Entry point of `howlow budget` (see module docstring)."""
    t0 = time.perf_counter()
    b = params.budget
    if params.data.source != "synthetic":
        params = _update(params, data={"source": str(Path(params.data.source).resolve())})
    name = params.report_name(b.tag)
    work = (WORK / f"budget-{name}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(work):
        prepare(params, Path("data/prepared"))
    prepared = load_prepared(work / "data" / "prepared")
    rows = prepared.split(b.split)[: b.images or None]
    items = [(r["id"], prepared.image(r), prepared.label(r)) for r in rows]
    use_runtime(params)
    table, curves, per_image, order = [], [], [], {}
    for strategy in b.strategies:
        per_seed = []
        for seed in b.seeds:
            p = params.oracle.model_copy(update={"strategy": strategy, "seed": seed})
            runs: dict[str, dict] = {}

            def done(key, run, runs=runs):
                runs[key] = {"revealed": run.revealed, "curve": run.curve, "reached": run.reached,
                             "seconds": run.seconds}
                s = run.curve[-1]
                print(f"[budget {name}] {strategy} seed {seed} {key}: {s['revealed']} px "
                      f"({100 * s['revealed_fraction']:.3f} %), acc {s['accuracy']:.4f}", file=sys.stderr, flush=True)

            seeded = [(k, im, lab, image_seed(seed, k)) for k, im, lab in items]
            t1 = time.perf_counter()
            run_oracle_many(seeded, prepared.n_classes, p, params.runtime.oracle_batch, done, params.runtime.device,
                            params.runtime.select_workers)
            wall = time.perf_counter() - t1
            sizes = {k: lab.size for k, _, lab in items}
            pct = [100 * len(runs[k]["revealed"]) / sizes[k] for k in runs]
            per_seed.append({"revealed_pct": float(np.mean(pct)),
                             "revealed_px": float(np.mean([len(r["revealed"]) for r in runs.values()])),
                             "median_revealed_px": float(np.median([len(r["revealed"]) for r in runs.values()])),
                             "reached_fraction": float(np.mean([r["reached"] for r in runs.values()])),
                             "final_accuracy": float(np.mean([r["curve"][-1]["accuracy"] for r in runs.values()])),
                             "rounds": float(np.mean([len(r["curve"]) for r in runs.values()])),
                             "seconds_per_image": wall / len(runs)})
            for k, r in runs.items():
                per_image.append({"strategy": strategy, "seed": seed, "image": k, "revealed": len(r["revealed"]),
                                  "revealed_pct": 100 * len(r["revealed"]) / sizes[k], "reached": r["reached"],
                                  "rounds": len(r["curve"])})
                if seed == b.seeds[0]:
                    curves += [{"strategy": strategy, "image": k, "revealed_pct": round(100 * c["revealed_fraction"], 5),
                                "accuracy": round(c["accuracy"], 5)} for c in r["curve"]]
            if strategy == b.strategies[0] and seed == b.seeds[0] and b.training_order:
                order = training_order(seeded, {k: r["revealed"] for k, r in runs.items()}, prepared.n_classes, p, params.runtime.oracle_batch,
                                       params.runtime.device)
        table.append({"strategy": strategy, "seeds": len(b.seeds), **summarise(per_seed)})
    h, w = items[0][2].shape
    report = {"dataset": name, "machine": machine(), "wall_minutes": (time.perf_counter() - t0) / 60,
              "setup": {"split": b.split, "images": len(items), "scale": params.data.scale,
                        "size": f"{w}x{h} (first image)", "seeds": b.seeds,
                        "oracle": params.oracle.model_dump(mode="json")},
              "table": table, "training_order": order, "per_image": per_image}
    write_json(OUT / f"{name}.json", report)
    write_csv(OUT / f"{name}_curves.csv", curves)
    budget_rules_figure(name, curves, params.oracle.target_accuracy, OUT / f"{name}_curves.png")
    md = write_report()
    print(f"[budget {name}] report {md}", file=sys.stderr)
    return {"dataset": name, "report": str(md), **{t["strategy"]: t["revealed_pct"]["mean"] for t in table}}




def accuracy_at(curves: list[dict], budgets: tuple[float, ...]) -> dict[str, dict[float, float]]:
    """Per rule, the mean over images of the accuracy reached with `budget` % of the pixels revealed
    (the last point before it; an image that stopped earlier keeps its final accuracy)."""
    out: dict[str, dict[float, float]] = {}
    for rule in dict.fromkeys(c["strategy"] for c in curves):
        per_image: dict[str, list] = {}
        for c in curves:
            if c["strategy"] == rule:
                per_image.setdefault(c["image"], []).append((float(c["revealed_pct"]), float(c["accuracy"])))
        out[rule] = {b: float(np.mean([[a for x, a in pts if x <= b][-1] if pts[0][0] <= b else np.nan
                                      for pts in per_image.values()])) for b in budgets}
    return out


def mean_std(stat: dict, digits: int, n_seeds: int) -> str:
    """'mean ± std' over seeds; the mean alone for one seed, whose std of 0 would read as a measured spread."""
    if n_seeds < 2:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def write_report(out_dir: Path = OUT) -> Path:
    lines = ["# Per-image Oracle budget", "",
             "Made by `howlow budget -p studies/budget_<dataset>.yaml` (see README); the numbers below are read",
             "from the JSON next to each plot. One network per image, from scratch, no pretrained weights, no",
             "external data (an ensemble of E networks, where a section says so, is one network of E parallel",
             "branches whose softmax is averaged, trained on that image alone); the budget counts every pixel",
             "whose label the network is given. Mean ± std over seeds of the per-seed means over images.", ""]
    for path in sorted(Path(out_dir).glob("*.json")):
        rep = read_json(path)
        s, o = rep["setup"], rep["setup"]["oracle"]
        lines += [f"## {rep['dataset']}", "",
                  f"- Images: {s['images']} images of the {s['split']} split (`data.max_{s['split']}` evenly spaced, then "
                  f"the first `budget.images`), scale {s['scale']} ({s['size']}); seeds {s['seeds']}.",
                  f"- Network: per-pixel {o['model']} {o['depth']}x{o['width']} on RGB, blurred RGB and local "
                  f"contrast at scales {o['scales']}, coords {o['coords']}"
                  # keys newer than some committed JSONs: absent means the cue did not exist (off)
                  + (f", SLIC superpixel cues at {o['superpixels']}" if o.get("superpixels") else "")
                  + (f", sin/cos position at {o['fourier']} octaves" if o.get("fourier") else "")
                  + (f", position channels x{o['position_gain']:g}" if o.get("position_gain", 1.0) != 1.0 else "")
                  + (f", learnable position lattices of {o['grid']} cells ({o['grid_dim']} numbers per node)"
                     if o.get("grid") else "")
                  + (f", an ensemble of {o['ensemble']} such networks (mean softmax)" if o.get("ensemble", 1) > 1 else "")
                  + (f", blended with the geodesic click vote (weight {o['geodesic']:g}, edge cost {o['geodesic_edge']:g})"
                     if o.get("geodesic") else "")
                  + f"; {o['steps_per_round']} Adam steps per "
                  f"round at lr {o['lr']}, warm start {o['warm_start']}, class balance {o['class_balance']}.",
                  f"- Rounds: {o['initial_pixels']} random pixels, then {o['pixels_per_round']} per round "
                  f"(growth {o['round_growth']}); stop at {o['target_accuracy']:.0%} or {o['max_fraction']:.1%} "
                  f"of the image.",
                  f"- Machine: {rep['machine']}; wall time {rep['wall_minutes']:.0f} min.", "",
                  "| rule | revealed % | pixels (mean) | pixels (median) | reached target | final acc | rounds | s / image |",
                  "|---|---|---|---|---|---|---|---|"]
        for t in rep["table"]:
            f = lambda k, d=3: mean_std(t[k], d, len(s["seeds"]))  # noqa: E731
            lines.append(f"| {t['strategy']} | {f('revealed_pct')} | {f('revealed_px', 0)} | "
                         f"{f('median_revealed_px', 0)} | {f('reached_fraction', 2)} | {f('final_accuracy')} | "
                         f"{f('rounds', 1)} | {f('seconds_per_image', 1)} |")
        at = accuracy_at(read_csv(path.with_name(f"{rep['dataset']}_curves.csv")), (0.05, 0.1))
        lines += ["", "Pixel accuracy at the issue's budgets (first seed, mean over images; a curve that stopped "
                  "earlier counts its last point):", "",
                  "| rule | at 0.05 % revealed | at 0.1 % revealed |", "|---|---|---|"]
        lines += [f"| {rule} | {a[0.05]:.3f} | {a[0.1]:.3f} |" for rule, a in at.items()]
        if rep["training_order"]:
            lines += ["", f"Training order ({rep['table'][0]['strategy']}, first seed; a fresh network on the same "
                      "revealed pixels, same steps):", "",
                      "| order | final accuracy (mean over images) |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in rep["training_order"].items()]
        lines += ["", f"![{rep['dataset']}](oracle_budget/{rep['dataset']}_curves.png)", ""]
    extra = Path(out_dir) / "NOTES.md"
    if extra.is_file():
        lines += [extra.read_text()]
    path = Path(out_dir).parent / "oracle_budget.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
