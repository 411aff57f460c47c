"""Keypoints as clicks: Label Studio places a keypoint at x, y in percent of the image's width and
height; the pixel under it is [floor(y% x H / 100), floor(x% x W / 100)], clipped to the image."""

from __future__ import annotations

import math

import numpy as np

from .images import BadRequest

Point = tuple[float, float, int]  # y %, x %, class


def keypoints(results: object, tag: str | None, class_ids: dict[str, int]) -> dict[str, Point]:
    """Region id -> (y %, x %, class) of the keypoints of control `tag` (None: any) in a list of
    Label Studio results, in their order (a result without id is named by its place and label);
    other results (brush masks, other tags) are skipped. A malformed keypoint or an unknown label
    raises BadRequest(422) naming it."""
    if not isinstance(results, list):
        raise BadRequest(422, "context.result: expected a list of results")
    out: dict[str, Point] = {}
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise BadRequest(422, f"context.result[{i}]: expected an object")
        if r.get("type") != "keypointlabels" or tag not in (None, r.get("from_name")):
            continue
        value = r.get("value")
        if not isinstance(value, dict):
            raise BadRequest(422, f"context.result[{i}].value: expected an object")
        x, y, labels = value.get("x"), value.get("y"), value.get("keypointlabels")
        for name, v in (("x", x), ("y", y)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 100:
                raise BadRequest(422, f"context.result[{i}].value.{name}: expected a number in [0, 100] (percent)")
        if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
            raise BadRequest(422, f"context.result[{i}].value.keypointlabels: expected one label")
        if labels[0] not in class_ids:
            raise BadRequest(
                422, f"context.result[{i}]: unknown label {labels[0][:100]!r} (classes: {sorted(class_ids)})"
            )
        assert isinstance(x, (int, float)) and isinstance(y, (int, float))
        rid = r.get("id")
        out[rid if isinstance(rid, str) and rid else f"{x},{y},{labels[0]}"] = (
            float(y),
            float(x),
            class_ids[labels[0]],
        )
    return out


def to_pixels(points: list[Point], shape: tuple[int, int]) -> np.ndarray:
    """(n, 3) [y, x, class]: the pixel under each keypoint of an image of `shape`."""
    h, w = shape
    rows = [[min(int(y * h / 100), h - 1), min(int(x * w / 100), w - 1), c] for y, x, c in points]
    return np.array(rows, np.int64).reshape(-1, 3)


def unique_pixels(clicks: np.ndarray) -> np.ndarray:
    """The clicks with one per pixel: a pixel clicked again takes the later click's class, at the
    earlier click's place in the order (a person correcting a click)."""
    seen: dict[tuple[int, int], int] = {}
    rows: list[list[int]] = []
    for y, x, c, *rest in clicks.tolist():
        if (y, x) in seen:
            rows[seen[(y, x)]][2] = c
        else:
            seen[(y, x)] = len(rows)
            rows.append([y, x, c, *rest])
    return np.array(rows, np.int64).reshape(-1, clicks.shape[1])
