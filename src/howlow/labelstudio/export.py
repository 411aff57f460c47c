"""`howlow label-studio-import`: a Label Studio JSON export as the Oracle's records.

Each annotated task's keypoints become revealed pixels [y, x, class, round] in click order, one
round per click (one click, one backend update), and its per-image network is trained again on
them as the backend trained it: the Oracle's engine replaying the rounds with
`labelstudio.steps_per_update` steps each, from the image's Oracle seed: the network the person saw
last (howlow.labelstudio.session; bit for bit with `runtime.oracle_batch: 1`, to float rounding when
images train batched). data/oracle then holds what the `oracle` stage
writes (<id>.json, <id>.pt, summary.csv, totals.json with the human budget), and `howlow
pseudolabel`, `train`, `evaluate` and `track` run on the person's clicks (data/oracle/label_studio.json
names the export).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..console import Progress
from ..data import load_prepared
from ..io import DataError, read_json, write_json
from ..layout import Layout
from ..metrics import confusion, mean_iou, pixel_accuracy
from ..oracle import OracleRun, Scorer, image_seed, oracle_network
from ..oracle.engine import Job, run_recipe
from ..oracle.features import pixel_features
from ..oracle.replay import PropagateState
from ..params import Params
from ..stages.oracle import _save_result, finish, start, use_runtime
from ..studies.dataset.annotations import click_rounds
from ..tracking import HUMAN
from .clicks import BadRequest, keypoints, to_pixels, unique_pixels

log = logging.getLogger(__name__)

CURVE_POINTS = 32  # rounds scored against the ground truth per image (each costs a whole-image prediction)
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio prefixes uploaded file names so


def image_id(url: object) -> str:
    """The prepared image id a task's image names: its file name without extension (local files'
    d= path, or an upload's name without Label Studio's prefix)."""
    if not isinstance(url, str):
        return ""
    parts = urlsplit(url)
    d = parse_qs(parts.query).get("d", [])
    return Path(d[0] if d else parts.path).stem


def latest_annotation(task: dict) -> dict | None:
    """The task's most recent annotation that was not skipped."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    return max(anns, key=lambda a: (str(a.get("updated_at", "")), a.get("id", 0))) if anns else None


def read_tasks(path: Path, ids: set[str], class_ids: dict[str, int]) -> dict[str, list]:
    """image id -> keypoints (y %, x %, class) of the annotated tasks of an export."""
    try:
        tasks = read_json(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (export the project from Label Studio as JSON)") from None
    except ValueError as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(tasks, list):
        raise DataError(f"{path}: expected Label Studio's JSON export, a list of tasks")
    out: dict[str, list] = {}
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError(f"{path}: task {i}: expected an object with data")
        ann = latest_annotation(task)
        if ann is None:
            continue
        urls = [v for v in task["data"].values() if isinstance(v, str)]
        names = [image_id(u) for u in urls]
        names += [m.group(1) for n in names if (m := UPLOAD_PREFIX.match(n))]
        match = [n for n in names if n in ids]
        if not match:
            raise DataError(
                f"{path}: task {task.get('id', i)}: its image {urls[:1]} is no training image of data/prepared"
            )
        if match[0] in out:
            raise DataError(f"{path}: task {task.get('id', i)}: image {match[0]} is annotated in two tasks")
        try:
            out[match[0]] = list(keypoints(ann.get("result") or [], None, class_ids).values())
        except BadRequest as exc:
            raise DataError(f"{path}: task {task.get('id', i)}: {exc}") from None
    return out


def curve_rounds(n: int) -> list[int]:
    """At most CURVE_POINTS rounds out of n, evenly spread, the last one included."""
    return sorted({int(r) for r in np.linspace(0, n - 1, min(n, CURVE_POINTS)).round()})


def run(params: Params, layout: Layout) -> dict:
    """Import `labelstudio.export` into data/oracle; the human budget (clicks, %) in totals.json."""
    use_runtime(params)
    prepared = load_prepared(layout.prepared)
    rows = {r["id"]: r for r in prepared.split("train")}
    class_ids = {c["name"]: c["id"] for c in prepared.classes}
    export = layout.root / params.labelstudio.export
    tasks = read_tasks(export, set(rows), class_ids)
    tasks = {k: v for k, v in tasks.items() if v}
    if not tasks:
        raise DataError(f"{export}: no annotated task has a keypoint")
    p = params.oracle.model_copy(update={"steps_per_round": params.labelstudio.steps_per_update})
    start(layout.oracle)
    jobs, clicks = [], {}
    for key, points in tasks.items():
        image = prepared.image(rows[key])
        px = unique_pixels(to_pixels(points, image.shape[:2]))
        clicks[key] = np.column_stack([px, np.arange(len(px))])
        rounds = click_rounds(clicks[key], image.shape[1], len(px))
        keep = {r: str(r) for r in curve_rounds(len(px))}
        state = PropagateState(image.shape[:2], rounds, keep, Scorer(image, p))
        jobs.append(Job(key, pixel_features(image, p), image_seed(p.seed, key), state))
    summaries = []
    bar = Progress(log, "label-studio-import", len(jobs), "image")

    def done(job: Job, weights: dict, seconds: float) -> None:
        assert isinstance(job.state, PropagateState)
        label = prepared.label(rows[job.key])
        run = OracleRun(revealed=clicks[job.key].tolist(), seconds=seconds)
        for r, name in sorted(job.state.keep.items()):
            pred = job.state.out[name][0]
            cm = confusion(pred, label, prepared.n_classes)
            n = r + 1
            run.curve.append(
                {
                    "round": r,
                    "revealed": n,
                    "revealed_fraction": n / label.size,
                    "accuracy": pixel_accuracy(cm),
                    "miou": mean_iou(cm),
                    "loss": None,
                }
            )
            run.prediction = pred
        run.reached = run.curve[-1]["accuracy"] >= params.oracle.target_accuracy
        run.model = oracle_network(p, prepared.n_classes, 0)
        run.model.load_state_dict(weights)
        summaries.append(_save_result(params, job.key, label, run, layout))
        s = summaries[-1]
        log.debug("%s: %d clicks (%.3f %%), accuracy %.4f", job.key, s["revealed"], s["revealed_pct"], s["accuracy"])
        bar.update(f"{job.key} {s['revealed']} clicks, accuracy {s['accuracy']:.4f}")

    run_recipe(jobs, p, prepared.n_classes, params.runtime.oracle_batch, done, params.runtime.device)
    bar.close()
    order = {k: i for i, k in enumerate(tasks)}
    totals = finish(sorted(summaries, key=lambda s: order[s["id"]]), layout)
    # the person's clicks in all, beside the per-image budget (totals.json is numbers only: MLflow logs them)
    totals["clicks"] = int(sum(len(c) for c in clicks.values()))
    write_json(layout.oracle / "totals.json", totals)
    write_json(layout.oracle / "label_studio.json", {"annotator": HUMAN, "export": str(export), "tasks": list(tasks)})
    return totals
