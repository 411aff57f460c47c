"""The data-set level study (studies/dataset_*): a DVC pipeline of sources x budgets x seeds, the
report and MLflow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from conftest import ROOT, make_params, project_env, run
from howlow.io import DataError
from howlow.layout import Layout
from howlow.params import ParamsError
from howlow.studies.dataset import budget_sources, convergence, row_name, target_name
from howlow.studies.dataset.report import aggregate, load_rows, longer_rows, missing_text, paired, schedule_checks

# The embedded scenes at their smallest: 3 training and 2 val images of 48x64, one target, two
# seeds, 3 epochs of a width-4 U-Net (the project fixture's params.yaml already holds conftest.TINY).
TINY_STUDY = {
    "data": {"synthetic": {"n_train": 3, "n_val": 2, "height": 48, "width": 64}},
    "oracle": {"target_accuracy": 0.9},
    "train": {"width": 4, "depth": 2, "epochs": 3, "batch_size": 2, "crop": [32, 48], "eval_every": 2},
    "study": {
        "targets": [0.9],
        "seeds": [0, 1],
        "label_sources": ["pseudo", "random_pseudo", "sparse", "random"],
        "convergence_check": True,
        "convergence_target": 0.9,
        "tuned_on": ["syn"],
    },
    "runtime": {"threads": 1},
}


def _row(source, target, seed, miou, **extra):
    return {
        "source": source,
        "target": target,
        "seed": seed,
        "miou": miou,
        "pixel_accuracy": 0.9,
        "annotated_pct": 100 if source == "full" else 1,
        "annotated_px_per_image": 10,
        "train_seconds": 1,
        "oracle_reached_fraction": None if source == "full" else 1.0,
        "per_class_iou": {"a": miou},
        **extra,
    }


def test_aggregate_means_stds_and_percent_of_full():
    rows = [_row("full", None, s, m) for s, m in ((0, 0.8), (1, 0.6))]
    rows += [_row("pseudo", 0.9, s, m, per_class_iou={"a": None if s else m}) for s, m in ((0, 0.4), (1, 0.6))]
    agg = {a["source"]: a for a in aggregate(rows)}
    assert agg["full"]["miou_mean"] == pytest.approx(0.7)
    assert agg["full"]["miou_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert agg["pseudo"]["pct_of_full_mean"] == pytest.approx(np.mean([50, 100]))
    assert agg["pseudo"]["per_class_iou_mean"]["a"] == pytest.approx(0.4)  # None (absent class) is skipped


def test_paired_differences_pair_by_seed_at_each_budget():
    seeds = (0, 1, 2)
    rows = [_row("full", None, s, 0.5 + 0.1 * s) for s in seeds]
    rows += [_row("pseudo", t, s, 0.45 + 0.1 * s + (0.02 if t == 0.95 else 0)) for t in (0.9, 0.95) for s in seeds]
    rows += [_row("random", t, s, 0.40 + 0.1 * s + 0.01 * s) for t in (0.9, 0.95) for s in seeds]
    d = {(x["target"], x["comparison"]): x for x in paired(rows, [0.9, 0.95])}
    # no sparse rows: no pseudo - sparse; the others at both targets
    assert set(d) == {(t, f"pseudo - {o}") for t in (0.9, 0.95) for o in ("random", "full")}
    # pseudo - full is the same -0.05 for every seed: a zero-width interval; the seeds' spread of
    # 0.1 between them cancels because the differences are paired
    full = d[0.9, "pseudo - full"]
    assert full["n"] == 3 and full["mean"] == pytest.approx(-0.05) and full["ci95"] == pytest.approx([-0.05, -0.05])
    rnd = d[0.95, "pseudo - random"]  # 0.07, 0.06, 0.05
    half = 2.0 * 0.01 * 4.302653 / 2 / np.sqrt(3)  # t(0.975, 2) x sd / sqrt(n), sd = 0.01
    assert rnd["mean"] == pytest.approx(0.06) and rnd["ci95"] == pytest.approx([0.06 - half, 0.06 + half])
    # a study under way: a seed one source lacks is left out of that pair only
    part = [r for r in rows if not (r["source"] == "random" and r["target"] == 0.95 and r["seed"] == 2)]
    d = {(x["target"], x["comparison"]): x for x in paired(part, [0.9, 0.95])}
    assert d[0.95, "pseudo - random"]["seeds"] == [0, 1] and d[0.95, "pseudo - random"]["mean"] == pytest.approx(0.065)
    assert d[0.95, "pseudo - full"]["n"] == 3


def test_load_rows_reports_a_study_under_way(tmp_path):
    from howlow.io import write_json

    params = make_params({"study": {"targets": [0.9], "seeds": [0, 1], "label_sources": ["pseudo", "random"]}})
    for name in ("full-0", "full-1", "pseudo-0.9-0"):
        write_json(tmp_path / "rows" / f"{name}.json", {"name": name, "source": name.split("-")[0]})
    rows, conv, missing = load_rows(params, tmp_path)
    assert [r["name"] for r in rows] == ["full-0", "full-1", "pseudo-0.9-0"] and conv is None
    assert missing == ["pseudo-0.9-1", "random-0.9-0", "random-0.9-1", "full-x2"]
    assert missing_text(missing) == "pseudo-0.9 seeds 1; random-0.9 seeds 0, 1; full-x2"
    # with study.convergence_target, each budget source at twice the schedule is a row too
    longer = make_params(
        {"study": {"targets": [0.9], "seeds": [0, 1], "label_sources": ["pseudo", "random"], "convergence_target": 0.9}}
    )
    write_json(tmp_path / "rows" / "random-x2.json", {"name": "random-x2", "skipped": True})
    assert load_rows(longer, tmp_path)[2][-2:] == ["full-x2", "pseudo-x2"]
    assert longer_rows(longer, tmp_path) == []  # a skipped row is no check


def test_schedule_checks_pair_each_longer_row_with_its_usual_one():
    rows = [_row("full", None, 0, 0.50, epochs=30, machine="a"), _row("pseudo", 0.9, 0, 0.40, epochs=30, machine="a")]
    rows += [_row("pseudo", 0.9, 1, 0.90, epochs=30, machine="a")]  # another seed: not its pair
    conv = _row("full", None, 0, 0.505, epochs=60, machine="a")
    longer = [_row("pseudo", 0.9, 0, 0.42, epochs=60, machine="b"), _row("random", 0.9, 0, 0.3, epochs=60, machine="b")]
    checks = schedule_checks(rows, conv, longer)
    assert [(x["source"], x["epochs"], x["epochs_x2"]) for x in checks] == [("full", 30, 60), ("pseudo", 30, 60)]
    full, pseudo = checks  # random has no row at the usual schedule: nothing to compare
    assert full["change_pct"] == pytest.approx(1.0) and full["converged"]
    assert pseudo["change_pct"] == pytest.approx(5.0) and not pseudo["converged"]
    assert (pseudo["machine"], pseudo["machine_x2"]) == ("a", "b")


def test_convergence_target_is_one_of_the_targets_and_a_null_target_skips(tmp_path):
    with pytest.raises(ValidationError, match=r"study\.convergence_target"):
        make_params({"study": {"targets": [0.9, 0.95], "convergence_target": 0.98}})
    params = make_params({"study": {"label_sources": ["pseudo"]}, "train": {"label_sources": ["pseudo"]}})
    assert params.study.convergence_target is None  # params.yaml: full only
    assert convergence.run(params, Layout(tmp_path)) == {"skipped": True}
    assert json.loads((tmp_path / "rows" / "pseudo-x2.json").read_text()) == {"name": "pseudo-x2", "skipped": True}
    with pytest.raises(ParamsError, match=r"train\.label_sources"):
        convergence.run(
            params.model_copy(update={"train": params.train.model_copy(update={"label_sources": ["full"]})}),
            Layout(tmp_path),
        )


def test_names_follow_dvc_matrix_keys_and_full_is_not_a_budget_source(tmp_path):
    assert [target_name(t) for t in (0.9, 0.95, 1.0)] == ["0.9", "0.95", "1.0"]
    assert row_name("full", None, 2) == "full-2" and row_name("random", 0.95, 0) == "random-0.95-0"
    params = make_params({"study": {"label_sources": ["full", "pseudo"]}})
    with pytest.raises(ParamsError, match=r"study\.label_sources"):
        budget_sources(params)
    with pytest.raises(DataError, match=r"rows/full-0\.json: missing"):
        load_rows(make_params(), tmp_path)


def _repro(project, env, study, *args):
    return run(["dvc", "repro", *args, f"studies/{study}/dvc.yaml"], project, env).stdout


@pytest.mark.slow
def test_study_pipeline_trains_every_row_reports_tracks_and_reruns_nothing(project, tmp_path):
    env = project_env(tmp_path)
    study = project / "studies" / "dataset_tiny"
    study.mkdir()
    shutil.copy(ROOT / "studies" / "dataset_embedded" / "dvc.yaml", study / "dvc.yaml")
    (study / "params.yaml").write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "tiny study"], project, env)

    out = _repro(project, env, "dataset_tiny")
    assert "Running stage 'studies/dataset_tiny/dvc.yaml:train@random-0.9-1'" in out
    rep = json.loads((study / "results/report.json").read_text())
    # full once per seed; every other source once per budget and seed
    names = {r["name"] for r in rep["rows"]}
    sources = ("pseudo", "random_pseudo", "sparse", "random")
    assert names == {"full-0", "full-1"} | {f"{s}-0.9-{seed}" for s in sources for seed in (0, 1)}
    by = {r["name"]: r for r in rep["rows"]}
    # random and random clicks get exactly the Oracle's count; full labels nearly every pixel
    pixels = {by[f"{s}-0.9-1"]["annotated_pixels"] for s in sources}
    assert len(pixels) == 1 and pixels.pop() > 0
    assert by["full-0"]["annotated_pct"] > 90
    assert rep["frames"]["train"] == ["syn_train_000", "syn_train_001", "syn_train_002"]
    assert len(rep["frames"]["val"]) == 2
    assert {d["comparison"] for d in rep["paired"]} == {
        f"pseudo - {o}" for o in ("random", "random_pseudo", "sparse", "full")
    }
    # the annotations are in git (cache: false), one file per image, and the budget counts them
    anns = sorted((study / "annotations").glob("syn_*.json"))
    assert [a.stem for a in anns] == rep["frames"]["train"]
    ignored = ["git", "check-ignore", "-q", "studies/dataset_tiny/annotations/syn_train_000.json"]
    assert subprocess.run(ignored, cwd=project, env=env).returncode == 1  # not ignored: git keeps it
    budget = json.loads((study / "results/budget.json").read_text())
    clicks = [json.loads(a.read_text())["targets"]["0.9"]["clicks"] for a in anns]
    assert budget["annotated"] == 3 and budget["targets"]["0.9"]["all"]["mean_px"] == pytest.approx(np.mean(clicks))
    assert budget["tuned_on"] == ["syn"] and budget["held_out"] == [] and budget["targets"]["0.9"]["held_out"] is None
    assert by["pseudo-0.9-0"]["annotated_pixels"] == sum(clicks)
    assert all(d["n"] == 2 and len(d["ci95"]) == 2 for d in rep["paired"])
    conv = rep["convergence"]
    assert (conv["seed"], conv["epochs"], conv["epochs_x2"]) == (0, 3, 6) and conv["miou"] == by["full-0"]["miou"]
    # every source at twice the schedule too (study.convergence_target), beside its seed-0 row
    checks = {x["source"]: x for x in rep["schedule_checks"]}
    assert set(checks) == {"full", *sources}
    assert all((x["seed"], x["epochs"], x["epochs_x2"]) == (0, 3, 6) for x in checks.values())
    assert checks["sparse"]["miou"] == by["sparse-0.9-0"]["miou"]
    longer = json.loads((study / "rows/sparse-x2.json").read_text())
    assert (
        checks["sparse"]["miou_x2"] == longer["miou"]
        and longer["annotated_pixels"] == by["sparse-0.9-0"]["annotated_pixels"]
    )
    md = (study / "results/report.md").read_text()
    assert "| pseudo | 0.9 |" in md and "| 0.9 | pseudo - random_pseudo |" in md and "syn: 3" in md
    assert rep["machines"] and "Machine: " in md
    assert "| 0.9 all | 3 |" in md and "| 0.9 | " in md.split("Pseudo-labels against")[1]
    ends = {(e["source"], e["target"]): e for e in rep["curve_ends"]}  # val mIoU after epochs 2 and 3
    assert set(ends) == {("full", None)} | {(s, 0.9) for s in sources}
    assert all(e["epochs"] == [2, 3] and e["seeds"] == 2 for e in ends.values())
    full_end = np.mean([by[f"full-{k}"]["miou"] for k in (0, 1)])
    assert ends["full", None]["miou"][1] == pytest.approx(full_end) and "| full | - | 2 |" in md
    for q in rep["sparse_quality"].values():  # annotated at the training scale: a click is its pixel's truth
        assert q["agreement"] == 1.0 and q["labelled_px_per_image"] == q["clicks_per_image"] > 0
    assert "| 0.9 | " in md.split("The clicks alone (`sparse`) at the training scale")[1]
    for f in ("report.png", "learning_curve.png", "curve.csv", "metrics.json"):
        assert (study / "results" / f).stat().st_size > 0
    # MLflow: one run per row and the convergence row, in the study's experiment, a model each
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["howlow-dataset_tiny"], output_format="list")
    assert sorted(r.info.run_name for r in runs) == sorted(names | {"full-x2"} | {f"{s}-x2" for s in sources})
    assert len({tuple(sorted(r.data.params)) for r in runs}) == 1
    longer = next(r for r in runs if r.info.run_name == "full-x2")
    assert longer.data.params["train.epochs"] == "6" and longer.data.metrics["miou"] == pytest.approx(conv["miou_x2"])
    pseudo = next(r for r in runs if r.info.run_name == "pseudo-0.9-1")
    assert pseudo.data.metrics["miou"] == pytest.approx(by["pseudo-0.9-1"]["miou"])
    assert mlflow.search_logged_models(experiment_ids=[pseudo.info.experiment_id], output_format="list")

    # a second repro reruns nothing, and logs nothing again
    again = _repro(project, env, "dataset_tiny")
    assert "Running stage" not in again, again
    assert len(mlflow.search_runs(experiment_names=["howlow-dataset_tiny"], output_format="list")) == len(runs)

    # a fresh clone holds the annotations, the pseudo-labels, the rows and results (git) but no DVC
    # cache: with --allow-missing nothing trains again; the pseudo-labels rebuilt from the
    # annotations (the Oracle does not run again) are the same bytes
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "study results"], project, env)
    tracked = run(["git", "ls-files", "studies/dataset_tiny"], project, env).stdout.split()
    assert {f"studies/dataset_tiny/rows/{n}.json" for n in names} <= set(tracked)
    assert not [f for f in tracked if "/networks/" in f and not f.endswith(".gitignore")]
    assert any(f.endswith(".png") and "/targets/0.9/data/pseudo/" in f for f in tracked)
    assert not [f for f in tracked if f.endswith("_conf.png")]  # confidence maps only for `confident`
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path, env)
    fresh = _repro(clone, env, "dataset_tiny", "--allow-missing")
    assert "Running stage" not in fresh, fresh
    run(["dvc", "repro", "studies/dataset_tiny/dvc.yaml:prepare"], clone, env)  # the images: DVC cache only
    rebuilt = run(["dvc", "repro", "-f", "-s", "studies/dataset_tiny/dvc.yaml:propagate"], clone, env).stdout
    assert "Running stage 'studies/dataset_tiny/dvc.yaml:annotate'" not in rebuilt
    assert "Running stage 'studies/dataset_tiny/dvc.yaml:propagate'" in rebuilt
    for png in sorted((study / "targets").rglob("*.png")):
        assert png.read_bytes() == (clone / png.relative_to(project)).read_bytes(), png
    assert not run(["git", "status", "--porcelain"], clone, env).stdout.strip()  # the same lock and results

    # the study's networks scored on other frames (the synthetic generator with another seed)
    out = run(["howlow", "study-evaluate", "-p", "../../params.yaml", "-p", "params.yaml", "data.seed=7"], study, env)
    ext = json.loads((study / "results/external/synthetic.json").read_text())
    assert len(ext["rows"]) == len(names) and ext["frames"] == ["syn_val_000", "syn_val_001"]
    assert {a["source"] for a in ext["aggregate"]} == {"full", *sources} and "synthetic.md" in out.stdout

    # a third seed: only its rows (and the report and tracking) are stale, the finished rows are not
    overlay = yaml.safe_load((study / "params.yaml").read_text())
    overlay["study"]["seeds"] = [0, 1, 2]
    (study / "params.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    status = subprocess.run(
        ["dvc", "status", "--json", "studies/dataset_tiny/dvc.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stale = {name.split(":")[-1] for name in json.loads(status)}
    assert stale == {"full@2", "report"} | {f"train@{s}-0.9-2" for s in sources}, stale

    # scripts/run_rows.py trains the missing rows two at a time and records each in dvc.lock
    script = [sys.executable, str(ROOT / "scripts" / "run_rows.py"), "studies/dataset_tiny", "--jobs", "2"]
    out = run(script, project, env).stdout
    assert "5 of 5 rows trained and recorded" in out, out
    for name in ["full-2", *(f"{s}-0.9-2" for s in sources)]:
        assert json.loads((study / "rows" / f"{name}.json").read_text())["seed"] == 2
    status = run(["dvc", "status", "--json", "studies/dataset_tiny/dvc.yaml"], project, env).stdout
    assert {name.split(":")[-1] for name in json.loads(status)} == {"report", "track"}
    assert "0 missing rows" in run([*script, "--dry"], project, env).stdout


@pytest.mark.slow
def test_oracle_at_a_finer_scale_than_training(tmp_path, one_thread, monkeypatch, capsys):
    """study.oracle_scale (studies/dataset_camvid): the Oracle annotates 48x64 images in
    data/prepared_oracle, the data-set networks train on the same images at 24x32; every sparse
    source costs the Oracle's clicks at the target, as a share of the 48x64 image. A killed propagate
    resumes to the same bytes."""
    from howlow.data import load_prepared
    from howlow.layout import Layout
    from howlow.stages import prepare
    from howlow.studies.dataset import annotate, annotations, propagate, report, rows

    (tmp_path / ".dvc").mkdir()  # the project root, where a relative data.source is read
    params = make_params(
        {
            **TINY_STUDY,
            "data": {**TINY_STUDY["data"], "scale": 0.5},
            "oracle": {"target_accuracy": 0.9, "steps_per_round": 30},
            "train": {**TINY_STUDY["train"], "crop": [16, 24], "epochs": 1},
            "study": {
                **TINY_STUDY["study"],
                "targets": [0.8, 0.9],
                "oracle_scale": 1.0,
                "label_sources": ["pseudo", "confident", "random_pseudo", "sparse", "random"],
            },
        }
    )
    layout = Layout(tmp_path)
    prepare.run(params, layout)
    annotate.prepare_oracle(params, layout)
    annotate.annotate(params, layout)
    annotate.budget(params, layout)
    propagate.propagate(params, layout)
    whole = {p: p.read_bytes() for p in sorted((tmp_path / "targets").rglob("*")) if p.is_file()}
    assert not (tmp_path / "targets" / propagate.STAMPS).exists()

    # killed after two of its six image runs, propagate resumes from them: the same bytes as one run
    real = propagate.propagate_clicks

    def killed_after_two(items, *args):
        calls = iter(range(3))

        def done(key, out):
            if next(calls) == 2:
                raise KeyboardInterrupt
            args[-1](key, out)

        real(items, *args[:-1], done)

    (tmp_path / "targets/0.8/data/pseudo/metrics.json").unlink()  # as if never finished
    monkeypatch.setattr(propagate, "propagate_clicks", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        propagate.propagate(params, layout)
    monkeypatch.setattr(propagate, "propagate_clicks", real)
    capsys.readouterr()
    propagate.propagate(params, layout)
    assert "[propagate] 2 of 6 done before" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted((tmp_path / "targets").rglob("*")) if p.is_file()} == whole

    anns = annotations.load_annotations(tmp_path)
    assert {(a["height"], a["width"]) for a in anns} == {(48, 64)}
    for a in anns:  # one run to the top target; the lower target is a prefix of its clicks
        low, top = a["targets"]["0.8"], a["targets"]["0.9"]
        assert low["round"] <= top["round"] and low["clicks"] <= top["clicks"] == len(a["clicks"])
    revealed = sum(a["targets"]["0.9"]["clicks"] for a in anns)
    assert (tmp_path / "targets/0.8/data/random_pseudo" / f"{anns[0]['id']}.png").is_file()
    assert (tmp_path / "targets/0.8/data/pseudo" / f"{anns[0]['id']}_conf.png").is_file()  # `confident` trains
    for source in ("pseudo", "confident", "random_pseudo", "sparse", "random"):
        p = params.model_copy(update={"train": params.train.model_copy(update={"label_sources": [source]})})
        row = rows.train(p, layout)
        assert row["name"] == f"{source}-0.9-0" and row["annotated_pixels"] == revealed
        assert row["annotated_pct"] == pytest.approx(100 * revealed / (3 * 48 * 64))
        assert (tmp_path / "networks" / row["name"] / f"{source}.pt").is_file()
        assert (tmp_path / "rows" / f"{row['name']}.json").is_file()
    # the clicks alone at half the Oracle's scale: up to four clicks share a training pixel, and a
    # click on a class edge may name another class than the pixel's downscaled truth
    quality = report.sparse_quality(params, layout, load_prepared(layout.root / "data/prepared"), [0.8, 0.9])
    top = quality["0.9"]
    assert top["clicks_per_image"] == revealed / 3
    assert 0 < top["labelled_px_per_image"] <= top["clicks_per_image"] and 0 < top["agreement"] <= 1
    assert quality["0.8"]["clicks_per_image"] <= top["clicks_per_image"]
    with pytest.raises(ParamsError, match=r"oracle\.target_accuracy"):
        wrong = params.oracle.model_copy(update={"target_accuracy": 0.95})
        one = params.train.model_copy(update={"label_sources": ["pseudo"]})
        rows.train(params.model_copy(update={"oracle": wrong, "train": one}), layout)


def test_cli_lists_the_study_commands_and_bad_input_exits_2(capsys):
    from howlow.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    commands = ("annotate", "budget", "propagate", "train", "convergence", "report", "track", "evaluate")
    assert all(f"study-{c}" in out for c in commands)
    params = str(ROOT / "params.yaml")
    assert main(["study-train", "-p", params, "study.label_sources=[full,pseudo]", "train.label_sources=[pseudo]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.label_sources: remove 'full'" in err[0]
    assert main(["study-train", "-p", params, "train.label_sources=[pseudo]", "oracle.target_accuracy=0.5"]) == 2
    assert "oracle.target_accuracy: 0.5 is not one of study.targets" in capsys.readouterr().err


def test_run_rows_trains_seed_by_seed_and_matches_patterns():
    """scripts/run_rows.py: a batch stopped early leaves whole seeds (which pair), and --only takes a
    prefix or a glob."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_rows", ROOT / "scripts" / "run_rows.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = ["pseudo-0.95-1", "random-0.95-0", "full-x2", "pseudo-0.95-0", "random-0.95-1", "full-12"]
    assert sorted(names, key=mod.seed_of) == [
        "full-x2",
        "random-0.95-0",
        "pseudo-0.95-0",
        "pseudo-0.95-1",
        "random-0.95-1",
        "full-12",
    ]
    stages = ["full@0", "train@pseudo-0.95-0", "train@random-0.9-1", "convergence"]
    assert [s for s in stages if mod.selected(s, "train@")] == stages[1:3]
    assert [s for s in stages if mod.selected(s, "train@*-0.95-*")] == ["train@pseudo-0.95-0"]
    assert [s for s in stages if mod.selected(s, "")] == stages
