"""MLflow records on a real sqlite store. A `track` killed half-way leaves its runs RUNNING; the next
`track` closes them (KILLED; a real process that has exited stands for the killed `track`), and
`howlow compare` lists finished runs only unless `tracking.compare_all` asks for all, and says so
when there is no store rather than creating one."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys

import pytest

from conftest import make_params


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_of_a_dead_track_are_closed_and_compare_skips_them(tmp_path, caplog, capsys):
    import mlflow

    from howlow.tracking import close_orphans, compare

    params = make_params({"tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"}})
    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    client = mlflow.MlflowClient()
    client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    here = socket.gethostname()

    experiment = client.get_experiment_by_name("t").experiment_id
    mlflow.set_experiment("t")

    def pipeline_run(name: str, host: str, pid: int, finish: bool) -> tuple[str, str]:
        tags = {"howlow.kind": "pipeline", "howlow.host": host, "howlow.pid": str(pid), "dataset": "d"}
        run = client.create_run(experiment, run_name=name, tags=tags)  # RUNNING until terminated
        for key, value in (("oracle.target_accuracy", 0.9), ("oracle.strategy", "error_center"), ("oracle.seed", 0)):
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "oracle.images", 3)
        child = client.create_run(experiment, run_name=f"{name}-image", tags={"mlflow.parentRunId": run.info.run_id})
        if finish:  # else what a kill -9 leaves: nothing ends the runs
            client.set_terminated(child.info.run_id)
            client.set_terminated(run.info.run_id)
        return run.info.run_id, child.info.run_id

    long_name = "finished-camvid-error_center-t0.98-s0-with-a-long-name"  # compare once cut names at 38
    done, _ = pipeline_run(long_name, here, dead_pid(), finish=True)
    killed, killed_child = pipeline_run("killed", here, dead_pid(), finish=False)
    alive, _ = pipeline_run("alive", here, 1, finish=False)  # pid 1 exists: a track still at work
    remote, _ = pipeline_run("remote", "another-machine", dead_pid(), finish=False)

    half_logged = client.create_logged_model(experiment, name="dataset-pseudo", source_run_id=killed)
    assert str(half_logged.status).endswith("PENDING")
    assert sorted(close_orphans(mlflow, "t")) == sorted([killed, killed_child])
    assert str(client.get_logged_model(half_logged.model_id).status).endswith("FAILED")
    status = {r: client.get_run(r).info.status for r in (done, killed, killed_child, alive, remote)}
    assert status == {done: "FINISHED", killed: "KILLED", killed_child: "KILLED", alive: "RUNNING", remote: "RUNNING"}
    assert any(r.levelname == "WARNING" and "killed (" in r.getMessage() for r in caplog.records)
    assert close_orphans(mlflow, "t") == []  # nothing left to close

    assert compare(params, tmp_path / "compare") == {"runs": 1}
    with open(tmp_path / "compare" / "budgets.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["run"], r["status"], r["oracle.images"]) for r in table] == [(long_name, "FINISHED", "3.0")]
    assert f"\n{long_name} " in capsys.readouterr().out  # the printed table names it whole
    every = params.model_copy(update={"tracking": params.tracking.model_copy(update={"compare_all": True})})
    assert compare(every, tmp_path / "compare") == {"runs": 4}


def test_compare_without_a_store_says_so_and_creates_none(tmp_path):
    from howlow.io import DataError
    from howlow.tracking import compare

    store = tmp_path / "nowhere" / "mlflow.db"
    params = make_params({"tracking": {"tracking_uri": f"sqlite:///{store}"}})
    with pytest.raises(DataError, match="no MLflow store; run the pipeline first"):
        compare(params, tmp_path / "compare")
    assert not store.exists() and not (tmp_path / "compare").exists()
