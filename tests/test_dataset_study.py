"""The data-set level study (studies/dataset_*): sources x budgets x seeds, the report, MLflow."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from conftest import howlow, project_env, write_params
from howlow.io import read_csv
from howlow.studies.dataset import aggregate


@pytest.mark.slow
def test_study_trains_every_source_budget_and_seed_and_logs_them(tmp_path):
    env = project_env(tmp_path)
    write_params(tmp_path, {"study": {"targets": [0.8, 0.9], "seeds": [0, 1],
                                      "label_sources": ["full", "pseudo", "confident", "random"]},
                            "train": {"epochs": 1}, "runtime": {"threads": 1}})
    done = howlow("study", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rep = json.loads((tmp_path / "reports/dataset_level/synthetic.json").read_text())
    # full once per seed; every other source once per budget and seed
    assert len(rep["rows"]) == 2 * (1 + 3 * 2)
    names = {r["name"] for r in rep["rows"]}
    assert {"full-s0", "full-s1", "pseudo-t0.8-s0", "random-t0.9-s1", "confident-t0.9-s0"} <= names
    by = {r["name"]: r for r in rep["rows"]}
    # a higher target costs at least as many revealed pixels; random gets exactly the Oracle's count
    assert by["pseudo-t0.9-s0"]["annotated_pixels"] >= by["pseudo-t0.8-s0"]["annotated_pixels"]
    assert by["random-t0.8-s1"]["annotated_pixels"] == by["pseudo-t0.8-s1"]["annotated_pixels"]
    assert by["full-s0"]["annotated_pct"] > 90
    for f in ("dataset_level/synthetic.png", "dataset_level/synthetic_curve.csv", "dataset_level.md"):
        assert (tmp_path / "reports" / f).stat().st_size > 0
    assert "| pseudo | 0.8 |" in (tmp_path / "reports/dataset_level.md").read_text()
    # the convergence check: full, first seed, twice the epochs, reported beside the 1-epoch figure
    conv = rep["convergence"]
    assert (conv["seed"], conv["epochs"], conv["epochs_x2"]) == (0, 1, 2)
    assert conv["miou"] == by["full-s0"]["miou"] and 0 <= conv["miou_x2"] <= 1
    assert "Convergence check: `full`, seed 0" in (tmp_path / "reports/dataset_level.md").read_text()
    # MLflow: one run per row in the data set's experiment, same param and metric names, a model each
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["howlow-dataset-synthetic"], output_format="list")
    names.add("full-s0-x2epochs")
    assert sorted(r.info.run_name for r in runs) == sorted(names)
    longer = next(r for r in runs if r.info.run_name == "full-s0-x2epochs")
    assert longer.data.params["train.epochs"] == "2" and longer.data.metrics["miou"] == pytest.approx(conv["miou_x2"])
    assert len({tuple(sorted(r.data.params)) for r in runs}) == 1
    assert len({tuple(sorted(k for k in r.data.metrics if not k.startswith("iou."))) for r in runs}) == 1
    run = next(r for r in runs if r.info.run_name == "pseudo-t0.9-s1")
    assert run.data.params["budget_target"] == "0.9" and run.data.metrics["miou"] == pytest.approx(by["pseudo-t0.9-s1"]["miou"])
    assert mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    # a rerun reuses every finished row: no new MLflow runs
    again = howlow("study", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(mlflow.search_runs(experiment_names=["howlow-dataset-synthetic"], output_format="list")) == len(names)


@pytest.mark.slow
def test_study_with_the_oracle_at_a_finer_scale_than_training(tmp_path):
    """study.oracle_scale: the Oracle annotates 48x64 images, the data-set networks train on the same
    images at 24x32; every sparse source costs the Oracle's count, as a share of the 48x64 image.
    `study.tag` names the work folder, the report section and the MLflow experiment."""
    env = project_env(tmp_path)
    write_params(tmp_path, {"data": {"scale": 0.5},
                            "study": {"targets": [0.9], "seeds": [0], "oracle_scale": 1.0, "convergence_check": False,
                                      "tag": "finer", "label_sources": ["full", "pseudo", "sparse", "random"]},
                            "train": {"epochs": 1, "crop": [16, 24]}, "runtime": {"threads": 1}})
    done = howlow("study", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "studies/work/synthetic-finer"
    oracle_rows = read_csv(work / "t0.9/data/oracle/summary.csv")
    assert {(int(r["height"]), int(r["width"])) for r in oracle_rows} == {(48, 64)}
    assert {(int(r["height"]), int(r["width"])) for r in read_csv(work / "data/prepared/manifest.csv")} == {(24, 32)}
    revealed = sum(int(r["revealed"]) for r in oracle_rows)
    rep = json.loads((tmp_path / "reports/dataset_level/synthetic-finer.json").read_text())
    assert rep["dataset"] == "synthetic-finer" and rep["mlflow_experiment"].endswith("-dataset-synthetic-finer")
    by = {r["source"]: r for r in rep["rows"]}
    for source in ("pseudo", "sparse", "random"):
        assert by[source]["annotated_pixels"] == revealed
        assert by[source]["annotated_pct"] == pytest.approx(100 * revealed / (3 * 48 * 64))
    assert rep["setup"]["oracle_scale"] == 1.0 and rep["convergence"] is None
    md = (tmp_path / "reports/dataset_level.md").read_text()
    assert "annotating at scale 1.0" in md and "## synthetic-finer" in md


def test_aggregate_means_stds_and_percent_of_full():
    rows = [{"source": "full", "target": None, "seed": s, "miou": m, "pixel_accuracy": 0.9, "annotated_pct": 100,
             "annotated_px_per_image": 10, "train_seconds": 1, "oracle_reached_fraction": None,
             "per_class_iou": {"a": m}} for s, m in ((0, 0.8), (1, 0.6))]
    rows += [{"source": "pseudo", "target": 0.9, "seed": s, "miou": m, "pixel_accuracy": 0.8, "annotated_pct": 1,
              "annotated_px_per_image": 1, "train_seconds": 1, "oracle_reached_fraction": 1.0,
              "per_class_iou": {"a": None if s else m}} for s, m in ((0, 0.4), (1, 0.6))]
    agg = {a["source"]: a for a in aggregate(rows)}
    assert agg["full"]["miou_mean"] == pytest.approx(0.7) and agg["full"]["miou_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert agg["pseudo"]["pct_of_full_mean"] == pytest.approx(np.mean([50, 100]))
    assert agg["pseudo"]["per_class_iou_mean"]["a"] == pytest.approx(0.4)  # None (absent class) is skipped
