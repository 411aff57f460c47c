"""`howlow budget-run`: one selection rule and seed of a budget study (stage run@<rule>-<seed>).

The rule and seed are `oracle.strategy` and `oracle.seed` (dvc.yaml sets them on the command line
from the matrix). Output `runs/<rule>-<seed>.json`: per image the revealed count and %, whether the
target was reached, rounds, seconds, the curve as [revealed, accuracy] per round, and the revealed
pixels as [y, x, class, round] in reveal order (the training-order stage replays them).
"""

from __future__ import annotations

import json
import logging
import time

from ...console import Progress
from ...data import load_prepared
from ...io import atomic_write_bytes
from ...layout import Layout
from ...oracle import OracleRun, run_oracle_many
from ...params import Params
from ...stages.oracle import use_runtime
from ..common import machine
from . import items, run_path

log = logging.getLogger(__name__)


def run(params: Params, layout: Layout) -> dict:
    use_runtime(params)
    p = params.oracle
    prepared = load_prepared(layout.prepared)
    todo = items(params, prepared, p.seed)
    shapes = {key: label.shape for key, _, label, _ in todo}
    runs: dict[str, OracleRun] = {}
    bar = Progress(log, f"budget-run {p.strategy}-{p.seed}", len(todo), "image")

    def done(key: str, run: OracleRun) -> None:
        runs[key] = run
        last = run.curve[-1]
        log.debug(
            "%s: %d px (%.3f %%), acc %.4f", key, last["revealed"], 100 * last["revealed_fraction"], last["accuracy"]
        )
        bar.update(f"{key} {last['revealed']} px, acc {last['accuracy']:.4f}")

    t0 = time.perf_counter()
    run_oracle_many(
        todo,
        prepared.n_classes,
        p,
        params.runtime.oracle_batch,
        done,
        params.runtime.device,
        params.runtime.select_workers,
    )
    wall = time.perf_counter() - t0
    bar.close()
    images = []
    for key, *_ in todo:  # in split order, whatever order the engine finished them in
        r, (h, w) = runs[key], shapes[key]
        images.append(
            {
                "id": key,
                "height": h,
                "width": w,
                "revealed": len(r.revealed),
                "revealed_pct": 100 * len(r.revealed) / (h * w),
                "reached": r.reached,
                "rounds": len(r.curve),
                "final_accuracy": r.curve[-1]["accuracy"],
                "seconds": round(r.seconds, 3),
                "curve": [[c["revealed"], round(c["accuracy"], 6)] for c in r.curve],
            }
        )
    out = {
        "rule": p.strategy,
        "seed": p.seed,
        "split": params.budget.split,
        "machine": machine(),
        "wall_seconds": round(wall, 1),
        "images": images,
        "revealed": {key: runs[key].revealed for key, *_ in todo},
    }
    path = run_path(layout, p.strategy, p.seed)
    # one line: the revealed pixels are most of it (a few thousand [y, x, class, round] per Dubai tile)
    atomic_write_bytes(path, json.dumps(out, separators=(",", ":")).encode())
    return {
        "run": str(path.relative_to(layout.root)),
        "images": len(images),
        "mean_revealed_pct": sum(i["revealed_pct"] for i in images) / len(images),
        "reached_fraction": sum(i["reached"] for i in images) / len(images),
    }
