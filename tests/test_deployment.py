"""The Prefect deployment `howlow serve` serves, against Prefect's test server: built by the same function
(`flows.pipeline.deployment`), registered, and read back with the Prefect client; and `howlow serve`
itself registering it from a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, project_env, run, stop_group

pytestmark = pytest.mark.slow


def read_deployment(name: str):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name(f"howlow-pipeline/{name}")

    return asyncio.run(read())


# the deployment freezes no values: a scheduled run reads params.yaml when it starts
EXPECTED_PARAMETERS = {"params_path": "params.yaml"}


@pytest.fixture
def pipeline_module(monkeypatch):
    # `howlow serve` runs in the project root: the flow's entrypoint is relative to it
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("flows.pipeline", None)
    import flows.pipeline

    return flows.pipeline


def test_deployment_from_params_registers_name_cron_and_parameters(prefect_server, pipeline_module):
    from howlow.params import load_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    dep = pipeline_module.deployment(load_params(ROOT / "params.yaml"))
    deployment_id = dep.apply()  # sync here (async_dispatch); registers it with the test server

    stored = read_deployment(raw["orchestration"]["deployment"])
    assert stored.id == deployment_id
    assert stored.name == raw["orchestration"]["deployment"] == "howlow-nightly"
    assert stored.entrypoint == "flows/pipeline.py:pipeline"
    assert [s.schedule.cron for s in stored.schedules] == [raw["orchestration"]["cron"]]
    assert all(s.active for s in stored.schedules)
    assert stored.parameters == EXPECTED_PARAMETERS
    # the flow's overrides are in its schema, so a run from the UI can set them
    assert {"target_accuracy", "strategy", "seed", "overrides"} <= set(stored.parameter_openapi_schema["properties"])

    # a different params file gives a different deployment: nothing is hard-coded
    other = load_params(
        ROOT / "params.yaml",
        [
            "orchestration.deployment=howlow-hourly",
            "orchestration.cron=0 * * * *",
            "oracle.strategy=random",
            "oracle.target_accuracy=0.95",
            "oracle.seed=7",
        ],
    )
    pipeline_module.deployment(other).apply()
    hourly = read_deployment("howlow-hourly")
    assert [s.schedule.cron for s in hourly.schedules] == ["0 * * * *"]
    assert hourly.parameters == EXPECTED_PARAMETERS

    # the per-image Oracle task retries before an image counts as failed
    task = pipeline_module.oracle_image_task
    assert task.name == "oracle-image" and task.retries == 2 and task.retry_delay_seconds == 5


@contextlib.contextmanager
def serving(cwd, log_path, env, *overrides):
    """`howlow serve` (a real subprocess, as a user runs it) in `cwd`; yields its deployment once
    registered; stopped (SIGINT, then SIGKILL) on exit."""
    from prefect.exceptions import ObjectNotFound

    name = next(o.split("=", 1)[1] for o in overrides if o.startswith("orchestration.deployment="))
    cmd = [sys.executable, "-m", "howlow.cli", "serve", *overrides]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while True:
                try:
                    stored = read_deployment(name)
                    break
                except ObjectNotFound:
                    pass
                assert proc.poll() is None, f"howlow serve ended:\n{Path(log_path).read_text()[-3000:]}"
                assert time.monotonic() < deadline, "howlow serve registered nothing within 240 s"
                time.sleep(1)
            yield proc, stored
        finally:
            stop_group(proc, signal.SIGINT)


def values_of(tree, key: str) -> list:
    """Every value stored under `key` at any depth of a JSON tree."""
    if isinstance(tree, dict):
        return [v for k, sub in tree.items() for v in ([sub] if k == key else values_of(sub, key))]
    if isinstance(tree, list):
        return [v for sub in tree for v in values_of(sub, key)]
    return []


def test_howlow_serve_registers_the_deployment(prefect_server, tmp_path):
    """`howlow serve` registers the deployment with params.yaml's name and cron and keeps serving."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1"}
    overrides = ("orchestration.deployment=howlow-served", "orchestration.cron=30 2 * * 1")
    with serving(ROOT, tmp_path / "serve.log", env, *overrides) as (proc, stored):
        assert [s.schedule.cron for s in stored.schedules] == ["30 2 * * 1"]
        assert stored.parameters == EXPECTED_PARAMETERS
        assert stored.entrypoint == "flows/pipeline.py:pipeline"
        time.sleep(2)
        assert proc.poll() is None  # serving: it blocks until stopped


def test_a_deployment_run_with_an_override_leaves_dvc_telling_the_truth(prefect_server, project, tmp_path):
    """A run of the served deployment with a parameter, after params.yaml was edited while serving:
    the run uses the edit (params are read at run time) and the override; params.yaml and dvc.lock
    record both, and `dvc status` says the outputs are those of params.yaml."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    env = {**project_env(tmp_path), "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1"}
    with serving(project, tmp_path / "serve.log", env, "orchestration.deployment=howlow-provenance"):
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["oracle"]["seed"] = 3  # an edit after `howlow serve` started
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        flow_run = run_deployment(
            "howlow-pipeline/howlow-provenance", parameters={"target_accuracy": 0.95}, timeout=900
        )
        assert flow_run.state.is_completed(), (flow_run.state, (tmp_path / "serve.log").read_text()[-4000:])

    recorded = yaml.safe_load((project / "params.yaml").read_text())
    assert (recorded["oracle"]["target_accuracy"], recorded["oracle"]["seed"]) == (0.95, 3)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    oracle_params = lock["stages"]["oracle"]["params"]["params.yaml"]["oracle"]
    assert (oracle_params["target_accuracy"], oracle_params["seed"]) == (0.95, 3)
    status = run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project, env).stdout
    assert "Data and pipelines are up to date" in status, status
    # `dvc exp show` reads the workspace's params and the committed ones: the run and its baseline
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], project, env).stdout)
    assert {0.95, 0.9} <= set(values_of(shown, "target_accuracy"))
