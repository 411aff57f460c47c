"""Stage `validate`: Great Expectations checks of `data/prepared/` into `reports/validation/`."""

from __future__ import annotations

from ..layout import Layout
from ..params import Params
from ..validation import validate


def run(params: Params, layout: Layout) -> dict:
    return validate(params, layout.prepared, layout.validation)
