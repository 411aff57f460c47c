"""Stage `prepare`: the data set (or the embedded synthetic default) into `data/prepared/`."""

from __future__ import annotations

from ..data import prepare
from ..layout import Layout, project_root
from ..params import Params


def run(params: Params, layout: Layout) -> dict:
    return {"prepared": str(prepare(params, layout.prepared, project_root(layout.root)))}
