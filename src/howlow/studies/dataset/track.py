"""`howlow study-track` (stage track): every row of a data-set study as one MLflow run, with its model,
in experiment `<tracking.experiment>-<study folder>`; results/mlflow.json maps rows to run ids.

A row already logged (same rows/<name>.json, tagged with its digest) is not logged again, so a study
that grows by a seed adds only the new seed's runs. A row trained in another session has its scores
(in git) but not its network (DVC cache): its run is logged without a model, tagged so.
"""

from __future__ import annotations

import hashlib
import logging

from ...console import Progress
from ...data import load_prepared
from ...io import read_json, write_json
from ...layout import Layout
from ...params import Params
from ...tracking import log_study_row, logged_study_rows, tracking_uri
from . import networks_dir, results_dir, row_path, study_name, training_images

log = logging.getLogger(__name__)


def run(params: Params, layout: Layout) -> dict:
    root = layout.root
    rep = read_json(results_dir(root) / "report.json")
    rows = rep["rows"] + ([rep["convergence_row"]] if rep["convergence_row"] else [])
    rows += rep.get("convergence_source_rows", [])  # reports made before stage convergence_sources lack it
    experiment, uri = f"{params.tracking.experiment}-{study_name(root)}", tracking_uri(params)
    known = logged_study_rows(experiment, uri)
    prepared = load_prepared(training_images(root))
    runs, new = {}, 0
    bar = Progress(log, "study-track", len(rows), "row")
    for row in rows:
        digest = hashlib.sha256(row_path(root, row["name"]).read_bytes()).hexdigest()[:16]
        if digest not in known:
            known[digest] = log_study_row(
                params,
                {**row, "study": study_name(root)},
                networks_dir(root) / row["model"],
                prepared,
                experiment,
                uri,
                {"howlow.row": digest},
            )
            new += 1
        runs[row["name"]] = known[digest]
        bar.update(row["name"])
    bar.close()
    log.info("%d new runs, %d already logged, experiment %s at %s", new, len(rows) - new, experiment, uri)
    out = {"experiment": experiment, "runs": runs}
    write_json(results_dir(root) / "mlflow.json", out)
    return {"experiment": experiment, "runs": len(runs), "new": new}
