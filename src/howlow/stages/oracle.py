"""Stage `oracle`: the Oracle over every training image (howlow.oracle), with its records.

Outputs in `data/oracle/`: `<id>.pt` (the image's final network), `<id>.json` (revealed pixels in
reveal order as [y, x, class, round], the round-by-round curve, a summary), `summary.csv` and
`totals.json`; and `eval/plots/oracle_curves.csv` for `dvc plots`. No timings: they go to
`logs/oracle/<id>.json` (Layout.logs), so the outputs are a pure function of data, params and code.

Resuming: each image's json is written last and marks it done. The output is persisted by DVC, so a
run killed half-way resumes: finished images whose fingerprint (data and oracle params) matches are
kept. A run that finished (summary.csv written) is never resumed: when DVC runs the stage again
something changed, code included, so every image is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..console import Progress
from ..data import Prepared, load_prepared
from ..io import VOID, DataError, read_csv, read_json, save_torch, write_csv, write_json
from ..layout import Layout
from ..oracle import OracleRun, image_seed, run_oracle_many
from ..params import Params, ParamsError

log = logging.getLogger(__name__)


def use_runtime(params: Params) -> None:
    """torch threads from `runtime.threads`; a clear error when `runtime.device` names a missing GPU."""
    if params.runtime.device == "cuda" and not torch.cuda.is_available():
        raise ParamsError("runtime.device: 'cuda' is set but torch sees no CUDA device (use 'cpu')")
    torch.set_num_threads(params.runtime.threads or os.cpu_count() or 1)


def fingerprint(params: Params, image_id: str) -> str:
    """What an image's result depends on besides the code: data import and oracle params."""
    blob = json.dumps(
        {"data": params.data.model_dump(mode="json"), "oracle": params.oracle.model_dump(mode="json"), "id": image_id},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_result(image_id: str, out_dir: Path) -> dict:
    return read_json(Path(out_dir) / f"{image_id}.json")


def _reusable(params: Params, image_id: str, out_dir: Path) -> dict | None:
    """The stored summary when this image's result is complete and has the same fingerprint."""
    done = out_dir / f"{image_id}.json"
    if done.is_file() and (out_dir / f"{image_id}.pt").is_file():
        previous = read_json(done)
        if previous.get("fingerprint") == fingerprint(params, image_id):
            return previous["summary"]
    return None


def _save_result(params: Params, image_id: str, label: np.ndarray, run: OracleRun, layout: Layout) -> dict:
    """Write one image's result (weights first, json last: the json marks it done); its summary row.
    Its time goes to the logs."""
    assert run.model is not None
    out_dir = layout.oracle
    write_json(layout.logs / "oracle" / f"{image_id}.json", {"seconds": round(run.seconds, 3)})
    last = run.curve[-1]
    summary = {
        "id": image_id,
        "height": label.shape[0],
        "width": label.shape[1],
        "pixels": label.size,
        "revealed": len(run.revealed),
        "revealed_pct": 100.0 * len(run.revealed) / label.size,
        "rounds": len(run.curve),
        "accuracy": last["accuracy"],
        "miou": last["miou"],
        "reached": run.reached,
    }
    save_torch(out_dir / f"{image_id}.pt", run.model.state_dict())
    write_json(
        out_dir / f"{image_id}.json",
        {
            "id": image_id,
            "fingerprint": fingerprint(params, image_id),
            "summary": summary,
            "curve": run.curve,
            "revealed": run.revealed,
        },
    )
    return summary


def _train_row(prepared: Prepared, image_id: str) -> dict:
    row = next((r for r in prepared.split("train") if r["id"] == image_id), None)
    if row is None:
        raise KeyError(f"{prepared.root / 'manifest.csv'}: no training image with id {image_id!r}")
    return row


def start(out_dir: Path) -> None:
    """Before a run: the results of a finished run are not resumed (see module docstring)."""
    if (Path(out_dir) / "summary.csv").is_file():
        shutil.rmtree(out_dir)


def oracle_images(
    params: Params,
    image_ids: list[str],
    prepared: Prepared,
    layout: Layout,
    progress: Callable[[dict, float | None], None] | None = None,
) -> list[dict]:
    """Run (or reuse) the Oracle for these training images; their summary rows in the order given.

    The images go in fixed groups of `runtime.oracle_batch`, in the order given, each group trained
    together (engine.run_batched) without taking in the next group's images. Batching changes a
    network's weights by float rounding (the padded length of a step depends on the group), so a
    resumed run redoes every group not wholly finished and gets the same bytes as an uninterrupted
    one. Outputs are written atomically as each image finishes, the json last: a killed run leaves
    either no result for an image or a complete one. `progress(summary, seconds)` per image
    (seconds None for a reused one)."""
    out_dir = layout.oracle
    size = params.runtime.oracle_batch
    summaries: dict[str, dict] = {}
    todo: list[list[str]] = []
    for group in (image_ids[i : i + size] for i in range(0, len(image_ids), size)):
        reused = {i: s for i in group if (s := _reusable(params, i, out_dir)) is not None}
        if len(reused) < len(group):
            todo.append(group)
            continue
        summaries.update(reused)
        for s in reused.values():
            if progress:
                progress(s, None)

    def done(image_id: str, label: np.ndarray, run: OracleRun) -> None:
        summaries[image_id] = _save_result(params, image_id, label, run, layout)
        if progress:
            progress(summaries[image_id], run.seconds)

    for group in todo:
        run_rows(params, prepared, [_train_row(prepared, i) for i in group], done)
    return [summaries[i] for i in image_ids]


def run_rows(
    params: Params, prepared: Prepared, rows: list[dict], done: Callable[[str, np.ndarray, OracleRun], None]
) -> None:
    """The Oracle over these prepared rows, `runtime.oracle_batch` images at a time, each with its own
    seed; `done(id, label, run)` as soon as an image is done. An all-void label stops it with its file."""
    labels: dict[str, np.ndarray] = {}

    def items():
        for row in rows:
            labels[row["id"]] = label = prepared.label(row)
            if not (label != VOID).any():
                raise DataError(f"{prepared.root / row['label']}: every pixel is void: there is nothing to reveal")
            yield row["id"], prepared.image(row), label, image_seed(params.oracle.seed, row["id"])

    run_oracle_many(
        items(),
        prepared.n_classes,
        params.oracle,
        params.runtime.oracle_batch,
        lambda image_id, run: done(image_id, labels.pop(image_id), run),
        params.runtime.device,
        params.runtime.select_workers,
    )


def oracle_image(params: Params, image_id: str, layout: Layout) -> dict:
    """Run (or reuse) the Oracle for one training image (the Prefect flow maps this); its summary row."""
    return oracle_images(params, [image_id], load_prepared(layout.prepared), layout)[0]


def remove_stale_files(ids: set[str], out_dir: Path, plots_dir: Path) -> list[Path]:
    """Delete what this run's results must not be mixed with: temporary files (`.<name>.<random>.tmp`)
    a killed run left behind, and results of images that are no longer in the run. Called once every
    image is done, so no write of this run is in flight."""
    stale = sorted(out_dir.glob(".*.tmp")) + sorted(plots_dir.glob(".oracle_curves.csv.*.tmp"))
    stale += sorted(p for p in out_dir.glob("*.pt") if p.stem not in ids)
    stale += sorted(p for p in out_dir.glob("*.json") if p.stem not in ids and p.name != "totals.json")
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def finish(summaries: list[dict], layout: Layout) -> dict:
    """summary.csv, the plot data of the budget curves, and the aggregate figures (totals.json)."""
    out_dir = layout.oracle
    remove_stale_files({s["id"] for s in summaries}, out_dir, layout.plots)
    curves = []
    for s in summaries:
        for point in load_result(s["id"], out_dir)["curve"]:
            curves.append(
                {
                    "image": s["id"],
                    "revealed": point["revealed"],
                    "revealed_pct": round(100 * point["revealed_fraction"], 5),
                    "accuracy": round(point["accuracy"], 5),
                    "miou": round(point["miou"], 5),
                }
            )
    write_csv(layout.plots / "oracle_curves.csv", curves)
    pct = np.array([s["revealed_pct"] for s in summaries])
    px = np.array([s["revealed"] for s in summaries])
    totals = {
        "images": len(summaries),
        "mean_revealed_pct": float(pct.mean()),
        "median_revealed_pct": float(np.median(pct)),
        "mean_revealed_px": float(px.mean()),
        "median_revealed_px": float(np.median(px)),
        "reached_fraction": float(np.mean([s["reached"] for s in summaries])),
        "mean_accuracy": float(np.mean([s["accuracy"] for s in summaries])),
    }
    write_json(out_dir / "totals.json", totals)
    write_csv(out_dir / "summary.csv", summaries)  # last: it marks the run finished
    return totals


def image_ids(params: Params, prepared: Prepared) -> list[str]:
    ids = [r["id"] for r in prepared.split("train")]
    return ids[: params.oracle.max_images] if params.oracle.max_images else ids


def annotated_ids(layout: Layout) -> list[str]:
    """The images the Oracle annotated, in order (what later stages work on)."""
    return [r["id"] for r in read_csv(layout.oracle / "summary.csv")]


def run(params: Params, layout: Layout) -> dict:
    """The Oracle over every training image: a progress bar with ETA on a terminal, a line every tenth
    of the images elsewhere; each image's result at debug level (`howlow -v oracle`)."""
    use_runtime(params)
    prepared = load_prepared(layout.prepared)
    ids = image_ids(params, prepared)
    start(layout.oracle)
    bar = Progress(log, "oracle", len(ids), "image")

    def progress(s: dict, seconds: float | None) -> None:
        took = "done before" if seconds is None else f"{seconds:.1f} s"
        log.debug(
            "%s: %d px (%.3f %%), accuracy %.4f %s, %s",
            s["id"],
            s["revealed"],
            s["revealed_pct"],
            s["accuracy"],
            "reached" if s["reached"] else "NOT reached",
            took,
        )
        bar.update(f"{s['id']} {s['revealed']} px", fresh=seconds is not None)

    try:
        summaries = oracle_images(params, ids, prepared, layout, progress)
    finally:
        bar.close()
    totals = finish(summaries, layout)
    log.info(
        "oracle: %d images, mean %.4f %% revealed (%.1f px), %.0f %% reached %g",
        totals["images"],
        totals["mean_revealed_pct"],
        totals["mean_revealed_px"],
        100 * totals["reached_fraction"],
        params.oracle.target_accuracy,
    )
    return totals
