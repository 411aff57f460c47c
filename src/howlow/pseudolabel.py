"""Stage `pseudolabel`: each image's final Oracle network labels every pixel of its image (with
`oracle.geodesic`, blended with the geodesic vote of its revealed pixels, as the Oracle scored it).

Outputs in `data/pseudo/`: `<id>.png` (class ids), `<id>_conf.png` (max softmax probability x 255),
`metrics.json` (pseudo-label accuracy and mIoU against the ground truth, per image and mean).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .data import Prepared, load_prepared
from .io import ORACLE, PREPARED, PSEUDO, read_csv, write_json, write_png
from .metrics import confusion, mean_iou, pixel_accuracy
from .geodesic import blend, edge_cost, vote_for
from .oracle import image_features, load_result, oracle_network, use_runtime
from .params import Params


def predict_image(params: Params, image: np.ndarray, n_classes: int, state_dict: dict,
                  revealed: list[list[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8, confidence float32 in [0, 1]) from a stored per-image network and, with
    `oracle.geodesic`, the vote of its revealed pixels ([y, x, class, ...] rows), as the Oracle scored them."""
    net = oracle_network(params.oracle, n_classes, seed=0)
    net.load_state_dict(state_dict)
    net.eval()
    with torch.no_grad():
        logits = net(image_features(image, params.oracle)[None])[0]
    if params.oracle.geodesic:
        if not revealed:
            raise ValueError("oracle.geodesic: the pseudo-label needs the image's revealed pixels")
        h, w = logits.shape[1:]
        vote = vote_for(edge_cost(image, params.oracle.geodesic_edge), revealed)
        logits = blend(logits.flatten(1).T, vote, params.oracle.geodesic).T.reshape(-1, h, w)
    # labels from the logits, as the Oracle scored them (softmax could round two classes into a tie)
    labels, conf = logits.argmax(0), logits.softmax(0).amax(0)
    return labels.numpy().astype(np.uint8), conf.numpy()


def pseudolabel_image(params: Params, image_id: str, prepared: Prepared, oracle_dir: Path = ORACLE,
                      out_dir: Path = PSEUDO) -> dict:
    row = next(r for r in prepared.split("train") if r["id"] == image_id)
    state = torch.load(Path(oracle_dir) / f"{image_id}.pt", weights_only=True)
    revealed = load_result(image_id, oracle_dir)["revealed"]
    labels, conf = predict_image(params, prepared.image(row), prepared.n_classes, state, revealed)
    write_png(Path(out_dir) / f"{image_id}_conf.png", np.round(conf * 255).astype(np.uint8))
    write_png(Path(out_dir) / f"{image_id}.png", labels)
    cm = confusion(labels, prepared.label(row), prepared.n_classes)
    return {"id": image_id, "accuracy": pixel_accuracy(cm), "miou": mean_iou(cm),
            "mean_confidence": float(conf.mean())}


def pseudolabel(params: Params, oracle_dir: Path = ORACLE, out_dir: Path = PSEUDO) -> dict:
    """Stage entry point: pseudo-labels for every image the Oracle annotated."""
    use_runtime(params)
    prepared = load_prepared(PREPARED)
    ids = [r["id"] for r in read_csv(Path(oracle_dir) / "summary.csv")]
    rows = []
    for i, image_id in enumerate(ids, 1):
        rows.append(pseudolabel_image(params, image_id, prepared, oracle_dir, out_dir))
        print(f"[pseudolabel {i}/{len(ids)}] {image_id}: accuracy {rows[-1]['accuracy']:.4f}",
              file=sys.stderr, flush=True)
    metrics = {"images": len(rows),
               "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
               "mean_miou": float(np.mean([r["miou"] for r in rows])),
               "per_image": rows}
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
