"""Stage `track`: log the finished pipeline run to MLflow (howlow.tracking). The stage has no DVC
output: which MLflow run holds the results (a new id each time) is a fact of this machine, written
to `logs/mlflow_run.json` (Layout.logs), not a result."""

from __future__ import annotations

from ..io import write_json
from ..layout import Layout
from ..params import Params
from ..tracking import log_pipeline


def run(params: Params, layout: Layout) -> dict:
    out = log_pipeline(params, layout)
    write_json(layout.logs / "mlflow_run.json", out)
    return out
