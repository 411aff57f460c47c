"""The per-image budget study (studies/budget_*): rules x seeds, training order, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import howlow, project_env, write_params
from howlow.io import read_csv
from howlow.oracle.replay import order_schedules
from howlow.studies.budget import mean_std


@pytest.mark.slow
def test_budget_report_and_training_order(tmp_path):
    env = project_env(tmp_path)
    write_params(tmp_path, {"data": {"synthetic": {"n_val": 2}},
                            "budget": {"strategies": ["error_center", "random"], "seeds": [0, 1], "images": 2},
                            "runtime": {"threads": 1, "oracle_batch": 2}})
    done = howlow("budget", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rep = json.loads((tmp_path / "reports/oracle_budget/synthetic.json").read_text())
    assert [t["strategy"] for t in rep["table"]] == ["error_center", "random"]
    assert len(rep["per_image"]) == 2 * 2 * 2
    for t in rep["table"]:  # the table is the mean over seeds of the per-seed means over images
        per_seed = [np.mean([r["revealed_pct"] for r in rep["per_image"]
                             if r["strategy"] == t["strategy"] and r["seed"] == s]) for s in (0, 1)]
        assert t["revealed_pct"]["mean"] == pytest.approx(np.mean(per_seed))
        assert t["revealed_pct"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    # replaying the reveal order with the same seed is the Oracle's own training: same final accuracy
    ec = next(t for t in rep["table"] if t["strategy"] == "error_center")
    assert rep["training_order"]["reveal order"] == pytest.approx(ec["final_accuracy"]["mean"], abs=0.02)
    assert set(rep["training_order"]) == {"reveal order", "all at once", "shuffled"}
    md = (tmp_path / "reports/oracle_budget.md").read_text()
    assert "| error_center |" in md and "Training order" in md
    assert (tmp_path / "reports/oracle_budget/synthetic_curves.png").stat().st_size > 0


def test_budget_table_shows_a_spread_only_over_several_seeds():
    stat = {"mean": 0.23494, "std": 0.0}
    assert mean_std(stat, 3, 1) == "0.235"
    assert mean_std({"mean": 0.23494, "std": 0.0031}, 3, 3) == "0.235 ± 0.003"


def test_order_schedules_keep_the_same_pixels_and_round_sizes():
    revealed = [[0, 1, 0, 0], [2, 2, 1, 0], [1, 0, 0, 1], [3, 3, 2, 1], [0, 0, 1, 2]]
    s = order_schedules(revealed, width=4, rng=np.random.default_rng(0))
    flat = sorted(y * 4 + x for y, x, _, _ in revealed)
    assert [list(r) for r in s["reveal order"]] == [[1, 10], [1, 4, 10, 15], flat]
    assert all(list(r) == flat for r in s["all at once"]) and len(s["all at once"]) == 3
    assert [len(r) for r in s["shuffled"]] == [2, 4, 5] and list(s["shuffled"][-1]) == flat


def test_accuracy_at_a_budget_takes_the_last_point_before_it():
    from howlow.studies.budget import accuracy_at

    curves = [{"strategy": "r", "image": "a", "revealed_pct": x, "accuracy": y}
              for x, y in ((0.01, 0.5), (0.04, 0.9), (0.08, 0.8), (0.2, 0.99))]
    curves += [{"strategy": "r", "image": "b", "revealed_pct": x, "accuracy": y} for x, y in ((0.01, 0.6), (0.03, 0.98))]
    at = accuracy_at(curves, (0.05, 0.1))["r"]
    assert at[0.05] == pytest.approx((0.9 + 0.98) / 2) and at[0.1] == pytest.approx((0.8 + 0.98) / 2)
