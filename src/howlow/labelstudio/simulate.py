"""A simulated person annotating in a real Label Studio: the Oracle's selection rule on the map the
backend shows, one keypoint per update, through Label Studio's API, until the target accuracy.

Each click goes to Label Studio as the editor sends it (POST /api/ml/<id>/interactive-annotating,
the keypoint just placed as context); Label Studio calls the backend; the brush masks it returns are
decoded and compared with the ground truth to choose the next click. The finished annotation (the
keypoints and the last masks) is submitted, so the project's export is what a person's would be.
"""

from __future__ import annotations

import numpy as np

from ..metrics import confusion, pixel_accuracy
from .annotator import keypoint_result, next_click
from .masks import label_map
from .studio import predict_interactive


def annotate_task(
    client,
    ml_id: int,
    task: int,
    label: np.ndarray,
    classes: list[dict],
    target: float,
    max_clicks: int,
    rule: str = "error_center",
    seed: int = 0,
) -> dict:
    """Click until the backend's map reaches `target` pixel accuracy (void excluded) or `max_clicks`;
    the clicks, whether the target was reached, the accuracy per click, the last map and its results."""
    class_ids = {c["name"]: c["id"] for c in classes}
    rng, clicked = np.random.default_rng(seed), np.zeros(label.shape, bool)
    results: list[dict] = []
    pred, answer, curve = None, {}, []
    while len(results) < max_clicks:
        yx = next_click(pred, label, clicked, rng, rule)
        if yx is None:
            break
        clicked[yx] = True
        results.append(keypoint_result(*yx, classes[label[yx]]["name"], label.shape))
        answer = predict_interactive(client, ml_id, task, results[-1:])  # as the editor: the new keypoint
        if "data" not in answer:
            raise RuntimeError(f"task {task}: Label Studio gave no prediction: {answer.get('errors')}")
        pred = label_map(answer["data"]["result"], class_ids)
        curve.append(pixel_accuracy(confusion(pred, label, len(classes))))
        if curve[-1] >= target:
            break
    return {
        "clicks": len(results),
        "reached": bool(curve) and curve[-1] >= target,
        "curve": curve,
        "prediction": pred,
        "result": results + answer.get("data", {}).get("result", []),
    }


def submit(client, task: int, result: list[dict]) -> int:
    """The annotation a person submits: the keypoints and the last brush masks; its id."""
    return client.annotations.create(id=task, result=result).id
