"""Oracle speed benchmark: one image at a time vs G per-image networks per step (howlow.oracle.engine).

    python benchmarks/oracle_speed.py                                   # embedded synthetic data
    python benchmarks/oracle_speed.py --source ../shared/datasets/camvid --layout segnet \\
        --void-id 11 --scale 0.25 --images 16 --batch 1 8 16
    python benchmarks/oracle_speed.py --prepared /path/to/prepared --device cuda --batch 1 32 64

The Oracle settings are params.yaml's (`--set` overrides them). Each batch size runs in fresh
processes (so peak memory is its own; `--procs N` splits the images over N processes and sums their
peak memory) on the same images; batch 1 is the same code one image at a time. Prints a markdown
table to paste into benchmarks/RESULTS.md with the machine and date: seconds per image (wall time of
the whole pass over the images), images per hour, peak memory, mean budget, and how many images got
exactly the revealed pixels of batch 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
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
from howlow.oracle import image_seed, run_oracle_many
from howlow.params import Params, load_params


def one_pass(
    prepared_dir: str,
    params_tree: dict,
    batch: int,
    threads: int,
    device: str,
    out: str,
    part: int = 0,
    parts: int = 1,
    select_workers: int = 1,
) -> None:
    torch.set_num_threads(threads)
    params = Params.model_validate(params_tree)
    prepared = load_prepared(Path(prepared_dir))
    rows = prepared.split("train")[part::parts]
    results = {}
    items = ((r["id"], prepared.image(r), prepared.label(r), image_seed(params.oracle.seed, r["id"])) for r in rows)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run_oracle_many(
        items,
        prepared.n_classes,
        params.oracle,
        batch,
        lambda key, run: results.__setitem__(key, (run.revealed, run.reached, run.curve[-1]["revealed_fraction"])),
        device,
        select_workers,
    )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gpu_peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    label = prepared.label(rows[0])
    Path(out).write_text(
        json.dumps(
            {
                "wall": wall,
                "peak_rss_gib": peak,
                "gpu_peak_gib": gpu_peak,
                "images": len(rows),
                "size": f"{label.shape[1]}x{label.shape[0]}",
                "results": results,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="synthetic")
    ap.add_argument("--layout", default="synthetic")
    ap.add_argument("--void-id", type=int, default=255)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--prepared", help="an already prepared folder (howlow prepare's output) instead of --source")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per process")
    ap.add_argument("--procs", type=int, default=1, help="processes, each on its share of the images")
    ap.add_argument("--select-workers", type=int, default=1, help="threads for the Oracle's scoring and selection")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--set", nargs="*", default=[], metavar="key=value", help="params overrides, e.g. oracle.lr=0.02")
    args = ap.parse_args()
    # the pipeline's settings (params.yaml) on the data given here, then --set (the howlow CLI's syntax)
    source = str(Path(args.source).resolve()) if args.source != "synthetic" else "synthetic"
    data = [
        f"data.source={source}",
        f"data.layout={args.layout}",
        f"data.void_id={args.void_id}",
        f"data.scale={args.scale}",
        f"data.max_train={args.images}",
        "data.max_val=1",
        f"data.synthetic.n_train={args.images}",
        "data.synthetic.n_val=1",
    ]
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml", data + args.set)
    tree = params.to_dict()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        prepared_dir = args.prepared or str(prepare(params, Path(tmp) / "prepared"))
        data = Path(args.source).name if not args.prepared else Path(args.prepared).name
        rows = []
        for batch in args.batch:
            outs = [Path(tmp) / f"b{batch}_{i}.json" for i in range(args.procs)]
            procs = [
                ctx.Process(
                    target=one_pass,
                    args=(
                        prepared_dir,
                        tree,
                        batch,
                        args.threads,
                        args.device,
                        str(out),
                        i,
                        args.procs,
                        args.select_workers,
                    ),
                )
                for i, out in enumerate(outs)
            ]
            t0 = time.perf_counter()
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
                if proc.exitcode:
                    raise SystemExit(f"batch {batch}: benchmark process failed (exit {proc.exitcode})")
            parts = [json.loads(out.read_text()) for out in outs]
            merged = {
                "wall": time.perf_counter() - t0 if args.procs > 1 else parts[0]["wall"],
                "peak_rss_gib": sum(p["peak_rss_gib"] for p in parts),
                "gpu_peak_gib": max(p["gpu_peak_gib"] for p in parts),
                "images": sum(p["images"] for p in parts),
                "size": parts[0]["size"],
                "results": {k: v for p in parts for k, v in p["results"].items()},
            }
            rows.append((batch, merged))
    base = rows[0][1]["results"]
    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU {platform.machine()} x{os.cpu_count()}, {args.procs} process(es) x {args.threads} torch threads"
        + (f", {args.select_workers} selection threads" if args.select_workers > 1 else "")
    )
    print(
        "| date | data | images | resolution | batch | s/image | images/hour | speed-up | peak RSS GiB | "
        "peak GPU GiB | revealed % | reached 98 % | same pixels as batch 1 | device |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for batch, r in rows:
        per_image = r["wall"] / r["images"]
        res = r["results"]
        same = sum(res[k][0] == base[k][0] for k in res)
        print(
            f"| {date.today()} | {data} x{args.scale:g} | {r['images']} | {r['size']} | {batch} | {per_image:.2f} | "
            f"{3600 / per_image:.0f} | {rows[0][1]['wall'] / r['wall']:.2f}x | {r['peak_rss_gib']:.2f} | "
            f"{r['gpu_peak_gib']:.2f} | {100 * np.mean([v[2] for v in res.values()]):.3f} | "
            f"{np.mean([v[1] for v in res.values()]):.0%} | {same}/{len(res)} | {device} |"
        )


if __name__ == "__main__":
    main()
