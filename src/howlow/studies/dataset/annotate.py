"""The annotation stages of a data-set study: the Oracle annotates every training image once
(`howlow study-prepare-oracle`, `study-annotate`, `study-budget`); propagate.py turns the
annotations into pseudo-labels.

annotate   ONE Oracle run per image, to the highest of `study.targets`. The curve tells where each
           lower target was first crossed, so every budget is a prefix of the same clicks.
           annotations/<id>.json (kept in git: the product of the study, from which everything later
           is rebuilt on a fresh clone without the Oracle): the clicks [y, x, class, round] in reveal
           order, the round-by-round curve [round, clicks, accuracy, mIoU] and, per target, the round
           and click count where it was first reached; annotations/index.json lists them once all are
           done. Timings go to results/annotate_time.json, never into the annotations.
budget     the per-image budget per target, overall and per sequence (file-name prefix), the sequences
           the recipe was tuned on (`study.tuned_on`) apart from the held-out ones: results/budget.json
           and budget.md. It reads the annotations there are, so it also reports a run still under way.

Resuming: each annotations/<id>.json is written whole as its image finishes and is reused when its
fingerprint (data and Oracle params) matches, so a killed run continues; index.json is written
last and marks the run finished (DVC reruns the stage only when something changed, so a finished
run is redone whole).
"""

from __future__ import annotations

import shutil
import sys
import time

import numpy as np

from ...data import load_prepared
from ...io import DataError, atomic_write_bytes, read_json, write_json
from ...layout import Layout
from ...oracle import OracleRun
from ...params import Params, ParamsError
from ...stages import prepare as prepare_stage
from ...stages.oracle import fingerprint, run_rows, use_runtime
from ..common import machine
from . import StudyLayout, oracle_images, oracle_scale_differs
from .annotations import (
    INDEX,
    annotations_dir,
    budget_markdown,
    load_annotations,
    sequence,
    summarise,
    target_rounds,
    write_annotation,
)


def shard(params: Params, todo: list) -> list:
    """This process's share of the work when `runtime.shard` is [k, n]: every n-th item from the k-th."""
    k, n = params.runtime.shard
    return todo[k::n]


def prepare_oracle(params: Params, layout: Layout) -> dict:
    """The data set at `study.oracle_scale` into data/prepared_oracle."""
    if not oracle_scale_differs(params):
        raise ParamsError(
            f"study.oracle_scale: {params.study.oracle_scale} is the training scale (or null): "
            "the Oracle reads data/prepared; remove stage prepare_oracle from dvc.yaml"
        )
    scaled = params.model_copy(update={"data": params.data.model_copy(update={"scale": params.study.oracle_scale})})
    return prepare_stage.run(scaled, StudyLayout(layout.root, oracle_images(params, layout.root)))


def top_params(params: Params) -> Params:
    """The params the Oracle runs with: `oracle.target_accuracy` = the highest study target."""
    oracle = params.oracle.model_copy(update={"target_accuracy": max(params.study.targets)})
    return params.model_copy(update={"oracle": oracle})


def annotation(params: Params, image_id: str, shape: tuple[int, int], run: OracleRun) -> dict:
    curve = [[c["round"], c["revealed"], round(c["accuracy"], 6), round(c["miou"], 6)] for c in run.curve]
    return {
        "id": image_id,
        "sequence": sequence(image_id),
        "height": shape[0],
        "width": shape[1],
        "fingerprint": fingerprint(params, image_id),
        "reached": run.reached,
        "targets": target_rounds(curve, params.study.targets),
        "curve": curve,
        "clicks": run.revealed,
    }


def annotate(params: Params, layout: Layout) -> dict:
    """Stage annotate: the Oracle over every training image at the highest target."""
    use_runtime(params)
    params = top_params(params)
    root = layout.root
    prepared = load_prepared(oracle_images(params, root))
    out = annotations_dir(root)
    if (out / INDEX).is_file():  # a finished run: DVC reruns it because something changed
        shutil.rmtree(out)
    rows = prepared.split("train")
    if params.oracle.max_images:
        rows = rows[: params.oracle.max_images]
    anns: dict[str, dict] = {}
    for r in rows:
        path = out / f"{r['id']}.json"
        if path.is_file() and (a := read_json(path)).get("fingerprint") == fingerprint(params, r["id"]):
            anns[r["id"]] = a
    todo = shard(params, [r for r in rows if r["id"] not in anns])
    timing_path = root / "results" / "annotate_time.json"
    if not anns:  # a fresh start: no times of another run
        timing_path.unlink(missing_ok=True)
    print(f"[annotate] {len(anns)} of {len(rows)} images done before, {len(todo)} to annotate", file=sys.stderr)
    t0, before, count = time.perf_counter(), len(anns), iter(range(len(anns) + 1, len(rows) + 1))

    def done(image_id: str, label: np.ndarray, run: OracleRun) -> None:
        anns[image_id] = a = annotation(params, image_id, label.shape, run)
        write_annotation(out / f"{image_id}.json", a)
        # read again before each write: the processes of a sharded run share the file
        timing = read_json(timing_path) if timing_path.is_file() else {"seconds": {}}
        timing["seconds"][image_id] = round(run.seconds, 2)
        write_json(timing_path, timing)
        n, here = next(count), len(anns) - before  # this process's share so far
        left = (len(todo) - here) * (time.perf_counter() - t0) / here
        print(
            f"[annotate {n}/{len(rows)}] {image_id}: {len(run.revealed)} px, acc {run.curve[-1]['accuracy']:.4f}"
            f"{'' if run.reached else ' NOT reached'}, {run.seconds:.1f} s (ETA {left / 60:.0f} min)",
            file=sys.stderr,
            flush=True,
        )

    run_rows(params, prepared, todo, done)
    if len(anns) < len(rows):  # a shard's process: the last unsharded run finishes the stage
        print(f"[annotate] {len(anns)} of {len(rows)} images annotated; shard done", file=sys.stderr)
        return {"images": len(anns), "shard": params.runtime.shard}
    timing = read_json(timing_path) if timing_path.is_file() else {"seconds": {}}
    secs = list(timing["seconds"].values())
    timing.update({"images": len(secs), "mean_s_per_image": float(np.mean(secs)) if secs else None})
    timing["machine"] = machine()
    write_json(timing_path, timing)
    write_json(out / INDEX, {"images": len(rows), "ids": [r["id"] for r in rows]})  # last: marks the run finished
    return {"images": len(rows), "mean_clicks": float(np.mean([len(anns[r["id"]]["clicks"]) for r in rows]))}


def budget(params: Params, layout: Layout) -> dict:
    """Stage budget: results/budget.json and budget.md from the annotations there are."""
    root = layout.root
    anns = load_annotations(root, complete=False)
    if not anns:
        raise DataError(f"{annotations_dir(root)}: no annotations yet; stage annotate makes them")
    n_train = len(load_prepared(oracle_images(params, root)).split("train"))
    rep = {"annotated": len(anns), "train_images": n_train, "machine": machine(), **summarise(anns, params)}
    write_json(root / "results" / "budget.json", rep)
    atomic_write_bytes(root / "results" / "budget.md", budget_markdown(rep).encode())
    return {"annotated": len(anns), **{t: v["held_out"] or v["all"] for t, v in rep["targets"].items()}}
