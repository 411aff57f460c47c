"""`dvc repro` of the embedded default (shrunk by TINY) in a temporary copy of the project, then a DVC
experiment with a different Oracle target."""

from __future__ import annotations

import json
import subprocess

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
        "logs/mlflow_run.json",
        "logs/oracle/syn_train_000.json",
        "logs/train/pseudo.json",
    ]:
        assert (project / path).is_file(), path
    metrics = json.loads((project / "eval/metrics.json").read_text())
    assert metrics["oracle"]["images"] == 3
    assert 0 < metrics["oracle"]["mean_revealed_pct"] < 100 * 0.05 + 1
    assert set(metrics["dataset"]) == {"pseudo", "full", "sparse", "random"}
    assert metrics["dataset"]["full"]["annotated_pct"] > 90  # full labels cost (almost) every pixel
    details = json.loads((project / "eval/details.json").read_text())  # the rest of the tree (howlow.names)
    assert details["dataset"]["sparse"]["annotated_pixels"] == details["dataset"]["random"]["annotated_pixels"]
    # everything is recorded: nothing left to run, and DVC reads the metrics and renders the plots
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], project, env).stdout  # the studies are their own
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project, env).stdout)
    assert "eval/metrics.json" in json.dumps(shown)
    # outputs are a pure function of inputs and params: no timings (they are in logs/, which DVC does
    # not track), and the Oracle forced to run again gives the same bytes, so nothing after it reruns
    tracked = [p for d in ("data/oracle", "models", "eval") for p in (project / d).rglob("*") if p.is_file()]
    assert not [p for p in tracked if p.suffix in (".json", ".csv") and "seconds" in p.read_text()]
    again = run(["dvc", "repro", "-f", "-s", "dvc.yaml:oracle"], project, env).stdout
    assert "Running stage 'oracle'" in again
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], project, env).stdout
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], project, env)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "Oracle budget curves" in html and "budget_curves.png" in html

    # a DVC experiment at another budget target from the committed state
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "baseline results"], project, env)
    run(["dvc", "exp", "run", "-S", "oracle.target_accuracy=0.8", "-n", "target-080"], project, env)
    exps = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], project, env).stdout))
    assert "target-080" in exps and "0.8" in exps
    # what a person compares: the changed columns only, a table that fits a wide terminal
    table = run(["dvc", "exp", "show", "--only-changed", "--drop", "src/.*", "--md"], project, env).stdout.splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert "oracle.target_accuracy" in header and "oracle.mean_revealed_pct" in header, header
    assert len(header) <= 24 and "…" not in "\n".join(table), table

    # a failing stage: DVC removed its outputs first; the message says how to get them back, and it works
    before = (project / "data/prepared/manifest.csv").read_bytes()
    (project / "params.yaml").write_text(
        (project / "params.yaml").read_text().replace("source: synthetic", "source: no_such_folder", 1)
    )
    failed = subprocess.run(["dvc", "repro", "dvc.yaml:prepare"], cwd=project, env=env, capture_output=True, text=True)
    assert failed.returncode != 0
    message = failed.stdout + failed.stderr
    assert "data.source 'synthetic' goes with data.layout 'synthetic'" in message
    assert "hint: DVC removed the outputs of stage prepare before running it" in message
    assert not (project / "data/prepared").exists()
    run(["git", "checkout", "--", "params.yaml"], project, env)
    run(["dvc", "checkout", "prepare"], project, env)
    assert (project / "data/prepared/manifest.csv").read_bytes() == before
