"""Stage `validate`: Great Expectations checks of `data/prepared/` into `reports/validation/`; every
run's GX results are kept in `logs/validation/` (outside DVC's outputs), so the Data Docs show the
history."""

from __future__ import annotations

from ..layout import Layout
from ..params import Params
from ..validation import validate


def run(params: Params, layout: Layout) -> dict:
    return validate(params, layout.prepared, layout.validation, layout.logs / "validation")
