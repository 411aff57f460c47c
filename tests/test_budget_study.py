"""The per-image budget study (studies/budget_*/): a DVC pipeline of rule x seed runs, training order
and a report; its aggregation, its report, and an end-to-end DVC run on the embedded data."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import ROOT, howlow, project_env, run
from howlow.io import DataError
from howlow.layout import Layout
from howlow.oracle.replay import order_schedules
from howlow.params import load_params
from howlow.studies.budget import report
from howlow.studies.budget.report import accuracy_at, aggregate, mean_std

STUDIES = sorted(p.parent for p in (ROOT / "studies").glob("budget_*/dvc.yaml"))


def fake_run(rule: str, seed: int, revealed: list[int], reached: list[bool], size=(10, 20)) -> dict:
    """A runs/<rule>-<seed>.json as budget-run writes it, for images a, b, ..."""
    h, w = size
    images = [
        {
            "id": chr(97 + i),
            "height": h,
            "width": w,
            "revealed": n,
            "revealed_pct": 100 * n / (h * w),
            "reached": ok,
            "rounds": 2,
            "final_accuracy": 0.99 if ok else 0.9,
            "seconds": 1.0,
            "curve": [[n // 2, 0.5], [n, 0.99 if ok else 0.9]],
        }
        for i, (n, ok) in enumerate(zip(revealed, reached))
    ]
    return {
        "rule": rule,
        "seed": seed,
        "split": "val",
        "machine": "test machine, 2026-01-01",
        "wall_seconds": 2.0,
        "images": images,
        "revealed": {im["id"]: [] for im in images},
    }


def test_aggregate_is_mean_and_std_over_seeds_of_per_seed_means_and_paired_differences():
    runs = {
        ("error_center", 0): fake_run("error_center", 0, [10, 20], [True, True]),
        ("error_center", 1): fake_run("error_center", 1, [12, 30], [True, False]),
        ("error_center", 2): fake_run("error_center", 2, [14, 16], [True, True]),
        ("random", 0): fake_run("random", 0, [20, 40], [True, False]),
        ("random", 1): fake_run("random", 1, [30, 30], [False, False]),
        ("random", 2): fake_run("random", 2, [18, 22], [True, True]),
    }
    agg = aggregate(runs, ["error_center", "random"], [0, 1, 2])
    ec, rnd = agg["table"]
    assert ec["rule"] == "error_center" and ec["seeds"] == 3
    assert ec["revealed_px"]["mean"] == pytest.approx(np.mean([15, 21, 15]))
    assert ec["revealed_px"]["std"] == pytest.approx(np.std([15, 21, 15], ddof=1))
    assert ec["reached_fraction"]["mean"] == pytest.approx(np.mean([1, 0.5, 1]))
    assert rnd["revealed_pct"]["mean"] == pytest.approx(np.mean([30, 30, 20]) / 2)
    (diff,) = agg["differences"]  # random minus error_center, paired by seed
    d = np.array([30 - 15, 30 - 21, 20 - 15], float)
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert diff["rule"] == "random" and diff["against"] == "error_center"
    assert diff["revealed_px"]["mean"] == pytest.approx(d.mean())
    assert diff["revealed_px"]["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert len(agg["per_seed"]) == 6


def test_report_writes_results_naming_frames_and_machine(tmp_path):
    layout = Layout(tmp_path / "budget_x")
    for rule, seed, px in (("error_center", 0, [10, 20]), ("random", 0, [20, 40]), ("stale", 5, [1, 1])):
        path = layout.root / "runs" / f"{rule}-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fake_run(rule, seed, px, [True, True])))
    params = load_params(ROOT / "params.yaml", ["budget.strategies=[error_center, random]", "budget.seeds=[0]"])
    out = report.run(params, layout)
    assert out["error_center"] == pytest.approx(7.5)
    res = layout.root / "results"
    rep = json.loads((res / "report.json").read_text())
    assert rep["setup"]["frames"] == ["a", "b"] and rep["machines"] == ["test machine, 2026-01-01"]
    assert [t["rule"] for t in rep["table"]] == ["error_center", "random"]  # the stale run is not read
    assert rep["differences"][0]["revealed_pct"]["ci95"] is None  # one seed: no interval
    assert json.loads((res / "metrics.json").read_text())["random"]["revealed_pct"] == pytest.approx(15)
    md = (res / "report.md").read_text()
    assert "a, b" in md and "test machine, 2026-01-01" in md and "| random | +7.500 |" in md
    assert (res / "curves.csv").read_text().startswith("strategy,image,revealed_pct,accuracy")
    assert (res / "curves.png").stat().st_size > 0


def test_report_names_a_missing_run(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "error_center-0.json").write_text(json.dumps(fake_run("error_center", 0, [5], [True])))
    params = load_params(ROOT / "params.yaml", ["budget.strategies=[error_center]", "budget.seeds=[0, 1]"])
    with pytest.raises(DataError, match=r"runs/error_center-1.json: not found"):
        report.run(params, Layout(tmp_path))
    done = howlow(
        "budget-report",
        "-p",
        str(ROOT / "params.yaml"),
        "budget.strategies=[error_center]",
        "budget.seeds=[0,1]",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "error_center-1.json" in done.stderr


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
    curves = [
        {"strategy": "r", "image": "a", "revealed_pct": x, "accuracy": y}
        for x, y in ((0.01, 0.5), (0.04, 0.9), (0.08, 0.8), (0.2, 0.99))
    ]
    curves += [
        {"strategy": "r", "image": "b", "revealed_pct": x, "accuracy": y} for x, y in ((0.01, 0.6), (0.03, 0.98))
    ]
    at = accuracy_at(curves, (0.05, 0.1))["r"]
    assert at[0.05] == pytest.approx((0.9 + 0.98) / 2) and at[0.1] == pytest.approx((0.8 + 0.98) / 2)


def test_every_study_shares_the_pipeline_and_sets_what_it_tracks():
    assert {p.name for p in STUDIES} >= {"budget_camvid", "budget_camvid_small", "budget_dubai_aerial"}
    pipeline = (STUDIES[0] / "dvc.yaml").read_text()
    for study in STUDIES:
        assert (study / "dvc.yaml").read_text() == pipeline, f"{study}/dvc.yaml differs from {STUDIES[0]}/dvc.yaml"
        overlay = yaml.safe_load((study / "params.yaml").read_text())
        # DVC needs every tracked key in the overlay, and the matrix reads its lists from there
        assert {"data", "oracle"} <= set(overlay), study
        assert {"strategies", "seeds", "split", "images", "training_order"} <= set(overlay["budget"]), study
        load_params([ROOT / "params.yaml", study / "params.yaml"])
    # the keys the commands set on the command line are not tracked in the project's params.yaml, so
    # the main pipeline's experiments on them do not invalidate a study's runs
    stages = yaml.safe_load(pipeline)["stages"]
    for name in ("run", "order", "report"):
        project_keys = next(p["../../params.yaml"] for p in stages[name]["params"] if isinstance(p, dict))
        assert not {"oracle", "oracle.strategy", "oracle.seed"} & set(project_keys), name


def _stages_run(out: str) -> list[str]:
    """The stages DVC ran, from its "Running stage '<dvc.yaml>:<stage>':" lines."""
    return re.findall(r"^Running stage '[^']*:([^':]+)':", out, re.M)


@pytest.mark.slow
def test_study_pipeline_end_to_end_with_experiments_and_run_cache(project):
    """dvc repro of a tiny study; `dvc exp run -S` adding a seed reruns only the new (rule, seed)s;
    with the lock and outputs gone, DVC's run cache restores every run without running it."""
    env = project_env(project.parent)
    study = project / "studies" / "budget_tiny"
    study.mkdir()
    shutil.copy(ROOT / "studies" / "budget_camvid_small" / "dvc.yaml", study / "dvc.yaml")
    shutil.copy(ROOT / "studies" / "budget_camvid_small" / ".dvcignore", study / ".dvcignore")
    (study / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"synthetic": {"n_train": 1, "n_val": 3, "height": 48, "width": 64}},
                "oracle": {"target_accuracy": 0.9},
                "budget": {
                    "strategies": ["error_center", "random"],
                    "seeds": [0],
                    "split": "val",
                    "images": 0,
                    "training_order": True,
                },
                "runtime": {"threads": 1, "oracle_batch": 3},
            }
        )
    )
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "tiny study"], project, env)

    first = run(["dvc", "repro", "studies/budget_tiny/dvc.yaml"], project, env).stdout
    assert sorted(_stages_run(first)) == ["order", "prepare", "report", "run@error_center-0", "run@random-0"]
    rep = json.loads((study / "results" / "report.json").read_text())
    assert rep["study"] == "budget_tiny" and rep["setup"]["frames"] == ["syn_val_000", "syn_val_001", "syn_val_002"]
    assert [t["rule"] for t in rep["table"]] == ["error_center", "random"]
    assert set(rep["training_order"]["final_accuracy"]) == {"reveal order", "all at once", "shuffled"}
    # replaying the reveal order with the same seed is the Oracle's own training
    assert rep["training_order"]["final_accuracy"]["reveal order"] == pytest.approx(
        rep["table"][0]["final_accuracy"]["mean"], abs=0.02
    )
    assert (study / "results" / "curves.png").stat().st_size > 0
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "tiny study results"], project, env)

    sweep = run(
        [
            "dvc",
            "exp",
            "run",
            "studies/budget_tiny/dvc.yaml",
            "-S",
            "studies/budget_tiny/params.yaml:budget.seeds=[0,1]",
        ],
        project,
        env,
    ).stdout
    assert sorted(_stages_run(sweep)) == ["report", "run@error_center-1", "run@random-1"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project, env).stdout)
    exps = [e for row in shown for e in (row.get("experiments") or [])]
    assert exps, "dvc exp show lists no experiment"
    params = exps[0]["revs"][0]["data"]["params"]["studies/budget_tiny/params.yaml"]["data"]
    assert params["budget"]["seeds"] == [0, 1]
    assert len(json.loads((study / "results" / "report.json").read_text())["per_seed"]) == 4

    # a later session on a fresh machine: the committed lock, runs and results, no DVC cache and no
    # prepared images; only prepare runs (its output hashes the same), every finished run is kept
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "seeds 0 and 1"], project, env)
    tracked = run(["git", "ls-files", "studies/budget_tiny/runs"], project, env).stdout.split()
    assert len(tracked) == 4, tracked  # the runs are in git, not only in DVC's cache
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(study / "data")
    again = run(["dvc", "repro", "studies/budget_tiny/dvc.yaml"], project, env).stdout
    assert _stages_run(again) == ["prepare"], again
    assert "up to date" in run(["dvc", "status", "studies/budget_tiny/dvc.yaml"], project, env).stdout


def test_cli_maps_the_budget_commands_to_their_stage_functions():
    from howlow import cli
    from howlow.studies.budget import order
    from howlow.studies.budget import run as run_stage

    assert cli.entry("budget-run") is run_stage.run
    assert cli.entry("budget-order") is order.run
    assert cli.entry("budget-report") is report.run
