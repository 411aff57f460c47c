"""A simulated person: where they click next, and the keypoint Label Studio records for it.

The person clicks where the prediction they see is wrong, with the Oracle's selection rule
(howlow.oracle.select; `error_center`: the middle of the largest wrong region), one click per update.
The benchmark and the Label Studio tests drive the backend with it.
"""

from __future__ import annotations

import uuid

import numpy as np

from ..io import VOID
from ..oracle.select import select_pixels
from .config import CLICKS, IMAGE


def next_click(
    pred: np.ndarray | None, label: np.ndarray, clicked: np.ndarray, rng: np.random.Generator, rule: str
) -> tuple[int, int] | None:
    """(y, x) of the next click given the prediction shown (None: nothing shown yet, all is wrong)."""
    valid = label != VOID
    error = valid if pred is None else (pred != label) & valid
    picked = select_pixels(rule, error, valid, clicked, 1, rng)
    return (int(picked[0][0]), int(picked[0][1])) if len(picked) else None


def keypoint_result(y: int, x: int, name: str, shape: tuple[int, int], tag: str = CLICKS, image: str = IMAGE) -> dict:
    """The keypoint region Label Studio records for a click on pixel (y, x): its centre in percent."""
    h, w = shape
    return {
        "id": uuid.uuid4().hex[:10],
        "type": "keypointlabels",
        "from_name": tag,
        "to_name": image,
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "width": 0.5, "keypointlabels": [name]},
    }
