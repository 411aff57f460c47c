"""Stage `track`: log the finished pipeline run to MLflow (howlow.tracking); `eval/mlflow_run.json`."""

from __future__ import annotations

from ..io import write_json
from ..layout import Layout
from ..params import Params
from ..tracking import log_pipeline


def run(params: Params, layout: Layout) -> dict:
    out = log_pipeline(params, layout)
    write_json(layout.eval / "mlflow_run.json", out)
    return out
