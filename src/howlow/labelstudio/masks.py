"""Label maps as Label Studio brush masks and back, RLE by label-studio-sdk's converter."""

from __future__ import annotations

import uuid

import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle

from ..io import VOID
from .config import ConfigNames


def brush_results(labels: np.ndarray, classes: list[dict], names: ConfigNames) -> list[dict]:
    """One brush region per class present in the (H, W) class map."""
    h, w = labels.shape
    return [
        {
            "id": uuid.uuid4().hex[:10],
            "from_name": names.brush,
            "to_name": names.image,
            "type": "brushlabels",
            "original_width": w,
            "original_height": h,
            "image_rotation": 0,
            "value": {
                "format": "rle",
                "rle": mask2rle((labels == c).astype(np.uint8) * 255),
                "brushlabels": [classes[c]["name"]],
            },
        }
        for c in np.unique(labels).tolist()
    ]


def label_map(results: list[dict], class_ids: dict[str, int]) -> np.ndarray:
    """(H, W) class map of a prediction's brush regions (pixels no mask covers: void, 255)."""
    brushes = [r for r in results if r.get("type") == "brushlabels"]
    h, w = brushes[0]["original_height"], brushes[0]["original_width"]
    out = np.full((h, w), VOID, np.uint8)
    for r in brushes:
        alpha = decode_rle(r["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
        out[alpha > 0] = class_ids[r["value"]["brushlabels"][0]]
    return out
