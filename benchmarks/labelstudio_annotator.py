"""A simulated person annotates CamVid frames through a real Label Studio, next to the offline Oracle.

    python benchmarks/labelstudio_annotator.py --source ../shared/datasets/camvid --frames 3 --target 0.95

Label Studio (.venv-ls) and the backend run on 127.0.0.1; a project's tasks are the first training
frames (native 480x360, local files storage). The person clicks one keypoint per update where the map
Label Studio shows is wrong (the Oracle's `error_center` rule, howlow.labelstudio.simulate) until the
target pixel accuracy; the offline Oracle (howlow.oracle.run_oracle: 20 random pixels, then rounds of
10 or more) runs on the same frame with the same recipe. Prints a markdown table for
benchmarks/RESULTS.md: clicks (and % of the frame) each needed, and the person's seconds per click.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from label_studio_sdk import LabelStudio

from howlow.io import VOID, read_image, read_json, read_label, write_json
from howlow.labelstudio import studio
from howlow.labelstudio.config import labelling_config
from howlow.labelstudio.server import create_app, running
from howlow.labelstudio.simulate import annotate_task
from howlow.layout import Layout
from howlow.oracle import image_seed, run_oracle
from howlow.params import load_params
from labelstudio_common import frame_args, free_port, print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    frame_args(ap)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--max-clicks", type=int, default=600)
    args = ap.parse_args()
    source = Path(args.source).resolve()
    classes = read_json(source / "classes.json")
    params = load_params(
        args.params or ["params.yaml"],
        [f"labelstudio.document_root={source}", f"labelstudio.storage_roots=[{source / 'train'}]"],
    )
    torch.set_num_threads(params.labelstudio.threads)
    frames = sorted((source / "train").glob("*.png"))[: args.frames]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_json(Path(tmp) / "data" / "prepared" / "classes.json", classes)
        token, port = secrets.token_hex(20), free_port()
        proc = studio.start(
            Path(studio.VENV).resolve(), source, Path(tmp) / "ls", port, "b@howlow.invalid", secrets.token_hex(8), token
        )
        try:
            url = f"http://127.0.0.1:{port}"
            studio.wait_up(url, proc)
            with running(create_app(params, Layout(Path(tmp))), "127.0.0.1", free_port()) as backend:
                client = LabelStudio(base_url=url, api_key=token)
                project, ml = studio.make_project(
                    client, "simulated", labelling_config(classes), source / "train", backend
                )
                tasks = {Path(t.data["image"]).name: t.id for t in client.tasks.list(project=project)}
                for frame in frames:
                    label = read_label(source / "trainannot" / frame.name)
                    label[label == args.void_id] = VOID
                    t0 = time.perf_counter()
                    out = annotate_task(client, ml, tasks[frame.name], label, classes, args.target, args.max_clicks)
                    per_click = (time.perf_counter() - t0) / max(out["clicks"], 1)
                    oracle = run_oracle(
                        read_image(frame),
                        label,
                        len(classes),
                        params.oracle.model_copy(update={"target_accuracy": args.target}),
                        image_seed(params.oracle.seed, frame.stem),
                    )
                    n, k = label.size, len(oracle.revealed)
                    person = (
                        f"{out['clicks']} ({100 * out['clicks'] / n:.3f} %){'' if out['reached'] else ' not reached'}"
                    )
                    offline = f"{k} ({100 * k / n:.3f} %){'' if oracle.reached else ' not reached'}"
                    rows.append(
                        f"| {date.today()} | {frame.stem} | {args.target} | {person} | {offline} | {per_click:.2f} s |"
                    )
                    print(rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    print_table(
        args.params,
        ["date", "frame", "target", "simulated person: clicks", "offline Oracle: pixels", "seconds per click"],
        rows,
    )


if __name__ == "__main__":
    main()
