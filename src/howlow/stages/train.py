"""Stage `train`: one data-set network from scratch per entry of `train.label_sources`
(howlow.segmentation), on the images the Oracle annotated. Writes `models/<source>.{pt,json}`.

Resuming: `models/` is a persistent DVC output (DVC does not empty it before the stage runs), so the
per-source checkpoints `models/<source>.ckpt` of a killed run survive and the rerun continues from
them. Everything else in `models/` is removed first, as DVC would, so the output holds exactly this
run's models; each checkpoint is removed once its model is written, so none is ever committed.
"""

from __future__ import annotations

import shutil

from ..data import load_prepared
from ..layout import Layout
from ..params import Params
from ..segmentation.train import checkpoint_path, train_source
from .oracle import annotated_ids, use_runtime


def prune(params: Params, layout: Layout) -> None:
    """Empty models/ but for the checkpoints of `train.label_sources` (a killed run continues)."""
    keep = {checkpoint_path(layout.models, s).name for s in params.train.label_sources}
    if layout.models.is_dir():
        for path in layout.models.iterdir():
            if path.name in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def train_one(params: Params, source: str, layout: Layout) -> dict:
    """One label source's network: models/<source>.{pt,json} (the Prefect flow's task per source)."""
    use_runtime(params)
    prepared = load_prepared(layout.prepared)
    timing = layout.logs / "train" / f"{source}.json"
    return train_source(params, source, prepared, annotated_ids(layout), layout, timing=timing)


def run(params: Params, layout: Layout) -> dict:
    prune(params, layout)
    return {source: train_one(params, source, layout) for source in params.train.label_sources}
