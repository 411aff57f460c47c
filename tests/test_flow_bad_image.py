"""One failing image does not sink the others: the whole Prefect flow, on a folder data set where one
training label is entirely void, completes with that image in `failed_images` (after the task's retries)
and every other image's results present. What the Prefect UI shows of it: per-image logs, the budget
table as an artifact, a task per label source, and a failure note when a run fails."""

from __future__ import annotations

import asyncio
import csv
import json
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, write_params

pytestmark = pytest.mark.slow

GOOD = ["street_a", "street_b", "street_c"]
BAD = "all_void"


def write_dataset(root) -> None:
    """images_labels layout: 3 synthetic street scenes + 1 entirely void label in train, 1 scene in val."""
    from howlow.data import SYNTHETIC_CLASSES, synthetic_scene

    names = [("train", n) for n in [*GOOD, BAD]] + [("val", "street_val")]
    for i, (split, stem) in enumerate(names):
        image, label = synthetic_scene(np.random.default_rng([7, i]), 48, 64)
        if stem == BAD:
            label = np.full_like(label, 255)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
        Image.fromarray(label).save(root / "labels" / split / f"{stem}.png")
    (root / "classes.json").write_text(json.dumps(SYNTHETIC_CLASSES))


def test_flow_completes_without_the_failing_image(tmp_path, monkeypatch, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterTaskRunId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    write_dataset(tmp_path / "src")
    write_params(
        tmp_path,
        {
            "data": {"source": "src", "layout": "images_labels", "void_id": 255},
            # let the all-void label through validation: the oracle stage is what must cope with it
            "validate": {"max_void_fraction": 1.0, "min_class_pixels": 0},
        },
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("HOWLOW_DASK_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("flows.pipeline", None)
    from flows.pipeline import pipeline

    state = pipeline(record_in_dvc=False, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["failed_images"] == [BAD]
    assert result["oracle"]["images"] == len(GOOD)

    oracle_dir = tmp_path / "data/oracle"
    for image_id in GOOD:
        stored = json.loads((oracle_dir / f"{image_id}.json").read_text())
        assert stored["revealed"] and stored["summary"]["id"] == image_id
        assert (oracle_dir / f"{image_id}.pt").is_file()
        assert (tmp_path / "data/pseudo" / f"{image_id}.png").is_file()
    assert not (oracle_dir / f"{BAD}.json").exists() and not (oracle_dir / f"{BAD}.pt").exists()
    with open(oracle_dir / "summary.csv", newline="") as fh:
        assert [r["id"] for r in csv.DictReader(fh)] == GOOD
    # the later stages ran on the other images
    assert set(result["dataset"]) == {"pseudo", "full", "sparse", "random"}

    # the failing image was retried (2 retries) and failed with a message naming its label and the rule
    async def bad_runs():
        async with get_client() as client:
            return await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[f"oracle-{BAD}"]))
            )

    runs = asyncio.run(bad_runs())
    assert len(runs) == 1
    assert runs[0].state.is_failed() and runs[0].run_count == 3
    assert "labels/all_void.png: every pixel is void" in runs[0].state.message

    # what a person sees in the Prefect UI: each image's task logs its pixels, accuracy and seconds;
    # the run's budget table is a Markdown artifact; one training task per label source
    async def ui_records(flow_run_id):
        async with get_client() as client:
            good = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[f"oracle-{GOOD[0]}"]))
            )
            logs = await client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[good[0].id])))
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            # this flow run's training tasks only: the test server keeps other tests' runs
            trains = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[f"train-{s}" for s in result["dataset"]])),
            )
            full = [t for t in trains if t.name == "train-full"]
            train_logs = await client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[full[0].id])))
            return [log.message for log in logs + train_logs], artifacts, trains

    messages, artifacts, trains = asyncio.run(ui_records(state.state_details.flow_run_id))
    assert any(m.startswith(f"{GOOD[0]}: ") and "px revealed" in m and "pixel accuracy" in m for m in messages), (
        messages
    )
    epochs = yaml.safe_load((tmp_path / "params.yaml").read_text())["train"]["epochs"]
    assert f"train full: {epochs}/{epochs} epochs (100 %)" in "\n".join(messages)  # the stage's progress lines
    (budget,) = [a for a in artifacts if a.key == "howlow-budget"]
    assert "| label source | dataset.*.annotated_pct | dataset.*.miou | dataset.*.miou_pct_of_full |" in budget.data
    assert (
        f"| pseudo | {result['oracle']['mean_revealed_pct']:.4f} |" in budget.data and "failed: all_void" in budget.data
    )
    assert sorted(t.name for t in trains) == sorted(f"train-{s}" for s in result["dataset"])
    assert all(t.state.is_completed() for t in trains)

    # a run that fails leaves a Markdown artifact saying why (the failure hook)
    failed = pipeline(record_in_dvc=False, overrides=["data.source=no_such_folder"], return_state=True)
    assert failed.is_failed()

    async def failure_artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="howlow-failure-"))
            )

    notes = asyncio.run(failure_artifacts())
    # the session's test server may hold other runs' notes: exactly one says this run's reason
    assert len([n for n in notes if "no_such_folder" in n.data]) == 1, [n.data for n in notes]
