"""Shared fixtures: a temporary copy of the project (for dvc repro / the Prefect flow) and tiny params."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HOWLOW_SHARED", ROOT.parent / "shared")) / "datasets"

# The embedded default, shrunk so an end-to-end run takes seconds on 2 cores; every stage still runs.
TINY = {
    "data": {"synthetic": {"n_train": 3, "n_val": 2, "height": 48, "width": 64}},
    "oracle": {"target_accuracy": 0.9, "steps_per_round": 30},
    "train": {"epochs": 3, "width": 8, "depth": 2, "crop": [32, 48], "batch_size": 2},
    "evaluate": {"n_figures": 1},
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, sig: int) -> None:
    """Stop a server started in its own process group: `sig` (its clean shutdown), then SIGKILL
    after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


# The Oracle recipe of the unit tests: fewer cues, no vote, no round growth, a higher lr, so a test
# runs in seconds and checks one mechanism; tests of the vote or the octaves switch them on.
UNIT_ORACLE = {"lr": 0.01, "scales": [1.0, 2.0, 4.0, 8.0], "fourier": 0, "geodesic": 0.0, "round_growth": 0.0}


def unit_oracle(**update):
    """OracleParams of params.yaml with UNIT_ORACLE and `update`."""
    return make_params({"oracle": {**UNIT_ORACLE, **update}}).oracle


def make_params(extra: dict | None = None):
    """Params of the repo's params.yaml (the one source of defaults) with `extra` merged in."""
    from howlow.params import Params

    return Params.model_validate(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), extra or {}))


def project_env(tmp: Path) -> dict:
    """Environment for subprocesses: the venv's tools on PATH, MLflow in a temp sqlite store."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    for key, value in (("GIT_AUTHOR_NAME", "howlow-tests"), ("GIT_AUTHOR_EMAIL", "tests@howlow.invalid")):
        env.setdefault(key, value)
        env.setdefault(key.replace("AUTHOR", "COMMITTER"), value)
    return env


def howlow(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m howlow.cli <args>` as a real subprocess in `cwd` (exit status checked by the caller)."""
    return subprocess.run([sys.executable, "-m", "howlow.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


def write_params(folder: Path, extra: dict | None = None) -> Path:
    """folder/params.yaml: the repo's params.yaml with TINY (and `extra`) merged in."""
    folder.mkdir(parents=True, exist_ok=True)
    params = merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), extra or {})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder / "params.yaml"


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(autouse=True)
def howlow_logger():
    """Each test starts with the `howlow` logger untouched (no handler, records go to the root logger,
    where pytest's caplog sees them), whatever an earlier test's `howlow.cli.main` set up for a
    terminal; and leaves it as it found it."""
    import logging

    logger = logging.getLogger("howlow")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:], logger.level, logger.propagate = [], logging.NOTSET, True
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: per-image training is many tiny kernels, and the results are bit-exact per
    thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's test harness: a real temporary Prefect server (and database) for the session."""
    from prefect.testing.utilities import prefect_test_harness

    # the first start of a temporary server can take a minute or more on a fresh machine
    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture
def project(tmp_path) -> Path:
    """A git + DVC copy of the project (tracked and unignored files) with tiny params, committed."""
    return copy_project(tmp_path / "project", project_env(tmp_path))


def copy_project(dest: Path, env: dict) -> Path:
    """`dest`: a git + DVC copy of the project (tracked and unignored files) with tiny params, committed."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("eval/", "data/", "models/", "reports/validation")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(merge(params, TINY), sort_keys=False))
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "test copy"], dest, env)
    return dest


TIMING = {"seconds", "mean_seconds"}  # wall-clock fields: the only ones allowed to differ between runs


def untimed(obj):
    """obj without its timing fields (at any depth)."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj
