"""Latency of the Label Studio backend's interactive updates, through its real HTTP server.

    python benchmarks/labelstudio_latency.py --source ../shared/datasets/camvid --frames 3 --updates 25
    python benchmarks/labelstudio_latency.py ... --steps 50 20 -p studies/dataset_camvid/params.yaml

A simulated person (howlow.labelstudio.annotator: the Oracle's `error_center` rule on the map they see)
clicks one keypoint per update on native-size training frames of a SegNet-layout folder; each update
is one POST /predict (train, score, RLE-encode) timed at the client. The first update of a frame also
computes its cues, so it is reported apart. Prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import torch

from howlow.io import VOID, read_json, read_label, write_json
from howlow.labelstudio.annotator import keypoint_result, next_click
from howlow.labelstudio.config import labelling_config
from howlow.labelstudio.masks import label_map
from howlow.labelstudio.server import create_app, running
from howlow.layout import Layout
from howlow.metrics import confusion, pixel_accuracy
from howlow.params import load_params
from labelstudio_common import frame_args, free_port, print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    frame_args(ap)
    ap.add_argument("--updates", type=int, default=25, help="clicks (updates) per frame")
    ap.add_argument("--steps", type=int, nargs="+", default=[50], help="labelstudio.steps_per_update values")
    args = ap.parse_args()
    source = Path(args.source).resolve()
    classes = read_json(source / "classes.json")
    frames = sorted((source / "train").glob("*.png"))[: args.frames]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_json(Path(tmp) / "data" / "prepared" / "classes.json", classes)
        for steps in args.steps:
            params = load_params(
                args.params or ["params.yaml"],
                [
                    f"labelstudio.steps_per_update={steps}",
                    f"labelstudio.document_root={source}",
                    f"labelstudio.storage_roots=[{source / 'train'}]",
                ],
            )
            torch.set_num_threads(params.labelstudio.threads)  # as `howlow label-studio-backend` does
            app = create_app(params, Layout(Path(tmp)))
            config = labelling_config(classes)
            first, later, final = [], [], []
            with running(app, "127.0.0.1", free_port()) as url, httpx.Client(base_url=url, timeout=300) as client:
                for task, frame in enumerate(frames, 1):
                    label = read_label(source / "trainannot" / frame.name)
                    label[label == args.void_id] = VOID
                    rng, clicked, pred, results = np.random.default_rng(task), np.zeros(label.shape, bool), None, []
                    for i in range(args.updates):
                        yx = next_click(pred, label, clicked, rng, "error_center")
                        if yx is None:
                            break
                        clicked[yx] = True
                        results.append(keypoint_result(*yx, classes[label[yx]]["name"], label.shape))
                        body = {
                            "tasks": [{"id": task, "data": {"image": f"/data/local-files/?d=train/{frame.name}"}}],
                            "label_config": config,
                            "params": {"context": {"result": results}},
                        }
                        t0 = time.perf_counter()
                        r = client.post("/predict", json=body)
                        took = time.perf_counter() - t0
                        r.raise_for_status()
                        (first if i == 0 else later).append(took)
                        ids = {c["name"]: c["id"] for c in classes}
                        pred = label_map(r.json()["results"][0]["result"], ids)
                    final.append(pixel_accuracy(confusion(pred, label, len(classes))))
            h, w = label.shape
            rows.append(
                f"| {date.today()} | {w}x{h} | {steps} | {len(frames)} x {args.updates} | "
                f"{np.percentile(later, 50):.2f} s | {np.percentile(later, 95):.2f} s | {max(later):.2f} s | "
                f"{np.mean(first):.2f} s | {np.mean(final):.3f} |"
            )
    print_table(
        args.params,
        [
            "date",
            "frame",
            "steps_per_update",
            "frames x clicks",
            "p50",
            "p95",
            "max",
            "first update (cues)",
            "accuracy",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
