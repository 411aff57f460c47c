"""The annotation stages of a data-set study: the Oracle annotates every training image once, and
per-image networks turn the annotations into pseudo-labels (`howlow study-prepare-oracle`,
`study-annotate`, `study-propagate`).

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
propagate  per image, per-image networks trained on its clicks round by round, as the Oracle trained
           them, scored by the Oracle's scorer at each target's round: targets/<t>/data/pseudo/<id>.png
           (+ _conf.png); and the control `random_pseudo`: as many clicks at random (same count per
           target and the same round sizes), propagated the same way: targets/<t>/data/random_pseudo/.

Resuming: each annotations/<id>.json is written whole as its image finishes and is reused when its
fingerprint (data and Oracle params) matches, so a killed run continues; index.json is written
last and marks the run finished (DVC reruns the stage only when something changed, so a finished
run is redone whole). propagate resumes the same way, image by image (targets/.done stamps; the
metrics.json files, written last, mark it finished).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time

import numpy as np

from ...data import load_prepared
from ...io import DataError, atomic_write_bytes, read_json, read_label, write_json, write_png
from ...layout import Layout
from ...metrics import confusion, mean_iou, pixel_accuracy
from ...oracle import OracleRun, image_seed
from ...oracle.replay import propagate as propagate_clicks
from ...params import Params, ParamsError
from ...stages import prepare as prepare_stage
from ...stages.oracle import fingerprint, run_rows, use_runtime
from ..common import machine
from . import StudyLayout, oracle_images, oracle_scale_differs, results_dir, target_name
from .annotations import (
    INDEX,
    RANDOM_PSEUDO,
    annotations_dir,
    budget_markdown,
    click_rounds,
    load_annotations,
    random_clicks,
    sequence,
    summarise,
    target_rounds,
    write_annotation,
)

KINDS = ("pseudo", RANDOM_PSEUDO)  # pseudo-labels from the Oracle's clicks, and from random clicks
STAMPS = ".done"  # targets/.done/<kind>/<id>: an image's finished pseudo-labels, while propagate runs


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


def propagate_stamp(params: Params, a: dict, kind: str, image: bytes) -> str:
    """What an image's pseudo-labels of one kind depend on besides the code."""
    blob = json.dumps(
        {
            "oracle": params.oracle.model_dump(mode="json"),
            "targets": a["targets"],
            "clicks": a["clicks"],
            "kind": kind,
            "image": hashlib.sha256(image).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def propagate(params: Params, layout: Layout) -> dict:
    """Stage propagate: pseudo-labels per target from the Oracle's clicks and from random clicks.
    Resumable: targets/.done/<kind>/<id> holds the stamp of an image's finished pseudo-labels, and a
    killed run continues from them; the metrics.json files are written last and mark the run finished."""
    use_runtime(params)
    params = top_params(params)
    root = layout.root
    prepared = load_prepared(oracle_images(params, root))
    rows = {r["id"]: r for r in prepared.split("train")}
    anns = load_annotations(root)
    targets = [target_name(t) for t in sorted(params.study.targets)]
    out = root / "targets"
    dirs = {(kind, t): out / t / "data" / kind for kind in KINDS for t in targets}
    if all((d / "metrics.json").is_file() for d in dirs.values()):  # finished: DVC reruns it as something changed
        shutil.rmtree(out)
    for a in anns:
        if a["id"] not in rows:
            raise DataError(f"{annotations_dir(root) / (a['id'] + '.json')}: no training image {a['id']!r}")
    stamps = {
        (kind, a["id"]): propagate_stamp(params, a, kind, (prepared.root / rows[a["id"]]["image"]).read_bytes())
        for a in anns
        for kind in KINDS
    }

    def finished(kind: str, image_id: str) -> bool:
        path = out / STAMPS / kind / image_id
        return path.is_file() and path.read_text() == stamps[kind, image_id]

    todo = [(kind, a) for a in anns for kind in KINDS if not finished(kind, a["id"])]
    print(f"[propagate] {2 * len(anns) - len(todo)} of {2 * len(anns)} done before", file=sys.stderr, flush=True)
    todo = shard(params, todo)

    def items():
        for kind, a in todo:
            row = rows[a["id"]]
            image, label = prepared.image(row), prepared.label(row)
            if label.shape != (a["height"], a["width"]):
                raise DataError(
                    f"{annotations_dir(root) / (a['id'] + '.json')}: annotated at {a['height']}x"
                    f"{a['width']}, the image is {label.shape[0]}x{label.shape[1]}"
                )
            clicks = (
                np.array(a["clicks"], np.int64).reshape(-1, 4)
                if kind == "pseudo"
                else random_clicks(a, label, params.oracle.seed)
            )
            keep: dict[int, list[str]] = {}
            for t in targets:
                keep.setdefault(a["targets"][t]["round"], []).append(t)
            names = {r: ",".join(ts) for r, ts in keep.items()}
            rounds = click_rounds(clicks, label.shape[1], max(keep) + 1)
            yield f"{kind}/{a['id']}", image, rounds, names, image_seed(params.oracle.seed, a["id"])

    count, t0 = iter(range(1, len(todo) + 1)), time.perf_counter()

    def done(key: str, pseudo: dict) -> None:
        kind, image_id = key.split("/", 1)
        for names, (pred, conf) in pseudo.items():
            for t in names.split(","):
                write_png(dirs[kind, t] / f"{image_id}.png", pred)
                if kind == "pseudo":
                    write_png(dirs[kind, t] / f"{image_id}_conf.png", np.round(conf * 255).astype(np.uint8))
        atomic_write_bytes(out / STAMPS / kind / image_id, stamps[kind, image_id].encode())  # after its PNGs
        n = next(count)
        left = (len(todo) - n) * (time.perf_counter() - t0) / n
        print(f"[propagate {n}/{len(todo)}] {key} (ETA {left / 60:.0f} min)", file=sys.stderr, flush=True)

    propagate_clicks(
        items(), prepared.n_classes, params.oracle, params.runtime.oracle_batch, params.runtime.device, done
    )
    if not all(finished(kind, a["id"]) for a in anns for kind in KINDS):  # a shard's process
        print("[propagate] shard done; the last unsharded run finishes the stage", file=sys.stderr)
        return {"shard": params.runtime.shard}
    result: dict = {}
    quality: dict = {}
    for (kind, t), folder in dirs.items():
        rs = []
        for a in sorted(anns, key=lambda a: a["id"]):
            cm = confusion(read_label(folder / f"{a['id']}.png"), prepared.label(rows[a["id"]]), prepared.n_classes)
            rs.append({"id": a["id"], "accuracy": pixel_accuracy(cm), "miou": mean_iou(cm)})
        m = {
            "images": len(rs),
            "mean_accuracy": float(np.mean([r["accuracy"] for r in rs])),
            "mean_miou": float(np.mean([r["miou"] for r in rs])),
            "per_image": rs,
        }
        write_json(folder / "metrics.json", m)  # all of them there: the run is finished
        result[f"{kind}@{t}"] = m["mean_accuracy"]
        quality.setdefault(t, {})[kind] = {k: v for k, v in m.items() if k != "per_image"}
    # in git: the report reads it where the pseudo-labels (DVC cache) are absent, as on a fresh clone
    write_json(results_dir(root) / "pseudo_quality.json", quality)
    shutil.rmtree(out / STAMPS)
    return result
