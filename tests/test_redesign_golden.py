"""The redesign moved the Oracle's code without changing what it computes: the same revealed pixels
for the same seed as before the move (commit d741384), on the embedded default and on 4 CamVid frames.

tests/data/golden_revealed.json was written by the pre-move code: the Oracle of params.yaml on the
first 4 embedded training images, and the adopted CamVid recipe (studies/budget_camvid, the val30
run of reports/oracle_budget) on 4 evenly spaced native val frames; 4 images a batch, one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, SHARED
from howlow.data import load_prepared, prepare
from howlow.oracle import image_seed, run_oracle_many
from howlow.params import load_params

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_revealed.json").read_text())
CAMVID_RECIPE = ROOT / "studies" / "budget_camvid" / "params.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def revealed(params, split: str, n: int, tmp: Path) -> dict[str, list]:
    prepared = load_prepared(prepare(params, tmp / "prepared", ROOT))
    rows = prepared.split(split)[:n]
    items = [(r["id"], prepared.image(r), prepared.label(r), image_seed(params.oracle.seed, r["id"])) for r in rows]
    out: dict[str, list] = {}
    run_oracle_many(items, prepared.n_classes, params.oracle, 4, lambda key, run: out.__setitem__(key, run.revealed))
    return out


def test_embedded_default_reveals_the_same_pixels(tmp_path):
    got = revealed(load_params(ROOT / "params.yaml"), "train", 4, tmp_path)
    assert got == GOLDEN["embedded"]["revealed"]


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED / "camvid").is_dir(), reason="needs ../shared/datasets/camvid")
def test_camvid_adopted_recipe_reveals_the_same_pixels(tmp_path):
    params = load_params(
        [ROOT / "params.yaml", CAMVID_RECIPE],
        [f"data.source={SHARED / 'camvid'}", "data.max_train=1", "data.max_val=4"],
    )
    got = revealed(params, "val", 4, tmp_path)
    assert got == GOLDEN["camvid"]["revealed"]
