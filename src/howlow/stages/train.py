"""Stage `train`: one data-set network from scratch per entry of `train.label_sources`
(howlow.segmentation), on the images the Oracle annotated. Writes `models/<source>.{pt,json}`."""

from __future__ import annotations

from ..data import load_prepared
from ..layout import Layout
from ..params import Params
from ..segmentation.train import train_source
from .oracle import annotated_ids, use_runtime


def run(params: Params, layout: Layout) -> dict:
    use_runtime(params)
    prepared = load_prepared(layout.prepared)
    ids = annotated_ids(layout)
    return {source: train_source(params, source, prepared, ids, layout) for source in params.train.label_sources}
