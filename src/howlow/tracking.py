"""Every MLflow call howlow makes: a pipeline run, a study's rows, and the budget comparison.

One parent run per pipeline run, named `<dataset>-<strategy>-t<target>-s<seed>` (on a person's clicks
`<dataset>-label-studio-s<seed>`, labelstudio/dvc.yaml), with every param
(dotted names such as `oracle.target_accuracy`, so the MLflow UI can put budgets side by side), the
aggregate metrics, the figures and one logged model per label source. Under it, one nested run per
image with its Oracle curve as step metrics (step = revealed pixel count).

Logging reads the stage outputs that DVC tracks, so the store can always be rebuilt from them.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .console import Progress
from .data import dataset_digest
from .io import DataError, read_csv, read_json, write_csv
from .layout import Layout, project_root
from .names import IMAGE_CURVES, IMAGE_FINAL, metric_names, read_metrics
from .params import Params, flatten
from .plots import compare_figure

EXPERIMENT_KIND = "mlflow.experimentKind"  # the tag MLflow 3's UI reads to choose an experiment's first page
PIP_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1"]  # skips MLflow's slow requirement inference

log = logging.getLogger(__name__)


def tracking_uri(params: Params) -> str:
    """params.tracking.tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project."""
    return (
        params.tracking.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{project_root() / 'mlflow.db'}"
    )


def logged_times(layout: Layout, image_ids: Sequence[str], sources: Sequence[str]) -> dict[str, float]:
    """The run's times from the logs (Layout.logs; absent where this machine did not run a stage):
    the Oracle's mean seconds per image and each source's training seconds."""
    out = {}
    oracle = [layout.logs / "oracle" / f"{i}.json" for i in image_ids]
    if oracle and all(p.is_file() for p in oracle):
        out["oracle.mean_seconds"] = float(np.mean([read_json(p)["seconds"] for p in oracle]))
    for source in sources:
        if (p := layout.logs / "train" / f"{source}.json").is_file():
            out[f"dataset.{source}.train_seconds"] = float(read_json(p)["seconds"])
    return out


HUMAN = "label-studio"  # the annotator of a run on a person's clicks (howlow.labelstudio.export)


def annotator(layout: Layout) -> str:
    """Who revealed the run's pixels: `label-studio` where data/oracle is an imported export (it
    names the export in label_studio.json), else `oracle`."""
    return HUMAN if (layout.oracle / "label_studio.json").is_file() else "oracle"


def budget_tags(params: Params, who: str = "oracle") -> dict[str, str]:
    """The budget's keys, as tags of the pipeline run and of each of its image runs: runs can be
    filtered and compared by them at either level. A person has no selection rule and no target (they
    stop where the map looks right): their runs' strategy is `label-studio`, with no target."""
    if who == HUMAN:
        return {"dataset": params.dataset_name, "annotator": who, "strategy": who, "seed": str(params.oracle.seed)}
    return {
        "dataset": params.dataset_name,
        "annotator": who,
        "strategy": params.oracle.strategy,
        "target": f"{params.oracle.target_accuracy:g}",
        "seed": str(params.oracle.seed),
    }


def run_name(params: Params, who: str = "oracle") -> str:
    o = params.oracle
    if who == HUMAN:
        return f"{params.dataset_name}-{who}-s{o.seed}"
    return f"{params.dataset_name}-{o.strategy}-t{o.target_accuracy:g}-s{o.seed}"


def git_commit(root: Path) -> str | None:
    """The commit checked out in `root` (None outside git): the run's code, as MLflow's UI shows it."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def _provenance(mlflow, params: Params, prepared_dir: Path) -> None:
    """The active run's data set (an MLflow dataset input with its digest) and git commit."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a local folder matches two equivalent source types
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(Path(prepared_dir).resolve()))
    dataset = MetaDataset(source, name=params.dataset_name, digest=dataset_digest(prepared_dir))  # type: ignore[abstract]  # concrete at runtime
    mlflow.log_input(dataset, context="training")
    if commit := git_commit(project_root()):
        mlflow.set_tag("mlflow.source.git.commit", commit)


def use_experiment(mlflow, name: str) -> None:
    """Make `name` the active experiment, marked as model training: MLflow 3's UI then opens it on
    its runs table, not on the GenAI overview (traces) it shows an unmarked experiment."""
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get(EXPERIMENT_KIND) != "custom_model_development":
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, "custom_model_development")


BUDGET_VIEW = "howlow-budget"  # the shared runs-table view `track` keeps up to date in each experiment


def budget_view_path(experiment_id: str) -> str:
    """The MLflow UI page (after its address) of the experiment's runs table in the budget view.
    `workflowType`: MLflow 3.17's UI opens every experiment on its GenAI pages in a browser that
    never chose "Model training", whatever the experiment's tags say."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={BUDGET_VIEW}&workflowType=machine_learning"


def set_budget_view(mlflow, experiment_id: str, params: Params) -> None:
    """A shared view of the runs table (an experiment tag the MLflow UI reads): the budget's keys
    and numbers as columns, for pipeline runs and, expanded, their image runs (howlow.names)."""
    import json

    metrics = ["oracle.mean_revealed_pct", "oracle.mean_revealed_px", "oracle.reached_fraction"]
    metrics += [f"dataset.{s}.miou" for s in params.train.label_sources]
    metrics += [f"oracle.{k}" for k in ("revealed_pct", "revealed_px", "accuracy")]  # the image runs'
    columns = ["attributes.`Dataset`", *(f"tags.`{k}`" for k in ("annotator", "strategy", "target", "seed"))]
    columns += [f"metrics.`{m}`" for m in metrics]
    view = {"orderByKey": "attributes.start_time", "orderByAsc": False, "selectedColumns": columns}
    mlflow.MlflowClient().set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{BUDGET_VIEW}", json.dumps(view))


def registered_model(params: Params, source: str, who: str = "oracle") -> str:
    """The registered model of a label source's data-set network; a version per pipeline run. A
    person's runs register their own (`howlow-<dataset>-label-studio-<source>`), so alias `current`
    of the Oracle's models keeps pointing at an Oracle run."""
    return f"howlow-{params.dataset_name}-{who}-{source}" if who == HUMAN else f"howlow-{params.dataset_name}-{source}"


def _setup(params: Params):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    use_experiment(mlflow, params.tracking.experiment)
    return mlflow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def close_orphans(mlflow, experiment: str) -> list[str]:
    """Runs of this machine left RUNNING by a process that no longer exists (a `track` killed
    half-way), with their nested runs, marked KILLED (their PENDING models FAILED); their ids.
    Runs of other machines, and of a `track` still at work, are left alone (tags howlow.host and
    howlow.pid)."""
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    host = socket.gethostname()
    running = client.search_runs(
        [exp.experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`howlow.host` = '{host}'"
    )
    closed = []
    for run in running:
        if _alive(int(run.data.tags.get("howlow.pid", "0"))):
            continue
        nested = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        for r in [*nested, run]:
            if r.info.status == "RUNNING":
                client.set_terminated(r.info.run_id, "KILLED")
                closed.append(r.info.run_id)
        of_run = f"source_run_id = '{run.info.run_id}'"
        for model in client.search_logged_models([exp.experiment_id], filter_string=of_run):
            if str(model.status).endswith("PENDING"):  # half-logged: never READY
                client.finalize_logged_model(model.model_id, "FAILED")
        log.warning("%s (%s): left running by a killed process, now KILLED", run.info.run_name, run.info.run_id)
    return closed


def log_pipeline(params: Params, layout: Layout) -> dict:
    """Log the outputs of a finished pipeline run (parent run, nested image runs, models)."""
    import torch
    from mlflow.entities import Metric, Param

    from .data import load_prepared
    from .segmentation.train import load_model, normalise

    mlflow = _setup(params)
    # torch.export warns about every specialised input dimension; the example's shape is fixed on purpose
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    eval_dir, models_dir, oracle_dir = layout.eval, layout.models, layout.oracle
    metrics = read_metrics(eval_dir)
    summaries = read_csv(oracle_dir / "summary.csv")
    client = mlflow.MlflowClient()
    close_orphans(mlflow, params.tracking.experiment)
    who = annotator(layout)
    with mlflow.start_run(run_name=run_name(params, who)) as parent:
        mlflow.set_tags(
            {
                "howlow.kind": "pipeline",
                **budget_tags(params, who),
                # a later `track` closes this run if its process dies before the run ends
                "howlow.host": socket.gethostname(),
                "howlow.pid": str(os.getpid()),
            }
        )
        mlflow.log_params(flatten(params.to_dict()))
        _provenance(mlflow, params, layout.prepared)
        # the names of eval/metrics.json and eval/details.json (howlow.names), and the logged times
        flat = metric_names(metrics)
        flat.update(logged_times(layout, [s["id"] for s in summaries], params.train.label_sources))
        mlflow.log_metrics(flat)
        bar = Progress(log, "track: image runs", len(summaries), "run")
        for s in summaries:
            result = read_json(Path(oracle_dir) / f"{s['id']}.json")
            with mlflow.start_run(run_name=s["id"], nested=True) as child:
                ts = 0  # timestamps are not meaningful here (logged after the fact); steps are
                # the names of the parent's oracle.mean_<x>, for one image: its curves (the last
                # point is where it ended) and its end state
                batch = [
                    Metric(f"oracle.{key}", float(point[key]), ts, int(point["revealed"]))
                    for point in result["curve"]
                    for key in IMAGE_CURVES
                ]
                final = {**result["summary"], "revealed_px": result["summary"]["revealed"]}
                batch += [Metric(f"oracle.{k}", float(final[k]), ts, 0) for k in IMAGE_FINAL]
                if (took := layout.logs / "oracle" / f"{s['id']}.json").is_file():
                    batch.append(Metric("oracle.seconds", float(read_json(took)["seconds"]), ts, 0))
                client.log_batch(
                    child.info.run_id,
                    metrics=batch,
                    params=[
                        Param("image", s["id"]),
                        Param("pixels", str(result["summary"]["pixels"])),
                        Param("reached", str(result["summary"]["reached"])),
                    ],
                )
                # the parent's budget keys, so image runs can be filtered and compared across runs
                mlflow.set_tags({"howlow.kind": "image", **budget_tags(params, who)})
            bar.update()
        bar.close()
        mlflow.log_artifacts(str(Path(eval_dir) / "figures"), artifact_path="figures")
        mlflow.log_artifact(str(Path(eval_dir) / "metrics.json"))
        prepared = load_prepared(layout.prepared)
        example_image = prepared.image(prepared.split("val")[0])
        for source in params.train.label_sources:
            model, mean, std = load_model(Path(models_dir) / f"{source}.pt")
            # pt2 (torch.export) format: safe to load, traced on a normalised val image
            example = normalise(torch.from_numpy(example_image).permute(2, 0, 1)[None], mean, std).numpy()
            info = mlflow.pytorch.log_model(
                model,
                name=f"dataset-{source}",
                input_example=example,
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=registered_model(params, source, who),
            )
            # the alias follows the latest pipeline run: models:/howlow-<dataset>-<source>@current
            client.set_registered_model_alias(
                registered_model(params, source, who), "current", str(info.registered_model_version)
            )
        run_id = parent.info.run_id
    set_budget_view(mlflow, parent.info.experiment_id, params)
    out = {
        "run_id": run_id,
        "run_name": run_name(params, who),
        "experiment": params.tracking.experiment,
        "tracking_uri": tracking_uri(params),
        "image_runs": len(summaries),
        "ui_page": budget_view_path(parent.info.experiment_id),
    }
    log.info("MLflow run %s (%s) in %s", run_name(params, who), run_id, out["tracking_uri"])
    log.info("in `mlflow ui`, the runs table with the budget's columns: <its address>/%s", out["ui_page"])
    return out


SOURCES = ("full", "pseudo", "confident", "sparse", "random", "random_pseudo")  # the label sources
# budgets.csv: the run's keys, then its numbers under their names (howlow.names)
COMPARE_COLUMNS = [
    "run",
    "dataset",
    "strategy",
    "target",
    "seed",
    "status",
    "oracle.images",
    "oracle.mean_revealed_pct",
    "oracle.mean_revealed_px",
    "oracle.reached_fraction",
    "pseudolabel.mean_accuracy",
]


def compare(params: Params, out_dir: Path) -> dict:
    """Print the budget table of every pipeline run in the experiment; plot revealed % vs target and,
    what the project exists to show, each label source's data-set val mIoU vs its annotated %."""
    uri = tracking_uri(params)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store and report no runs
        raise DataError(
            f"{uri.removeprefix('sqlite:///')}: no MLflow store; run the pipeline first (dvc repro), or name "
            "the store with tracking.tracking_uri or $MLFLOW_TRACKING_URI"
        )
    mlflow = _setup(params)
    finished = "" if params.tracking.compare_all else " and attributes.status = 'FINISHED'"
    runs = mlflow.search_runs(
        experiment_names=[params.tracking.experiment],
        filter_string=f"tags.`howlow.kind` = 'pipeline'{finished}",
        output_format="list",
    )
    rows = []
    for r in runs:
        m, p = r.data.metrics, r.data.params
        human = r.data.tags.get("annotator") == HUMAN  # a person's run: no rule, no target
        rows.append(
            {
                "run": r.info.run_name,
                "dataset": r.data.tags.get("dataset", ""),
                "strategy": HUMAN if human else p.get("oracle.strategy", ""),
                "target": float("nan") if human else float(p.get("oracle.target_accuracy", "nan")),
                "seed": p.get("oracle.seed", ""),
                "status": r.info.status,
                **{k: m.get(k) for k in COMPARE_COLUMNS[6:]},
                **{f"dataset.{s}.{k}": m.get(f"dataset.{s}.{k}") for s in SOURCES for k in ("annotated_pct", "miou")},
            }
        )
    rows.sort(key=lambda r: (r["dataset"], r["strategy"], r["target"], str(r["seed"])))
    if not rows:
        print(f"no pipeline runs in experiment {params.tracking.experiment!r} at {tracking_uri(params)}")
        return {"runs": 0}
    width = max(len("run"), *(len(r["run"]) for r in rows))  # whole names: they say the budget
    print(
        f"{'run':{width}} {'target':>6} {'imgs':>5} {'revealed %':>10} {'pixels':>8} {'reached':>7} {'pseudo acc':>10}"
    )
    for r in rows:
        print(
            f"{r['run']:{width}} {r['target']:6.3f} {r['oracle.images'] or 0:5.0f} "
            f"{r['oracle.mean_revealed_pct'] or 0:10.4f} {r['oracle.mean_revealed_px'] or 0:8.1f} "
            f"{r['oracle.reached_fraction'] or 0:7.2f} {r['pseudolabel.mean_accuracy'] or 0:10.4f}"
        )
    present = [s for s in SOURCES if any(r[f"dataset.{s}.miou"] is not None for r in rows)]
    columns = COMPARE_COLUMNS + [f"dataset.{s}.{k}" for s in present for k in ("annotated_pct", "miou")]
    write_csv(Path(out_dir) / "budgets.csv", [{k: r[k] for k in columns} for r in rows], columns)
    compare_figure(rows, Path(out_dir) / "budgets.png")
    print(f"table: {out_dir}/budgets.csv, plot: {out_dir}/budgets.png")
    return {"runs": len(rows)}


def logged_study_rows(experiment: str, uri: str) -> dict[str, str]:
    """The study rows already logged in `experiment`: their `howlow.row` digest tag -> run id."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="list")
    return {r.data.tags["howlow.row"]: r.info.run_id for r in runs if "howlow.row" in r.data.tags}


def log_study_row(
    params: Params, row: dict, model_path: Path, prepared, experiment: str, uri: str, tags: dict | None = None
) -> str:
    """One MLflow run per row of a data-set study (howlow.studies.dataset): the same param and metric
    names for every source, budget and seed, and the row's model where `model_path` exists (tag
    `howlow.model`: logged or absent); its run id."""
    import mlflow
    import torch

    from .segmentation.train import load_model, normalise

    logging.getLogger("torch._export").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    use_experiment(mlflow, experiment)
    with mlflow.start_run(run_name=row["name"]) as run:
        mlflow.set_tags(
            {
                "howlow.kind": "dataset-level",
                "dataset": row["dataset"],
                "source": row["source"],
                "study": row.get("study", ""),
                "howlow.model": "logged" if model_path.is_file() else "absent",
                **(tags or {}),
            }
        )
        mlflow.log_params(
            {
                "dataset": row["dataset"],
                "source": row["source"],
                "budget_target": "none" if row["target"] is None else row["target"],
                "seed": row["seed"],
                "data.scale": params.data.scale,
                "train.model": params.train.model,
                "train.width": params.train.width,
                "train.epochs": row["epochs"],
                "train.crop": str(params.train.crop),
                "train.confidence": params.train.confidence,
                "train.batch_size": params.train.batch_size,
                "train.lr": params.train.lr,
                "images": row["images"],
            }
        )
        _provenance(mlflow, params, prepared.root)
        metrics = {
            k: float(row[k])
            for k in (
                "miou",
                "pixel_accuracy",
                "annotated_pct",
                "annotated_pixels",
                "annotated_px_per_image",
                "train_seconds",
            )
        }
        metrics.update({f"iou.{c}": v for c, v in row["per_class_iou"].items() if v is not None})
        mlflow.log_metrics(metrics)
        if not model_path.is_file():  # trained in another session: its network is not in this clone
            return run.info.run_id
        model, mean, std = load_model(model_path)
        example_image = prepared.image(prepared.split("val")[0])
        example = normalise(torch.from_numpy(example_image).permute(2, 0, 1)[None], mean, std).numpy()
        mlflow.pytorch.log_model(model, name="model", input_example=example, pip_requirements=PIP_REQUIREMENTS)
        return run.info.run_id


def compare_command(params: Params, layout: Layout) -> dict:
    """`howlow compare`: the table and plot go to reports/compare/."""
    return compare(params, layout.root / "reports" / "compare")
