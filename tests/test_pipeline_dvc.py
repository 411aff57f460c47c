"""`dvc repro` of the embedded default (shrunk by TINY) in a temporary copy of the project, then a DVC
experiment with a different Oracle target."""

from __future__ import annotations

import json

import pytest

from conftest import project_env, run

pytestmark = pytest.mark.slow

STAGES = ["prepare", "validate", "oracle", "pseudolabel", "train", "evaluate", "track"]


def test_dvc_repro_runs_every_stage_and_records_outputs(project, tmp_path):
    env = project_env(tmp_path)
    out = run(["dvc", "repro"], project, env)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out.stdout
    # outputs of every stage
    for path in [
        "data/prepared/manifest.csv",
        "reports/validation/docs/index.html",
        "data/oracle/summary.csv",
        "data/pseudo/metrics.json",
        "models/pseudo.pt",
        "models/full.pt",
        "models/sparse.pt",
        "models/random.pt",
        "eval/plots/oracle_curves.csv",
        "eval/plots/miou_by_source.csv",
        "eval/figures/budget_curves.png",
        "eval/mlflow_run.json",
    ]:
        assert (project / path).is_file(), path
    metrics = json.loads((project / "eval/metrics.json").read_text())
    assert metrics["oracle"]["images"] == 3
    assert 0 < metrics["oracle"]["mean_revealed_pct"] < 100 * 0.05 + 1
    assert set(metrics["dataset"]) == {"pseudo", "full", "sparse", "random"}
    assert metrics["dataset"]["full"]["annotated_pct"] > 90  # full labels cost (almost) every pixel
    assert metrics["dataset"]["sparse"]["annotated_pixels"] == metrics["dataset"]["random"]["annotated_pixels"]
    # everything is recorded: nothing left to run, and DVC reads the metrics and renders the plots
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], project, env).stdout  # the studies are their own
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project, env).stdout)
    assert "eval/metrics.json" in json.dumps(shown)
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], project, env)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "Oracle budget curves" in html and "budget_curves.png" in html

    # a DVC experiment at another budget target from the committed state
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "baseline results"], project, env)
    run(["dvc", "exp", "run", "-S", "oracle.target_accuracy=0.8", "-n", "target-080"], project, env)
    exps = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], project, env).stdout))
    assert "target-080" in exps and "0.8" in exps
