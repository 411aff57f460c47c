"""Same seed, same machine, CPU: two separate `howlow oracle` runs (separate processes, separate folders)
reveal the same pixels and report the same metrics; another `oracle.seed` reveals other pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import TINY, howlow, untimed, write_params


def oracle_run(folder: Path, *overrides: str) -> Path:
    # one torch thread: the same results as with more (same machine, same count), and on a busy 2-core
    # machine several threads per process make the oracle many times slower
    write_params(folder, {"runtime": {"threads": 1}})
    for stage in ("prepare", "oracle"):
        done = howlow(stage, *overrides, cwd=folder)
        assert done.returncode == 0, f"howlow {stage} failed in {folder}:\n{done.stderr[-3000:]}"
    return folder / "data" / "oracle"


def results(out: Path) -> dict[str, dict]:
    return {p.stem: untimed(json.loads(p.read_text())) for p in sorted(out.glob("*.json"))}


def summary_rows(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as fh:
        return untimed(list(csv.DictReader(fh)))


def test_same_seed_same_results_other_seed_other_pixels(tmp_path):
    a = oracle_run(tmp_path / "a")
    b = oracle_run(tmp_path / "b")
    n_train = TINY["data"]["synthetic"]["n_train"]
    ids = [f"syn_train_{i:03d}" for i in range(n_train)]

    ra, rb = results(a), results(b)
    assert sorted(ra) == sorted([*ids, "totals"])
    for image_id in ids:
        assert ra[image_id]["revealed"], image_id
        # revealed pixels [y, x, class, round] in reveal order, the whole curve, the summary
        assert ra[image_id] == rb[image_id], image_id
    assert ra["totals"] == rb["totals"]
    assert summary_rows(a) == summary_rows(b)
    assert (tmp_path / "a/eval/plots/oracle_curves.csv").read_text() == (
        tmp_path / "b/eval/plots/oracle_curves.csv"
    ).read_text()

    c = oracle_run(tmp_path / "c", "oracle.seed=1")
    rc = results(c)
    assert sorted(rc) == sorted(ra)
    # the seed drives the initial random pixels of every image: all of them change
    for image_id in ids:
        assert rc[image_id]["revealed"] != ra[image_id]["revealed"], image_id
        assert rc[image_id]["fingerprint"] != ra[image_id]["fingerprint"], image_id
