"""Crash-safe resume of the oracle stage: `kill -9` a real `howlow oracle` mid-stage, check that nothing
in data/oracle is half-written, rerun, and check that finished groups of images were skipped and that
every output is, byte for byte, that of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import howlow, write_params

pytestmark = pytest.mark.slow

N_TRAIN = 6
BATCH = 2
# Slow enough per image (~1-3 s on a loaded 2-core machine) to be caught mid-stage: a target of 100 %
# makes most images run many rounds, with many steps per round. One torch thread: on a busy machine
# several threads per process slow the run down a lot, and this test is about resuming, not speed.
# Two images per batch: the stage trains fixed groups of `oracle_batch` images (stages.oracle), and a
# resumed run redoes a group not wholly finished, so its bytes are those of an uninterrupted run.
EXTRA = {
    "data": {"synthetic": {"n_train": N_TRAIN, "n_val": 2}},
    "oracle": {"target_accuracy": 1.0, "steps_per_round": 100},
    "runtime": {"threads": 1, "oracle_batch": BATCH},
}
IDS = [f"syn_train_{i:03d}" for i in range(N_TRAIN)]
GROUPS = [IDS[i : i + BATCH] for i in range(0, N_TRAIN, BATCH)]


def prepared_folder(folder: Path) -> Path:
    write_params(folder, EXTRA)
    done = howlow("prepare", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "data" / "oracle"


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_killed_oracle_resumes_skipping_finished_images(tmp_path):
    out = prepared_folder(tmp_path / "killed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "howlow.cli", "oracle"],
        cwd=tmp_path / "killed",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*.json")):
            assert proc.poll() is None, f"oracle ended before its first image:\n{proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no image finished within 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # killed mid-stage: some images done, not all, no stage-level outputs yet
    done = sorted(out.glob("*.json"))
    assert 1 <= len(done) < N_TRAIN, [p.name for p in done]
    assert not (out / "summary.csv").exists() and not (out / "totals.json").exists()
    # nothing half-written where a result is read: every json parses and is a complete result, and its
    # network is there (it is written before the json)
    for path in done:
        result = json.loads(path.read_text())
        assert result["id"] == path.stem and result["revealed"] and result["summary"]["revealed"] > 0
        assert (out / f"{path.stem}.pt").is_file()
        torch.load(out / f"{path.stem}.pt", weights_only=True)
    # any leftovers of the kill are hidden temp files (`.<name>.<random>.tmp`), never a result's name
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} <= {f"{i}.json" for i in IDS} | {
        f"{i}.pt" for i in IDS
    }
    # plant what a kill in the middle of a write leaves: half a json, in a temp file
    half = out / f".{IDS[-1]}.json.k1ll3d.tmp"
    half.write_text('{"id": "syn_train_005", "revealed": [[1, 2')
    finished = [g for g in GROUPS if all((out / f"{i}.json").is_file() for i in g)]
    kept = [out / f"{i}.{ext}" for g in finished for i in g for ext in ("json", "pt")]
    mtimes = {p.name: p.stat().st_mtime_ns for p in kept}

    rerun = howlow("oracle", cwd=tmp_path / "killed")
    assert rerun.returncode == 0, rerun.stderr
    # finished groups were skipped: their results were not rewritten
    assert {p.name: p.stat().st_mtime_ns for p in kept} == mtimes
    # the stage removed the temp files the kill left behind (DVC would cache them with data/oracle)
    assert not half.exists() and not list(out.glob(".*.tmp"))
    assert not list((tmp_path / "killed/eval/plots").glob(".*.tmp"))

    ref = prepared_folder(tmp_path / "uninterrupted")
    done_ref = howlow("oracle", cwd=tmp_path / "uninterrupted")
    assert done_ref.returncode == 0, done_ref.stderr
    # every output the same bytes: weights, curves, summaries, plot data
    got, want = contents(out), contents(ref)
    assert sorted(got) == sorted([f"{i}.{e}" for i in IDS for e in ("json", "pt")] + ["summary.csv", "totals.json"])
    assert got == want
    plots = "eval/plots/oracle_curves.csv"
    assert (tmp_path / "killed" / plots).read_bytes() == (tmp_path / "uninterrupted" / plots).read_bytes()
