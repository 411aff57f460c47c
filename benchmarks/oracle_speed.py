"""Oracle speed benchmark: seconds per image, images per hour and peak memory of the per-image Oracle.

    python benchmarks/oracle_speed.py                                  # embedded synthetic data
    python benchmarks/oracle_speed.py --source ../shared/datasets/camvid --layout segnet \
        --void-id 11 --scale 0.25 --images 8

Prints a table (markdown) to paste into benchmarks/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from howlow.data import load_prepared, prepare
from howlow.oracle import image_seed, run_oracle
from howlow.params import Params, apply_override


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="synthetic")
    ap.add_argument("--layout", default="synthetic")
    ap.add_argument("--void-id", type=int, default=255)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--set", nargs="*", default=[], metavar="key=value", help="params overrides, e.g. oracle.lr=0.02")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tree = {"data": {"source": str(Path(args.source).resolve()) if args.source != "synthetic" else "synthetic",
                     "layout": args.layout, "void_id": args.void_id, "scale": args.scale,
                     "max_train": args.images, "max_val": 1, "synthetic": {"n_train": args.images, "n_val": 1}}}
    for override in args.set:  # the same key=value syntax (YAML values) as the howlow CLI
        apply_override(tree, override)
    params = Params.model_validate(tree)
    with tempfile.TemporaryDirectory() as tmp:
        prepared_dir = prepare(params, Path(tmp) / "prepared")
        prepared = load_prepared(prepared_dir)
        rows = prepared.split("train")
        seconds, revealed, reached = [], [], []
        for row in rows:
            image, label = prepared.image(row), prepared.label(row)
            t0 = time.perf_counter()
            run = run_oracle(image, label, prepared.n_classes, params.oracle, image_seed(params.oracle.seed, row["id"]))
            seconds.append(time.perf_counter() - t0)
            revealed.append(100 * len(run.revealed) / label.size)
            reached.append(run.reached)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    h, w = label.shape
    device = f"CPU {platform.processor() or platform.machine()}, {args.threads} threads"
    print("| date | data | images | resolution | mode | s/image | images/hour | peak RSS GiB | revealed % | reached | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {date.today()} | {Path(args.source).name} x{args.scale:g} | {len(rows)} | {w}x{h} | sequential | "
          f"{np.mean(seconds):.2f} | {3600 / np.mean(seconds):.0f} | {peak_gib:.2f} | {np.mean(revealed):.3f} | "
          f"{np.mean(reached):.0%} | {device} |")


if __name__ == "__main__":
    main()
