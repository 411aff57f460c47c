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


def run(params: Params, layout: Layout) -> dict:
    use_runtime(params)
    prepared = load_prepared(layout.prepared)
    ids = annotated_ids(layout)
    sources = params.train.label_sources
    keep = {checkpoint_path(layout.models, s).name for s in sources}
    if layout.models.is_dir():
        for path in layout.models.iterdir():
            if path.name in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return {
        source: train_source(params, source, prepared, ids, layout, timing=layout.logs / "train" / f"{source}.json")
        for source in sources
    }
