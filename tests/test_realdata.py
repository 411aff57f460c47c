"""Real-data smoke: 2 CamVid frames at scale 0.25 and 2 Dubai tiles at scale 0.1 through prepare,
oracle and pseudolabel. Skipped when ../shared/datasets is absent (a user's fresh clone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SHARED, make_params
from howlow.data import load_prepared, prepare
from howlow.io import VOID, read_csv, read_json, read_label
from howlow.layout import Layout
from howlow.stages import oracle, pseudolabel

pytestmark = pytest.mark.realdata

CASES = {
    "camvid": {"layout": "segnet", "void_id": 11, "scale": 0.25, "n_classes": 11, "size": (90, 120)},
    "dubai_aerial": {"layout": "images_labels", "void_id": 255, "scale": 0.1, "n_classes": 5, "size": None},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_oracle_and_pseudolabels_on_real_images(name, tmp_path):
    root = SHARED / name
    if not (root / "classes.json").is_file():
        pytest.skip(f"{root} not available")
    case = CASES[name]
    where = Layout(tmp_path)
    torch.set_num_threads(2)
    params = make_params(
        {
            "data": {
                "source": str(root),
                "layout": case["layout"],
                "void_id": case["void_id"],
                "scale": case["scale"],
                "max_train": 2,
                "max_val": 1,
            },
            "oracle": {"max_fraction": 0.02},
        }
    )  # caps the rounds: a smoke test, not a budget study
    prepare(params, where.prepared)
    prepared = load_prepared(where.prepared)
    assert prepared.n_classes == case["n_classes"] and len(prepared.split("train")) == 2
    if case["size"]:
        assert {(int(r["height"]), int(r["width"])) for r in prepared.rows} == {case["size"]}

    totals = oracle.run(params, where)
    assert totals["images"] == 2
    for s in read_csv(where.oracle / "summary.csv"):
        label = prepared.label(next(r for r in prepared.split("train") if r["id"] == s["id"]))
        assert set(np.unique(label)) <= set(range(case["n_classes"])) | {VOID}  # void id mapped to 255
        result = read_json(where.oracle / f"{s['id']}.json")
        revealed = np.array(result["revealed"])
        assert len(revealed) == int(s["revealed"]) > 0
        assert float(s["revealed_pct"]) == pytest.approx(100 * len(revealed) / label.size)
        assert (label[revealed[:, 0], revealed[:, 1]] == revealed[:, 2]).all()  # true classes
        assert (revealed[:, 2] != VOID).all() and len({(y, x) for y, x, *_ in revealed}) == len(revealed)
        assert len(revealed) <= max(0.02 * label.size, params.oracle.initial_pixels)
        if s["reached"] == "True":
            assert float(s["accuracy"]) >= params.oracle.target_accuracy

    metrics = pseudolabel.run(params, where)
    for row in metrics["per_image"]:
        pseudo = read_label(where.pseudo / f"{row['id']}.png")
        stored = read_json(where.oracle / f"{row['id']}.json")["summary"]
        assert pseudo.max() < case["n_classes"]
        # the stored per-image network reproduces the Oracle's final accuracy
        assert row["accuracy"] == pytest.approx(stored["accuracy"], abs=1e-6)
