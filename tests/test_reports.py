"""`howlow study` (data-set level comparison) and `howlow budget` (per-image Oracle budget report),
run for real on a tiny synthetic data set in a temporary folder with its own MLflow store."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from conftest import howlow, project_env, write_params
from howlow.budget import mean_std, order_schedules
from howlow.io import read_csv
from howlow.study import aggregate

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


@pytest.mark.slow
def test_budget_report_and_training_order(tmp_path):
    env = project_env(tmp_path)
    write_params(tmp_path, {"data": {"synthetic": {"n_val": 2}},
                            "budget": {"strategies": ["error_center", "random"], "seeds": [0, 1], "images": 2},
                            "runtime": {"threads": 1, "oracle_batch": 2}})
    done = howlow("budget", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rep = json.loads((tmp_path / "reports/oracle_budget/synthetic.json").read_text())
    assert [t["strategy"] for t in rep["table"]] == ["error_center", "random"]
    assert len(rep["per_image"]) == 2 * 2 * 2
    for t in rep["table"]:  # the table is the mean over seeds of the per-seed means over images
        per_seed = [np.mean([r["revealed_pct"] for r in rep["per_image"]
                             if r["strategy"] == t["strategy"] and r["seed"] == s]) for s in (0, 1)]
        assert t["revealed_pct"]["mean"] == pytest.approx(np.mean(per_seed))
        assert t["revealed_pct"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    # replaying the reveal order with the same seed is the Oracle's own training: same final accuracy
    ec = next(t for t in rep["table"] if t["strategy"] == "error_center")
    assert rep["training_order"]["reveal order"] == pytest.approx(ec["final_accuracy"]["mean"], abs=0.02)
    assert set(rep["training_order"]) == {"reveal order", "all at once", "shuffled"}
    md = (tmp_path / "reports/oracle_budget.md").read_text()
    assert "| error_center |" in md and "Training order" in md
    assert (tmp_path / "reports/oracle_budget/synthetic_curves.png").stat().st_size > 0


def test_budget_table_shows_a_spread_only_over_several_seeds():
    stat = {"mean": 0.23494, "std": 0.0}
    assert mean_std(stat, 3, 1) == "0.235"
    assert mean_std({"mean": 0.23494, "std": 0.0031}, 3, 3) == "0.235 ± 0.003"


def test_order_schedules_keep_the_same_pixels_and_round_sizes():
    revealed = [[0, 1, 0, 0], [2, 2, 1, 0], [1, 0, 0, 1], [3, 3, 2, 1], [0, 0, 1, 2]]
    s = order_schedules(revealed, width=4, rng=np.random.default_rng(0))
    flat = sorted(y * 4 + x for y, x, _, _ in revealed)
    assert [list(r) for r in s["reveal order"]] == [[1, 10], [1, 4, 10, 15], flat]
    assert all(list(r) == flat for r in s["all at once"]) and len(s["all at once"]) == 3
    assert [len(r) for r in s["shuffled"]] == [2, 4, 5] and list(s["shuffled"][-1]) == flat


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


def test_accuracy_at_a_budget_takes_the_last_point_before_it():
    from howlow.budget import accuracy_at

    curves = [{"strategy": "r", "image": "a", "revealed_pct": x, "accuracy": y}
              for x, y in ((0.01, 0.5), (0.04, 0.9), (0.08, 0.8), (0.2, 0.99))]
    curves += [{"strategy": "r", "image": "b", "revealed_pct": x, "accuracy": y} for x, y in ((0.01, 0.6), (0.03, 0.98))]
    at = accuracy_at(curves, (0.05, 0.1))["r"]
    assert at[0.05] == pytest.approx((0.9 + 0.98) / 2) and at[0.1] == pytest.approx((0.8 + 0.98) / 2)
