"""Crash-safe resume of the oracle stage: `kill -9` a real `howlow oracle` mid-stage, check that nothing
in data/oracle is half-written, rerun, and check that finished images were skipped and that every output
equals that of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import howlow, untimed, write_params

pytestmark = pytest.mark.slow

N_TRAIN = 6
# Slow enough per image (~1-3 s on a loaded 2-core machine) to be caught mid-stage: a target of 100 %
# makes most images run many rounds, with many steps per round. One torch thread: on a busy machine
# several threads per process slow the run down a lot, and this test is about resuming, not speed.
# One image per batch: images that reach 100 % or run out of error pixels leave early, and slots training
# on unequal pixel counts agree with another batch composition only to float rounding (howlow.oracle.engine).
# A resumed run batches the images differently from an uninterrupted one, so only one-image batches
# must give the same outputs bit for bit.
EXTRA = {
    "data": {"synthetic": {"n_train": N_TRAIN, "n_val": 2}},
    "oracle": {"target_accuracy": 1.0, "steps_per_round": 100},
    "runtime": {"threads": 1, "oracle_batch": 1},
}
IDS = [f"syn_train_{i:03d}" for i in range(N_TRAIN)]


def prepared_folder(folder: Path) -> Path:
    write_params(folder, EXTRA)
    done = howlow("prepare", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "data" / "oracle"


def outputs(out: Path) -> dict:
    """Every result of the stage, timing fields dropped; the networks' weights as tensors."""
    with open(out / "summary.csv", newline="") as fh:
        summary = untimed(list(csv.DictReader(fh)))
    return {
        "json": {p.name: untimed(json.loads(p.read_text())) for p in sorted(out.glob("*.json"))},
        "summary": summary,
        "pt": {p.name: torch.load(p, weights_only=True) for p in sorted(out.glob("*.pt"))},
    }


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
    mtimes = {p.name: p.stat().st_mtime_ns for p in done}

    rerun = howlow("oracle", cwd=tmp_path / "killed")
    assert rerun.returncode == 0, rerun.stderr
    # finished images were skipped: their results were not rewritten
    assert {p.name: (out / p.name).stat().st_mtime_ns for p in done} == mtimes
    # the stage removed the temp files the kill left behind (DVC would cache them with data/oracle)
    assert not half.exists() and not list(out.glob(".*.tmp"))
    assert not list((tmp_path / "killed/eval/plots").glob(".*.tmp"))

    ref = prepared_folder(tmp_path / "uninterrupted")
    done_ref = howlow("oracle", cwd=tmp_path / "uninterrupted")
    assert done_ref.returncode == 0, done_ref.stderr
    got, want = outputs(out), outputs(ref)
    assert sorted(got["json"]) == sorted([f"{i}.json" for i in IDS] + ["totals.json"])
    assert got["json"] == want["json"]
    assert got["summary"] == want["summary"]
    assert sorted(got["pt"]) == sorted(want["pt"]) == sorted(f"{i}.pt" for i in IDS)
    for name, state in want["pt"].items():
        assert state.keys() == got["pt"][name].keys()
        assert all(torch.equal(state[k], got["pt"][name][k]) for k in state), name
    assert (tmp_path / "killed/eval/plots/oracle_curves.csv").read_text() == (
        tmp_path / "uninterrupted/eval/plots/oracle_curves.csv"
    ).read_text()
