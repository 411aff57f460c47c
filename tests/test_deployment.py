"""The Prefect deployment `howlow serve` serves, against Prefect's test server: built by the same function
(`flows.pipeline.deployment`), registered, and read back with the Prefect client; and `howlow serve`
itself registering it from a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.slow


def read_deployment(name: str):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name(f"howlow-pipeline/{name}")

    return asyncio.run(read())


def expected_parameters(params: dict) -> dict:
    return {
        "params_path": "params.yaml",
        "source": params["data"]["source"],
        "layout": params["data"]["layout"],
        "strategy": params["oracle"]["strategy"],
        "target_accuracy": params["oracle"]["target_accuracy"],
        "seed": params["oracle"]["seed"],
    }


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
    assert stored.parameters == expected_parameters(raw)
    # the parameters are the flow's own (enforced against its schema), so every run can override them
    assert set(stored.parameters) <= set(stored.parameter_openapi_schema["properties"])

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
    assert hourly.parameters == {**expected_parameters(raw), "strategy": "random", "target_accuracy": 0.95, "seed": 7}

    # the per-image Oracle task retries before an image counts as failed
    task = pipeline_module.oracle_image_task
    assert task.name == "oracle-image" and task.retries == 2 and task.retry_delay_seconds == 5


def test_howlow_serve_registers_the_deployment(prefect_server, tmp_path):
    """`howlow serve` (a real subprocess, as a user runs it) registers the deployment and keeps serving."""
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1"}
    name = "howlow-served"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "howlow.cli",
            "serve",
            f"orchestration.deployment={name}",
            "orchestration.cron=30 2 * * 1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                stored = read_deployment(name)
                break
            except ObjectNotFound:
                pass
            assert proc.poll() is None, f"howlow serve ended:\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "howlow serve registered nothing within 240 s"
            time.sleep(1)
        assert [s.schedule.cron for s in stored.schedules] == ["30 2 * * 1"]
        assert stored.parameters == expected_parameters(yaml.safe_load((ROOT / "params.yaml").read_text()))
        assert stored.entrypoint == "flows/pipeline.py:pipeline"
        time.sleep(2)
        assert proc.poll() is None  # serving: it blocks until stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
