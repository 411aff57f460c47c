"""The training targets of each label source (howlow.train.label_map) and what each costs."""

from __future__ import annotations

import numpy as np

from howlow.data import load_prepared, prepare
from howlow.io import VOID, write_json, write_png
from howlow.params import Params
from howlow.train import annotated_pixels, label_map


def test_label_sources_and_their_cost(tmp_path):
    params = Params.model_validate({"data": {"synthetic": {"n_train": 1, "n_val": 1, "height": 40, "width": 48}},
                                    "train": {"confidence": 0.6}})
    prepared = load_prepared(prepare(params, tmp_path / "prepared"))
    row = prepared.split("train")[0]
    truth = prepared.label(row)
    revealed = [[1, 2, int(truth[1, 2]), 0], [30, 40, int(truth[30, 40]), 1]]
    write_json(tmp_path / "oracle" / f"{row['id']}.json", {"revealed": revealed})
    pseudo = (truth.astype(int) + 1).clip(0, 5).astype(np.uint8)
    conf = np.zeros_like(truth)
    conf[:, :24] = 200  # 200/255 = 0.78 >= 0.6: kept; 0 elsewhere: dropped
    write_png(tmp_path / "pseudo" / f"{row['id']}.png", pseudo)
    write_png(tmp_path / "pseudo" / f"{row['id']}_conf.png", conf)

    def target(source):
        return label_map(source, params, prepared, row, tmp_path / "oracle", tmp_path / "pseudo")

    assert np.array_equal(target("full"), truth)
    assert np.array_equal(target("pseudo"), pseudo)
    confident = target("confident")
    assert np.array_equal(confident[:, :24], pseudo[:, :24]) and (confident[:, 24:] == VOID).all()
    sparse = target("sparse")
    assert (sparse != VOID).sum() == 2 and sparse[30, 40] == truth[30, 40]
    random = target("random")
    assert (random != VOID).sum() == 2 and np.array_equal(random[random != VOID], truth[random != VOID])
    assert np.array_equal(random, target("random"))  # seeded per image
    # cost: every valid pixel for full, the revealed pixels for the Oracle-derived sources
    assert annotated_pixels("full", truth, truth, 2) == (truth != VOID).sum()
    assert annotated_pixels("confident", confident, truth, 2) == 2 == annotated_pixels("pseudo", pseudo, truth, 2)
    assert annotated_pixels("random", random, truth, 2) == 2
