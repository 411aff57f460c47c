"""Stage propagate of a data-set study (`howlow study-propagate`): per image, per-image networks
trained on its clicks round by round, as the Oracle trained them, scored by the Oracle's scorer at
each target's round: targets/<t>/data/pseudo/<id>.png (+ _conf.png when `confident` is one of
`study.label_sources`); and the control `random_pseudo`: as many clicks at random (same count per
target and the same round sizes), propagated the same way: targets/<t>/data/random_pseudo/.

targets/ is kept in git (label PNGs at the Oracle's scale, about 10 kB each): the pass takes an hour
on 2 cores, and a fresh clone trains the data-set networks from it without redoing it.

Resuming: image by image (targets/.done stamps while it runs; the metrics.json files, written last,
mark it finished; DVC reruns a finished stage only when something changed, so it is then redone whole).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time

import numpy as np

from ...data import load_prepared
from ...io import DataError, atomic_write_bytes, read_label, write_json, write_png
from ...layout import Layout
from ...metrics import confusion, mean_iou, pixel_accuracy
from ...oracle import image_seed
from ...oracle.replay import propagate as propagate_clicks
from ...params import Params
from ...stages.oracle import use_runtime
from . import oracle_images, results_dir, target_name
from .annotate import shard, top_params
from .annotations import RANDOM_PSEUDO, annotations_dir, click_rounds, load_annotations, random_clicks

KINDS = ("pseudo", RANDOM_PSEUDO)  # pseudo-labels from the Oracle's clicks, and from random clicks
STAMPS = ".done"  # targets/.done/<kind>/<id>: an image's finished pseudo-labels, while propagate runs


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
    confident = "confident" in params.study.label_sources  # its confidence maps, only when trained on
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
                if kind == "pseudo" and confident:
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
