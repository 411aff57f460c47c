"""`howlow study-evaluate`: a data-set study's trained networks scored on another labelled folder.

    cd studies/dataset_camvid
    howlow study-evaluate -p ../../params.yaml -p params.yaml data.source=/data/my_frames data.layout=segnet

The folder is imported with the study's `data.*` (scale, void id; override them like the source) into
a temporary folder, each row's network (networks/<name>/<source>.pt) labels its val split, and the same
table as the study's report (mean ± std over seeds per source and budget, % of full, paired
differences) goes to results/external/<folder name>.{json,md}. The classes must be the study's:
a network can only name the classes it was trained on.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import date
from pathlib import Path

from ...console import Progress
from ...data import load_prepared, prepare
from ...io import DataError, atomic_write_bytes, write_json
from ...layout import Layout, project_root
from ...params import Params
from ...segmentation.train import evaluate_source
from ..common import machine
from . import networks_dir, results_dir, study_name, training_images
from .report import _interval, aggregate, load_rows, paired

log = logging.getLogger(__name__)


def run(params: Params, layout: Layout) -> dict:
    root = layout.root
    rows, _, _ = load_rows(params, root)  # the rows there are
    absent = [networks_dir(root) / r["model"] for r in rows if not (networks_dir(root) / r["model"]).is_file()]
    if absent:
        raise DataError(
            f"{absent[0]}: missing ({len(absent)} of {len(rows)} networks): these rows were trained in another "
            "session and their networks are not in this clone; pull them from a DVC remote, or retrain them "
            "with `dvc repro --force <stage>`"
        )
    study_classes = [c["name"] for c in load_prepared(training_images(root)).classes]
    with tempfile.TemporaryDirectory(prefix="howlow-external-") as tmp:
        prepared = load_prepared(prepare(params, Path(tmp) / "prepared", project_root(root)))
        classes = [c["name"] for c in prepared.classes]
        if classes != study_classes:
            raise DataError(
                f"{params.data.source}: classes {classes} are not the study's {study_classes}: "
                "the networks can only be scored on the classes they learnt"
            )
        val = [r["id"] for r in prepared.split("val")]
        if not val:
            raise DataError(f"{params.data.source}: no val images to score (layout {params.data.layout})")
        scored = []
        bar = Progress(log, "study-evaluate", len(rows), "network")
        for r in rows:
            scored.append({**r, **evaluate_source(prepared, networks_dir(root) / r["model"])})
            bar.update(f"{r['name']} mIoU {scored[-1]['miou']:.3f}")
        bar.close()
    rep = {
        "study": study_name(root),
        "evaluated_on": params.dataset_name,
        "source": params.data.source,
        "scale": params.data.scale,
        "frames": val,
        "date": str(date.today()),
        "machine": machine(),
        "aggregate": aggregate(scored),
        "paired": paired(scored, params.study.targets),
        "rows": [{k: r[k] for k in ("name", "source", "target", "seed", "miou", "pixel_accuracy")} for r in scored],
    }
    out = results_dir(root) / "external"
    write_json(out / f"{params.dataset_name}.json", rep)
    atomic_write_bytes(out / f"{params.dataset_name}.md", markdown(rep).encode())
    return {"rows": len(scored), "report": str(out / f"{params.dataset_name}.md")}


def markdown(rep: dict) -> str:
    lines = [
        f"# `{rep['study']}` networks on `{rep['evaluated_on']}`",
        "",
        f"`howlow study-evaluate` on {rep['source']} (scale {rep['scale']}, {len(rep['frames'])} val images; ids "
        f"in the json), {rep['machine']}. Networks trained by the study; nothing here was tuned on these frames.",
        "",
        "| source | Oracle target | val mIoU | % of full | pixel acc |",
        "|---|---|---|---|---|",
    ]
    for a in rep["aggregate"]:
        pct = "-" if a["pct_of_full_mean"] is None else f"{a['pct_of_full_mean']:.1f} ± {a['pct_of_full_std']:.1f}"
        lines.append(
            f"| {a['source']} | {'-' if a['target'] is None else a['target']} | {a['miou_mean']:.3f} ± "
            f"{a['miou_std']:.3f} | {pct} | {a['pixel_accuracy_mean']:.3f} |"
        )
    if rep["paired"]:
        lines += ["", "| Oracle target | comparison | seeds | mean | 95 % interval |", "|---|---|---|---|---|"]
        lines += [
            f"| {d['target']} | {d['comparison']} | {d['n']} | {d['mean']:+.3f} | {_interval(d)} |"
            for d in rep["paired"]
        ]
    return "\n".join(lines) + "\n"
