"""Prefect flow for the howlow pipeline: the same stage functions as `dvc.yaml`, with the per-image
Oracle runs as mapped tasks (retried, and visible one by one in the Prefect UI).

    python flows/pipeline.py                 # run once (a temporary local Prefect server if none is set)
    howlow serve                             # serve on params.yaml's orchestration.cron schedule

DVC stays the true account of what ran. A run whose parameters differ from params.yaml (flow
arguments, `overrides`, another params file) first writes those values into params.yaml, comments
kept, as `dvc exp run -S` does; after the run it calls `dvc commit`, so dvc.lock records the outputs
under the params that made them (commit both in git to keep the run). The served
deployment passes no parameters of its own: each scheduled run reads params.yaml when it starts.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import torch
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from howlow.console import setup_logging
from howlow.data import load_prepared
from howlow.io import DataError
from howlow.layout import Layout
from howlow.params import Params, ParamsError, differences, load_params, write_into
from howlow.stages import evaluate, oracle, prepare, pseudolabel, track, train, validate

DVC_PARAMS = "params.yaml"  # the file dvc.yaml's stages read their params from

# The whole-stage tasks are the stage functions themselves (the ones dvc.yaml's commands call).
prepare_task = task(name="prepare")(prepare.run)
validate_task = task(name="validate")(validate.run)
oracle_summary_task = task(name="oracle-summary")(oracle.finish)
pseudolabel_task = task(name="pseudolabel")(pseudolabel.run)
train_prune_task = task(name="train-prune")(train.prune)
train_source_task = task(name="train", task_run_name="train-{source}")(train.train_one)
evaluate_task = task(name="evaluate")(evaluate.run)
track_task = task(name="track")(track.run)


@task(name="oracle-image", retries=2, retry_delay_seconds=5, task_run_name="oracle-{image_id}")
def oracle_image_task(params: Params, image_id: str, root: str) -> dict:
    # many images share the cores (threads here, or Dask workers): one torch thread per image;
    # an absolute root because a Dask worker's working folder is not the project's
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    summary = oracle.oracle_image(params, image_id, Layout(Path(root)))
    get_run_logger().info(
        "%s: %d px revealed (%.4f %%), pixel accuracy %.4f%s, %.1f s",
        image_id,
        summary["revealed"],
        summary["revealed_pct"],
        summary["accuracy"],
        "" if summary["reached"] else f" (cap reached before {params.oracle.target_accuracy:g})",
        time.perf_counter() - t0,
    )
    return summary


def howlow_logs_to_prefect() -> None:
    """The stages' own log lines (progress with ETA, per-source scores) go to the Prefect run they
    happen in, so the UI shows them under each task, not only on the terminal."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("howlow")
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def dask_address(params: Params) -> str:
    """`orchestration.dask_address`, else $HOWLOW_DASK_ADDRESS; when set, a scheduler must answer
    there (checked in seconds, before any stage runs, rather than failing after prepare and validate)."""
    address = params.orchestration.dask_address or os.environ.get("HOWLOW_DASK_ADDRESS", "")
    if address:
        url = urlsplit(address if "://" in address else f"tcp://{address}")
        try:
            with socket.create_connection((url.hostname or "", url.port or 8786), timeout=5):
                pass
        except (OSError, ValueError) as exc:
            raise ParamsError(
                f"orchestration.dask_address (or $HOWLOW_DASK_ADDRESS) {address!r}: no Dask scheduler answers there "
                f"({exc}); start one (README: Dask) or leave the key empty to run on this machine"
            ) from None
    return address


def task_runner(params: Params):
    """Dask when an address is configured (prefect-dask), else one thread per core here."""
    if address := dask_address(params):
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1)


@flow(name="howlow-oracle-fanout")
def oracle_fanout(params: Params, ids: list[str], root: str) -> tuple[list[dict], list[str]]:
    """The per-image Oracle runs as mapped tasks; a failed image (after retries) is reported and
    does not sink the others."""
    logger = get_run_logger()
    futures = oracle_image_task.map(unmapped(params), ids, unmapped(root))
    summaries, failed = [], []
    for image_id, future in zip(ids, futures):
        try:
            summaries.append(future.result())
        except Exception as exc:
            failed.append(image_id)
            logger.error("oracle failed for %s after retries: %s", image_id, exc)
    return summaries, failed


def dvc(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def record_params(params: Params) -> dict:
    """Where DVC reads params (params.yaml), the values this run uses; the keys changed."""
    changes = differences(params, load_params(DVC_PARAMS))
    if changes:
        write_into(Path(DVC_PARAMS), changes)
    return changes


def dvc_commit() -> str:
    """Record the flow's outputs in dvc.lock (skipped outside a DVC repository). Not `dvc exp save`:
    it commits every stage of the repository and fails while a study's outputs are absent."""
    if not Path(".dvc").is_dir():
        return "not a DVC repository: outputs not recorded"
    dvc("commit", "--force", "--quiet", "dvc.yaml")
    return "outputs recorded in dvc.lock"


def budget_markdown(params: Params, metrics: dict, failed: list[str]) -> str:
    """The run's budget table, as the flow run's Markdown artifact in the Prefect UI."""
    o = metrics["oracle"]
    lines = [
        f"# {params.dataset_name}: {params.oracle.strategy} to {params.oracle.target_accuracy:g} pixel accuracy",
        "",
        f"{o['images']} images; oracle.mean_revealed_pct {o['mean_revealed_pct']:.4f} % "
        f"(oracle.mean_revealed_px {o['mean_revealed_px']:.1f}), oracle.reached_fraction {o['reached_fraction']:.2f}"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        "",
        # the column names are the numbers' names in MLflow and eval/ (howlow.names)
        "| label source | dataset.*.annotated_pct | dataset.*.miou | dataset.*.miou_pct_of_full |",
        "|---|---|---|---|",
    ]
    for source, m in metrics["dataset"].items():
        share = m.get("miou_pct_of_full")
        lines.append(
            f"| {source} | {m['annotated_pct']:.4f} | {m['miou']:.4f} | {'' if share is None else f'{share:.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def on_failure(flow, flow_run, state) -> None:
    """A failed run leaves a Markdown artifact (its key names the flow run) saying what failed."""
    create_markdown_artifact(
        key=f"howlow-failure-{flow_run.name}".lower().replace("_", "-"),
        markdown=f"# howlow run {flow_run.name} failed\n\n{state.message or state.name}\n",
        description="why the run failed",
    )


def _overrides(source, layout, strategy, target_accuracy, seed, overrides) -> list[str]:
    named = {
        "data.source": source,
        "data.layout": layout,
        "oracle.strategy": strategy,
        "oracle.target_accuracy": target_accuracy,
        "oracle.seed": seed,
    }
    return [f"{k}={v}" for k, v in named.items() if v is not None] + list(overrides or [])


@flow(name="howlow-pipeline", log_prints=True, on_failure=[on_failure])
def pipeline(
    params_path: str = "params.yaml",
    source: str | None = None,
    layout: str | None = None,
    strategy: str | None = None,
    target_accuracy: float | None = None,
    seed: int | None = None,
    overrides: list[str] | None = None,
    record_in_dvc: bool = True,
) -> dict:
    """validate -> per-image Oracle (mapped) -> pseudo-labels -> train -> evaluate -> MLflow."""
    logger = get_run_logger()
    howlow_logs_to_prefect()
    params = load_params(params_path, _overrides(source, layout, strategy, target_accuracy, seed, overrides))
    if record_in_dvc and Path(".dvc").is_dir() and (changes := record_params(params)):
        listed = ", ".join(f"{k}={v}" for k, v in changes.items())
        logger.warning("%s now holds this run's params (as `dvc exp run -S` would): %s", DVC_PARAMS, listed)
    where = Layout(Path.cwd().resolve())
    runner = task_runner(params)  # a Dask address that does not answer stops the run before any stage
    prepare_task(params, where)
    validate_task(params, where)
    ids = oracle.image_ids(params, load_prepared(where.prepared))
    oracle.start(where.oracle)
    summaries, failed = oracle_fanout.with_options(task_runner=runner)(params, ids, str(where.root))
    if not summaries:
        raise RuntimeError(f"the oracle failed for every image ({len(failed)})")
    totals = oracle_summary_task(summaries, where)
    logger.info(
        "oracle: %d images, mean %.4f %% revealed, %.0f %% reached the target",
        totals["images"],
        totals["mean_revealed_pct"],
        100 * totals["reached_fraction"],
    )
    pseudolabel_task(params, where)
    train_prune_task(params, where)
    for source in params.train.label_sources:
        train_source_task(params, source, where)
    metrics = evaluate_task(params, where)
    run = track_task(params, where)
    create_markdown_artifact(
        key="howlow-budget", markdown=budget_markdown(params, metrics, failed), description="budget and mIoU"
    )
    if record_in_dvc:
        logger.info(dvc_commit())
    return {
        "oracle": totals,
        "failed_images": failed,
        "mlflow_run_id": run["run_id"],
        "dataset": {k: v["miou"] for k, v in metrics["dataset"].items()},
    }


def deployment(params: Params):
    """The deployment `howlow serve` serves: the pipeline on params.yaml's `orchestration.cron`, named
    `orchestration.deployment`. Its only parameter is the params file: every other value is read from
    it when a run starts, so an edit of params.yaml reaches the next scheduled run without restarting
    `howlow serve` (the flow's other parameters stay empty overrides, shown in the Prefect UI)."""
    return pipeline.to_deployment(
        name=params.orchestration.deployment, cron=params.orchestration.cron, parameters={"params_path": DVC_PARAMS}
    )


def serve(params: Params, layout: Layout | None = None) -> None:
    """Serve the flow on the cron schedule of params.yaml (blocks; Ctrl-C stops it)."""
    from prefect import serve as serve_deployments

    serve_deployments(deployment(params))


def main(argv: list[str]) -> int:
    """`python flows/pipeline.py [params.yaml]`: bad params or an unreachable Dask scheduler are one
    line and exit status 2, before Prefect starts."""
    params_path = argv[0] if argv else DVC_PARAMS
    setup_logging(0)  # the stages' progress lines on stderr, as `howlow <stage>` shows them
    try:
        dask_address(load_params(params_path))
    except (ParamsError, DataError) as exc:
        print(f"flows/pipeline.py: error: {exc}", file=sys.stderr)
        return 2
    print(pipeline(params_path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
