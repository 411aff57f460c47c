"""The per-image Oracle fan-out on a real Dask cluster (two worker processes) gives the same results as the
local threads run, and really runs on the workers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, untimed, write_params

pytestmark = pytest.mark.slow

N_TRAIN = 4


def prepared_params(folder: Path, *overrides: str):
    """params.yaml (TINY, N_TRAIN images) in `folder`, its data set prepared; the loaded params and ids."""
    from howlow.data import load_prepared, prepare
    from howlow.params import load_params
    from howlow.stages.oracle import image_ids

    write_params(folder, {"data": {"synthetic": {"n_train": N_TRAIN, "n_val": 1}}})
    params = load_params(folder / "params.yaml", list(overrides))
    prepare(params, folder / "data" / "prepared")
    return params, image_ids(params, load_prepared(folder / "data" / "prepared"))


def results(folder: Path, ids: list[str]) -> dict[str, dict]:
    return {i: untimed(json.loads((folder / "data/oracle" / f"{i}.json").read_text())) for i in ids}


def test_oracle_fanout_on_dask_workers_equals_local_threads(tmp_path, monkeypatch, prefect_server):
    from distributed import Client, LocalCluster, get_task_stream
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    monkeypatch.delenv("HOWLOW_DASK_ADDRESS", raising=False)
    # the workers unpickle the task by reference to flows.pipeline: they need the project root on their path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("flows.pipeline", None)
    from flows.pipeline import oracle_fanout, task_runner

    # the local (threads) run, in its own folder
    local_dir = tmp_path / "local"
    local_params, ids = prepared_params(local_dir)
    assert len(ids) == N_TRAIN
    runner = task_runner(local_params)
    assert isinstance(runner, ThreadPoolTaskRunner)
    local_summaries, failed = oracle_fanout.with_options(task_runner=runner)(local_params, ids, str(local_dir))
    assert failed == []

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=240)
        workers = set(client.scheduler_info()["workers"])
        worker_pids = set(client.run(os.getpid).values())
        assert len(workers) == 2 and os.getpid() not in worker_pids

        dask_dir = tmp_path / "dask"
        dask_params, dask_ids = prepared_params(dask_dir, f"orchestration.dask_address={cluster.scheduler_address}")
        assert dask_ids == ids
        runner = task_runner(dask_params)
        assert isinstance(runner, DaskTaskRunner)
        with get_task_stream(client) as stream:
            dask_summaries, failed = oracle_fanout.with_options(task_runner=runner)(dask_params, ids, str(dask_dir))
        assert failed == []
        # every image's task ran on a cluster worker (a silent local run leaves the task stream empty)
        ran = [t for t in stream.data if "oracle" in str(t["key"])]
        assert len(ran) == N_TRAIN, [t["key"] for t in stream.data]
        assert {t["worker"] for t in ran} <= workers
        # 4 tasks submitted at once to 2 idle single-thread workers: both get work
        assert len({t["worker"] for t in ran}) == 2

    # same per-image results: revealed pixels [y, x, class, round], curves, summaries, and networks
    assert untimed(dask_summaries) == untimed(local_summaries)
    assert [s["id"] for s in dask_summaries] == ids
    got, want = results(dask_dir, ids), results(local_dir, ids)
    for image_id in ids:
        assert got[image_id]["revealed"], image_id
        assert got[image_id] == want[image_id], image_id
        a = torch.load(dask_dir / "data/oracle" / f"{image_id}.pt", weights_only=True)
        b = torch.load(local_dir / "data/oracle" / f"{image_id}.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), image_id
