"""Every service the README starts listens on 127.0.0.1 only: the commands as written, and the Dask
scheduler and worker really started from them (a worker's port runs pickled tasks from anyone)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, free_port

SERVICES = ("mlflow ui", "mlflow server", "prefect server start", "dask scheduler", "dask worker")


def readme_commands() -> list[str]:
    """The README's shell lines (code blocks and inline code) that start a service."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"`([^`\n]+)`", text) + [ln.strip() for ln in text.splitlines()]
    return sorted({c.rstrip(" &") for c in found if c.strip().startswith(SERVICES)})


def test_every_service_in_the_readme_binds_localhost():
    commands = readme_commands()
    started = {next(s for s in SERVICES if c.startswith(s)) for c in commands}
    assert {"mlflow ui", "prefect server start", "dask scheduler", "dask worker"} <= started, commands
    for cmd in commands:
        args = shlex.split(cmd)
        assert args[args.index("--host") + 1] == "127.0.0.1", cmd
        if "--dashboard-address" in args or cmd.startswith("dask"):
            assert args[args.index("--dashboard-address") + 1].startswith("127.0.0.1:"), cmd


def listening(proc: subprocess.Popen) -> set[str]:
    """The addresses the process and its children listen on (TCP)."""
    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


@pytest.mark.slow
def test_the_readme_dask_cluster_listens_on_localhost_only():
    [scheduler] = [c for c in readme_commands() if c.startswith("dask scheduler")]
    [worker] = [c for c in readme_commands() if c.startswith("dask worker")]
    port, dash = free_port(), free_port()
    scheduler = scheduler.replace("8786", str(port)).replace("8787", str(dash))
    worker = worker.replace("8786", str(port))
    bin_dir = Path(sys.executable).parent
    procs = []
    try:
        for cmd in (scheduler, worker):
            args = shlex.split(cmd)
            procs.append(subprocess.Popen([str(bin_dir / args[0]), *args[1:]], stderr=subprocess.PIPE, text=True))
            if cmd is scheduler:
                deadline = time.monotonic() + 60
                while port not in {c.laddr.port for c in psutil.Process(procs[0].pid).net_connections("tcp")}:
                    assert procs[0].poll() is None and time.monotonic() < deadline, "no scheduler"
                    time.sleep(0.5)
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(sum, [1, 2]).result() == 3
            workers = client.scheduler_info()["workers"]
        assert all(w.startswith("tcp://127.0.0.1:") for w in workers), workers
        for proc in procs:
            assert listening(proc) == {"127.0.0.1"}, (proc.args, listening(proc))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
