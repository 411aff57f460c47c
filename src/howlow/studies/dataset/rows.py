"""The rows of a data-set study: one data-set network trained from scratch and scored on the whole
val split (`howlow study-train`, stages full@<seed> and train@<source>-<t>-<seed>; `howlow
study-convergence`, stage convergence).

dvc.yaml sets the row on the command line: `train.label_sources=[<source>]`, `train.seed=<seed>`
and `oracle.target_accuracy=<t>`, the target whose Oracle images and labels the row trains on
(`full` takes the first target's: only its image list, since full labels have no budget). Outputs:
rows/<name>.json, the scores and the learning curve (in git), and networks/<name>/: `<source>.pt`,
`<source>.json` (howlow.segmentation) and, while training, its checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ...data import load_prepared
from ...io import write_json
from ...layout import Layout
from ...params import Params, ParamsError
from ...segmentation.train import evaluate_source, train_source
from ...stages.oracle import use_runtime
from ..common import machine
from . import CONVERGENCE, budget_sources, networks_dir, row_name, row_path, target_layout, training_images
from .annotations import budget_annotations, reached_fraction


def train_row(params: Params, root: Path, source: str, name: str) -> dict:
    """Train and score one row: rows/<name>.json, the network in networks/<name>/. `full` trains on
    every training image; the other sources on the annotated ones, with the clicks up to the
    target's round."""
    use_runtime(params)
    target = params.oracle.target_accuracy
    if target not in params.study.targets:
        raise ParamsError(f"oracle.target_accuracy: {target} is not one of study.targets {params.study.targets}")
    budget = target_layout(params, root, target, images=training_images(root))
    prepared = load_prepared(training_images(root))
    annotations = None if source == "full" else budget_annotations(root, target)
    ids = [r["id"] for r in prepared.split("train") if annotations is None or r["id"] in annotations]
    out = networks_dir(root) / name
    print(f"[study-train {name}] {params.train.epochs} epochs on {len(ids)} images", file=sys.stderr, flush=True)
    info = train_source(params, source, prepared, ids, budget, out, annotations)
    scores = evaluate_source(prepared, out / f"{source}.pt")
    row = {
        "name": name,
        "dataset": params.dataset_name,
        "source": source,
        "target": None if source == "full" else target,
        "seed": params.train.seed,
        **scores,
        "annotated_pixels": info["annotated_pixels"],
        "annotated_pct": info["annotated_pct"],
        "annotated_px_per_image": info["annotated_pixels"] / info["images"],
        "images": info["images"],
        "train_seconds": info["seconds"],  # a study's rows keep their times: the report states them
        "epoch_seconds": info["epoch_seconds"],
        "epochs": info["epochs"],
        "history": info["history"],  # the learning curve (val mIoU every train.eval_every epochs)
        "oracle_reached_fraction": None if source == "full" else reached_fraction(root, target),
        "model": f"{name}/{source}.pt",  # under networks/
        "train_ids": ids,
        "machine": machine(),
    }
    write_json(row_path(root, name), row)
    print(
        f"[study-train {name}] val mIoU {row['miou']:.4f}, {row['annotated_pct']:.4g} % annotated",
        file=sys.stderr,
        flush=True,
    )
    return row


def train(params: Params, layout: Layout) -> dict:
    """The row of stage full@<seed> or train@<source>-<t>-<seed>."""
    sources = params.train.label_sources
    if len(sources) != 1 or (sources[0] != "full" and sources[0] not in budget_sources(params)):
        raise ParamsError(
            f"train.label_sources: {sources}: a study row trains one source, 'full' or one of "
            f"study.label_sources {params.study.label_sources}"
        )
    source = sources[0]
    return train_row(params, layout.root, source, row_name(source, params.oracle.target_accuracy, params.train.seed))


def convergence(params: Params, layout: Layout) -> dict:
    """`full` for twice `train.epochs` (stage convergence); a row marked skipped when
    `study.convergence_check` is off."""
    if not params.study.convergence_check:
        write_json(row_path(layout.root, CONVERGENCE), {"name": CONVERGENCE, "skipped": True})
        return {"skipped": True}
    longer = params.model_copy(
        update={"train": params.train.model_copy(update={"epochs": 2 * params.train.epochs, "label_sources": ["full"]})}
    )
    return train_row(longer, layout.root, "full", CONVERGENCE)
