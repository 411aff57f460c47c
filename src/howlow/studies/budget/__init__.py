"""The per-image Oracle budget study: a DVC pipeline in `studies/<name>/` (how to run one: reports/oracle_budget.md).

How few revealed pixels bring a per-image network, trained from scratch, to the target accuracy?
A study folder holds `params.yaml` (a small overlay on the project's params.yaml) and `dvc.yaml`:

    prepare                      the data set into data/prepared (howlow.stages.prepare)
    run@<rule>-<seed>            one selection rule and seed on the first `budget.images` images of
                                 `budget.split`: runs/<rule>-<seed>.json (`howlow budget-run`)
    order                        the training-order experiment on the first rule's first seed:
                                 training_order.json (`howlow budget-order`)
    report                       mean ± std over seeds, paired differences against the first rule:
                                 results/ (`howlow budget-report`)

One (rule, seed) per DVC stage, so DVC's lock and run cache skip the finished ones when a rule or a
seed is added. The modules here read and write files; the Oracle itself is howlow.oracle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data import Prepared
from ...layout import Layout
from ...params import Params


def run_path(layout: Layout, rule: str, seed: int) -> Path:
    """Where stage run@<rule>-<seed> writes (the same path as its dvc.yaml `outs`)."""
    return layout.root / "runs" / f"{rule}-{seed}.json"


def order_path(layout: Layout) -> Path:
    return layout.root / "training_order.json"


def results_dir(layout: Layout) -> Path:
    return layout.root / "results"


def selected(params: Params, prepared: Prepared) -> list[dict]:
    """The images a study measures: the first `budget.images` of `budget.split` (0 = all)."""
    rows = prepared.split(params.budget.split)
    return rows[: params.budget.images or None]


def items(params: Params, prepared: Prepared, seed: int) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(id, image, label, per-image seed) of the selected images, as the Oracle takes them."""
    from ...oracle import image_seed

    return [
        (r["id"], prepared.image(r), prepared.label(r), image_seed(seed, r["id"])) for r in selected(params, prepared)
    ]
