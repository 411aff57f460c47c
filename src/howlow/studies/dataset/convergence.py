"""Twice the schedule for each budget source (`howlow study-convergence-source`, stage
convergence_sources@<source>): the source at `study.convergence_target`, first seed, for twice
`train.epochs`, in rows/<source>-x2.json beside the same seed's row at the usual schedule.

`full`'s own check is rows.convergence (rows/full-x2.json). This one lives apart because every row's
stage depends on rows.py: code added there would make 65 finished trainings a study stale.
"""

from __future__ import annotations

from ...io import write_json
from ...layout import Layout
from ...params import Params, ParamsError
from . import budget_sources, row_path
from .rows import train_row

SUFFIX = "-x2"


def longer_name(source: str) -> str:
    """rows/<name>.json of a budget source trained for twice the epochs: 'pseudo' -> 'pseudo-x2'."""
    return source + SUFFIX


def checked(params: Params) -> bool:
    """Whether the study trains the budget sources at twice the schedule."""
    return params.study.convergence_check and params.study.convergence_target is not None


def run(params: Params, layout: Layout) -> dict:
    sources = params.train.label_sources
    if len(sources) != 1 or sources[0] not in budget_sources(params):
        raise ParamsError(
            f"train.label_sources: {sources}: the check trains one of study.label_sources {params.study.label_sources}"
        )
    name = longer_name(sources[0])
    if not checked(params):
        write_json(row_path(layout.root, name), {"name": name, "skipped": True})
        return {"skipped": True}
    longer = params.model_copy(
        update={
            "train": params.train.model_copy(update={"epochs": 2 * params.train.epochs}),
            "oracle": params.oracle.model_copy(update={"target_accuracy": params.study.convergence_target}),
        }
    )
    return train_row(longer, layout.root, sources[0], name)
