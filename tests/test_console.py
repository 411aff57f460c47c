"""What a person sees when running `howlow` stages: log lines with levels, progress with an ETA (a bar
on a terminal, periodic lines in a log), `-v` and `-q`, keys in `--help`, and short summaries."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from conftest import ROOT, howlow, write_params

LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) howlow\.[\w.]+: ")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A folder with tiny params (3 training images) and its prepared data."""
    folder = tmp_path_factory.mktemp("console")
    write_params(folder, {"runtime": {"oracle_batch": 1, "threads": 1}})
    done = howlow("prepare", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


def on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """`python -m howlow.cli <args>` with stderr on a pseudo-terminal 100 columns wide; its exit status
    and what the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "howlow.cli", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(), shown.decode(errors="replace")


def test_oracle_logs_progress_with_eta_and_levels(tiny):
    done = howlow("oracle", cwd=tiny)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines  # every line has its time and level
    assert re.search(r"INFO howlow\.stages\.oracle: oracle: 1/3 images \(33 %\), \d+ s elapsed, ETA \d+", done.stderr)
    assert "oracle: 3/3 images (100 %)" in done.stderr
    assert "DEBUG" not in done.stderr  # per-image detail only with -v
    summary = json.loads(done.stdout)
    assert summary["images"] == 3 and 0 < summary["mean_revealed_pct"] < 100


def test_oracle_on_a_terminal_draws_a_bar_with_eta_and_v_adds_each_image(tiny):
    status, shown = on_a_terminal(["oracle", "-v"], tiny)
    assert status == 0, shown
    assert re.search(r"oracle: 100%\|█+\| 3/3 \[\d\d:\d\d<\d\d:\d\d", shown), shown  # elapsed<remaining
    assert len(re.findall(r"DEBUG howlow\.stages\.oracle: syn_train_00\d: \d+ px", shown)) == 3
    assert "INFO howlow.stages.oracle: oracle: 1/3" not in shown  # the bar, not the log lines


def test_quiet_prints_nothing_and_train_summarises_without_loss_lists(tiny):
    if not (tiny / "data/oracle/summary.csv").is_file():
        assert howlow("oracle", cwd=tiny).returncode == 0
    quiet = howlow("-q", "pseudolabel", cwd=tiny)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", quiet
    done = howlow("train", "train.label_sources=[full]", "train.epochs=2", cwd=tiny)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert set(summary) == {"full"} and summary["full"]["epochs"] == 2 and "final_loss" in summary["full"]
    assert "[" not in done.stdout  # no loss list, no learning curve, no per-epoch seconds
    assert "train full: 2/2 epochs (100 %)" in done.stderr


def test_help_lists_the_keys_a_stage_reads(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "overlay.yaml").write_text("oracle:\n  target_accuracy: 0.9\n")
    done = howlow("oracle", "-p", "params.yaml", "-p", "overlay.yaml", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    keys = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  oracle.")}
    assert "pixel accuracy, void excluded" in keys["oracle.target_accuracy"]  # its meaning
    assert keys["oracle.target_accuracy"].split()[1] == "0.9"  # its value, after the -p files
    assert "runtime.threads" in done.stdout and "train.epochs" not in done.stdout
    version = howlow("--version", cwd=tmp_path)
    assert version.returncode == 0 and re.fullmatch(r"howlow \d+\.\d+\.\d+\S*\n", version.stdout)


def test_the_summary_keeps_each_sources_numbers_and_drops_lists_and_deeper_detail():
    from howlow.cli import summary

    evaluated = {
        "oracle": {"images": 3, "mean_revealed_pct": 0.3},
        "dataset": {"full": {"miou": 0.8, "per_class_iou": {"sky": 0.9}, "history": [1, 2]}},
    }
    assert summary(evaluated) == {"oracle": {"images": 3, "mean_revealed_pct": 0.3}, "dataset": {"full": {"miou": 0.8}}}
