"""The one naming scheme of howlow's numbers, shared by DVC, MLflow and the reports (README: Names).

A number's name is its dotted path in the metrics tree that the evaluate stage writes, and MLflow
logs it under that name; a param's name is its dotted key in params.yaml, in DVC, MLflow and
`howlow params` alike. The tree has three branches:

  oracle.*            the per-image budget: `oracle.<x>` for one image (its nested MLflow run),
                      `oracle.mean_<x>` / `oracle.median_<x>` over the images (the pipeline run)
  pseudolabel.*       the pseudo-labels against the true labels of the training images
  dataset.<source>.*  the data-set network trained on that label source, scored on the val split

The tree is stored in two files: `eval/metrics.json` (DVC metrics: the headline numbers, so that
`dvc metrics show --md` and `dvc exp show --only-changed` stay a readable table) and
`eval/details.json` (the rest: medians, pixel accuracy, per-class IoU, share of full).
"""

from __future__ import annotations

from pathlib import Path

from .io import read_json
from .params import flatten

# the leaves of each branch that eval/metrics.json holds; every other leaf goes to eval/details.json
HEADLINE = {
    "oracle": ("images", "mean_revealed_pct", "mean_revealed_px", "reached_fraction", "mean_accuracy"),
    "pseudolabel": ("mean_accuracy", "mean_miou"),
    "dataset": ("miou", "annotated_pct"),  # of each source
}
# one image's numbers in its nested MLflow run: the curves (step = revealed pixels) and the end state
IMAGE_CURVES = ("accuracy", "miou")
IMAGE_FINAL = ("revealed_px", "revealed_pct", "rounds")


def split(tree: dict) -> tuple[dict, dict]:
    """The metrics tree as (eval/metrics.json, eval/details.json)."""
    headline: dict = {"oracle": {}, "pseudolabel": {}, "dataset": {}}
    details: dict = {"oracle": {}, "pseudolabel": {}, "dataset": {}}
    for branch in ("oracle", "pseudolabel"):
        for key, value in tree[branch].items():
            (headline if key in HEADLINE[branch] else details)[branch][key] = value
    for source, numbers in tree["dataset"].items():
        headline["dataset"][source] = {k: v for k, v in numbers.items() if k in HEADLINE["dataset"]}
        details["dataset"][source] = {k: v for k, v in numbers.items() if k not in HEADLINE["dataset"]}
    return headline, {k: v for k, v in details.items() if v}


def merge(headline: dict, details: dict) -> dict:
    """The metrics tree from its two files (the inverse of `split`)."""
    out = {k: dict(v) for k, v in headline.items()}
    for branch, part in details.items():
        out.setdefault(branch, {})
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out[branch].get(key), dict):
                out[branch][key] = {**out[branch][key], **value}
            else:
                out[branch][key] = value
    return out


def metric_names(tree: dict) -> dict[str, float]:
    """{name: value} of every number in the tree (None, for a class absent from val, left out)."""
    return {k: float(v) for k, v in flatten(tree).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def read_metrics(eval_dir: Path) -> dict:
    """The whole metrics tree of a finished evaluate stage (eval/metrics.json and eval/details.json)."""
    return merge(read_json(Path(eval_dir) / "metrics.json"), read_json(Path(eval_dir) / "details.json"))
