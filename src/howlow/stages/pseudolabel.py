"""Stage `pseudolabel`: each image's final Oracle network labels every pixel of its image, read by the
Oracle's scorer (with `oracle.geodesic`, blended with the vote of its revealed pixels).

Outputs in `data/pseudo/`: `<id>.png` (class ids), `<id>_conf.png` (max softmax probability x 255),
`metrics.json` (pseudo-label accuracy and mIoU against the ground truth, per image and mean).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..console import Progress
from ..data import Prepared, load_prepared
from ..io import write_json, write_png
from ..layout import Layout
from ..metrics import confusion, mean_iou, pixel_accuracy
from ..oracle import Scorer, oracle_network
from ..oracle.features import pixel_features
from ..params import Params
from .oracle import annotated_ids, load_result, use_runtime

log = logging.getLogger(__name__)


def predict_image(
    params: Params, image: np.ndarray, n_classes: int, state_dict: dict, revealed: list[list[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8, confidence float32 in [0, 1]) from a stored per-image network and its revealed
    pixels ([y, x, class, ...] rows), as the Oracle scored them."""
    net = oracle_network(params.oracle, n_classes, seed=0)
    net.load_state_dict(state_dict)
    net.eval()
    with torch.no_grad():
        logits = Scorer(image, params.oracle).logits(net.pixels(pixel_features(image, params.oracle)), revealed)
    # labels from the logits, as the Oracle scored them (softmax could round two classes into a tie)
    h, w = image.shape[:2]
    labels, conf = logits.argmax(1), logits.softmax(1).amax(1)
    return labels.numpy().astype(np.uint8).reshape(h, w), conf.numpy().reshape(h, w)


def pseudolabel_image(params: Params, image_id: str, prepared: Prepared, layout: Layout) -> dict:
    row = next(r for r in prepared.split("train") if r["id"] == image_id)
    state = torch.load(layout.oracle / f"{image_id}.pt", weights_only=True)
    revealed = load_result(image_id, layout.oracle)["revealed"]
    labels, conf = predict_image(params, prepared.image(row), prepared.n_classes, state, revealed)
    write_png(layout.pseudo / f"{image_id}_conf.png", np.round(conf * 255).astype(np.uint8))
    write_png(layout.pseudo / f"{image_id}.png", labels)
    cm = confusion(labels, prepared.label(row), prepared.n_classes)
    return {"id": image_id, "accuracy": pixel_accuracy(cm), "miou": mean_iou(cm), "mean_confidence": float(conf.mean())}


def run(params: Params, layout: Layout) -> dict:
    """Pseudo-labels for every image the Oracle annotated."""
    use_runtime(params)
    prepared = load_prepared(layout.prepared)
    ids = annotated_ids(layout)
    rows = []
    bar = Progress(log, "pseudolabel", len(ids), "image")
    for image_id in ids:
        rows.append(pseudolabel_image(params, image_id, prepared, layout))
        log.debug("%s: accuracy %.4f", image_id, rows[-1]["accuracy"])
        bar.update(f"{image_id} accuracy {rows[-1]['accuracy']:.4f}")
    bar.close()
    metrics = {
        "images": len(rows),
        "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
        "mean_miou": float(np.mean([r["miou"] for r in rows])),
        "per_image": rows,
    }
    write_json(layout.pseudo / "metrics.json", metrics)
    return metrics
