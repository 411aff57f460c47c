"""The Prefect flow under Prefect's test harness (a real temporary server), with a real MLflow sqlite
store in a temp dir: same stage functions as DVC, mapped per-image tasks, MLflow runs and models."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from conftest import ROOT, TINY, project_env, run

pytestmark = pytest.mark.slow


def test_flow_runs_pipeline_logs_mlflow_and_records_dvc(project, tmp_path, monkeypatch, prefect_server):
    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    env = project_env(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("flows.pipeline", None)
    from flows.pipeline import pipeline

    state = pipeline(target_accuracy=0.9, strategy="error_center", return_state=True)
    assert state.is_completed(), state
    result = state.result()
    n_train = TINY["data"]["synthetic"]["n_train"]
    assert result["oracle"]["images"] == n_train and result["failed_images"] == []

    # Prefect recorded one mapped task run per image (in the oracle fan-out subflow, a child flow run)
    async def task_names():
        async with get_client() as client:
            parent = state.state_details.flow_run_id
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
            )
            assert [c.name for c in children] and all(c.state.is_completed() for c in children)
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[parent, *(c.id for c in children)]))
            )
            return [r.name for r in runs]

    names = asyncio.run(task_names())
    assert sum(n.startswith("oracle-syn_train_") for n in names) == n_train
    for stage in ("prepare", "validate", "pseudolabel", "train", "evaluate", "track"):
        assert any(n.startswith(stage) for n in names), (stage, names)
    assert sorted(n for n in names if n.startswith("train-") and not n.startswith("train-prune")) == [
        "train-full",
        "train-pseudo",
        "train-random",
        "train-sparse",
    ]  # one task per label source

    # MLflow: the parent run with params and metrics, a nested run per image with step metrics, models
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    parent = mlflow.get_run(result["mlflow_run_id"])
    assert parent.info.run_name == "synthetic-error_center-t0.9-s0"
    assert parent.data.params["oracle.target_accuracy"] == "0.9"
    assert parent.data.metrics["oracle.images"] == n_train
    # one name per number (howlow.names): the DVC metrics path, dotted, in MLflow too
    from howlow.names import metric_names, read_metrics
    from howlow.params import flatten

    tree = metric_names(read_metrics(project / "eval"))
    assert {k: parent.data.metrics[k] for k in tree} == pytest.approx(tree)
    assert {"dataset.full.miou", "pseudolabel.mean_accuracy", "dataset.pseudo.per_class_iou.sky"} <= set(tree)
    shown = json.loads(run(["dvc", "metrics", "show", "--json", "eval/metrics.json"], project, env).stdout)
    dvc_names = flatten(shown[""]["data"]["eval/metrics.json"]["data"])
    assert set(dvc_names) <= set(parent.data.metrics), "a DVC metric that MLflow names otherwise"
    assert {f"dataset.{s}.train_seconds" for s in ("pseudo", "full", "sparse", "random")} <= set(parent.data.metrics)
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == n_train
    # provenance: the code (git commit) and the data set (an MLflow dataset input with its digest)
    import subprocess

    from howlow.tracking import dataset_digest

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert parent.data.tags["mlflow.source.git.commit"] == head
    experiment = mlflow.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
    (used,) = parent.inputs.dataset_inputs
    assert used.dataset.name == "synthetic" and used.dataset.digest == dataset_digest(project / "data/prepared")
    # each image run carries the parent's budget keys, so it can be filtered on its own
    assert {(c.data.tags["strategy"], c.data.tags["target"], c.data.tags["seed"]) for c in children} == {
        ("error_center", "0.9", "0")
    }
    client = mlflow.MlflowClient()
    for child in children:
        stored = json.loads((project / "data/oracle" / f"{child.data.params['image']}.json").read_text())
        history = client.get_metric_history(child.info.run_id, "oracle.accuracy")
        assert [m.step for m in history] == [p["revealed"] for p in stored["curve"]]
        assert [m.value for m in history] == pytest.approx([p["accuracy"] for p in stored["curve"]])
        # an image's numbers have the names of the parent's means: oracle.x against oracle.mean_x
        assert child.data.metrics["oracle.revealed_pct"] == pytest.approx(stored["summary"]["revealed_pct"])
        assert child.data.metrics["oracle.revealed_px"] == stored["summary"]["revealed"]
        assert child.data.metrics["oracle.accuracy"] == pytest.approx(stored["summary"]["accuracy"])
        assert not [k for k in child.data.metrics if not k.startswith("oracle.")]
    mean = sum(c.data.metrics["oracle.revealed_pct"] for c in children) / n_train
    assert parent.data.metrics["oracle.mean_revealed_pct"] == pytest.approx(mean)
    assert {k: parent.data.tags[k] for k in ("strategy", "target", "seed")} == {
        "strategy": "error_center",
        "target": "0.9",
        "seed": "0",
    }
    models = mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list")
    assert {m.name for m in models} == {"dataset-pseudo", "dataset-full", "dataset-sparse", "dataset-random"}
    loaded = mlflow.pytorch.load_model(f"models:/{models[0].model_id}")
    assert loaded is not None
    # each source's network is a registered model whose alias `current` is this run's version
    for source in ("pseudo", "full", "sparse", "random"):
        version = client.get_model_version_by_alias(f"howlow-synthetic-{source}", "current")
        assert version.run_id == parent.info.run_id
    assert mlflow.pytorch.load_model("models:/howlow-synthetic-pseudo@current") is not None

    # `howlow compare` reads the same store: the budget table and its plot
    from howlow.params import load_params
    from howlow.tracking import compare

    assert compare(load_params("params.yaml"), out_dir=tmp_path / "compare") == {"runs": 1}
    table = (tmp_path / "compare" / "budgets.csv").read_text().splitlines()
    assert table[0].startswith("run,dataset,strategy,target") and table[1].startswith(parent.info.run_name)
    import csv

    (row,) = csv.DictReader(table)
    for source in ("pseudo", "full", "sparse", "random"):  # what the compare plot's right panel draws
        for name in (f"dataset.{source}.miou", f"dataset.{source}.annotated_pct"):
            assert float(row[name]) == pytest.approx(parent.data.metrics[name])
    assert (tmp_path / "compare" / "budgets.png").stat().st_size > 0

    # the flow's outputs are recorded by DVC: dvc.lock lists every stage and nothing is stale
    lock = (project / "dvc.lock").read_text()
    for stage in ("prepare", "validate", "oracle", "pseudolabel", "train", "evaluate", "track"):
        assert f"  {stage}:" in lock
