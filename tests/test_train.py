"""The training targets of each label source (howlow.train.label_map) and what each costs."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors

from howlow.data import load_prepared, prepare
from howlow.io import VOID, write_json, write_png
from howlow.params import Params
from howlow.train import annotated_pixels, augmentation, label_map


def test_label_sources_and_their_cost(tmp_path):
    params = Params.model_validate({"data": {"synthetic": {"n_train": 1, "n_val": 1, "height": 40, "width": 48}},
                                    "train": {"confidence": 0.6}})
    prepared = load_prepared(prepare(params, tmp_path / "prepared"))
    row = prepared.split("train")[0]
    truth = prepared.label(row)
    revealed = [[1, 2, int(truth[1, 2]), 0], [30, 40, int(truth[30, 40]), 1]]
    write_json(tmp_path / "oracle" / f"{row['id']}.json",
               {"revealed": revealed, "summary": {"height": 40, "width": 48}})
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
    assert annotated_pixels("sparse", sparse, truth, 2) == 2


def test_labels_of_an_oracle_at_twice_the_resolution_are_resampled(tmp_path):
    """study.oracle_scale: the Oracle annotated a 2x larger image; pseudo-labels are resampled
    nearest to the training image and a revealed pixel labels the training pixel it falls in."""
    params = Params.model_validate({"data": {"synthetic": {"n_train": 1, "n_val": 1, "height": 40, "width": 48}}})
    prepared = load_prepared(prepare(params, tmp_path / "prepared"))
    row = prepared.split("train")[0]
    truth = prepared.label(row)
    big = np.kron(truth, np.ones((2, 2), np.uint8))  # what the Oracle saw, 80x96
    revealed = [[5, 7, 3, 0], [79, 95, 1, 1]]  # native (y, x) -> training (2, 3) and (39, 47)
    write_json(tmp_path / "oracle" / f"{row['id']}.json",
               {"revealed": revealed, "summary": {"height": 80, "width": 96}})
    write_png(tmp_path / "pseudo" / f"{row['id']}.png", big)
    write_png(tmp_path / "pseudo" / f"{row['id']}_conf.png", np.full_like(big, 255))

    def target(source):
        return label_map(source, params, prepared, row, tmp_path / "oracle", tmp_path / "pseudo")

    assert np.array_equal(target("pseudo"), truth) and np.array_equal(target("confident"), truth)
    sparse = target("sparse")
    assert sparse[2, 3] == 3 and sparse[39, 47] == 1 and (sparse != VOID).sum() == 2
    assert (target("random") != VOID).sum() == 2


class _Terminal:
    """A stand-in stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_training_shows_a_progress_bar_on_a_terminal_and_lines_in_logs(tmp_path, monkeypatch, capsys):
    from howlow.io import write_csv
    from howlow.train import train_source

    params = Params.model_validate({"data": {"synthetic": {"n_train": 2, "n_val": 1, "height": 32, "width": 40}},
                                    "train": {"epochs": 3, "width": 4, "depth": 1, "crop": [16, 16],
                                              "batch_size": 2}})
    prepared = load_prepared(prepare(params, tmp_path / "prepared"))
    ids = [r["id"] for r in prepared.split("train")]
    write_csv(tmp_path / "oracle" / "summary.csv", [{"id": i, "revealed": 5} for i in ids])
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    info = train_source(params, "full", prepared, ids, tmp_path / "models", tmp_path / "oracle")
    assert "train full" in term.text and "3/3" in term.text and "loss=" in term.text
    assert len(info["loss"]) == 3
    monkeypatch.undo()
    train_source(params, "full", prepared, ids, tmp_path / "models", tmp_path / "oracle")
    err = capsys.readouterr().err
    assert "[train full] epoch 3/3" in err and "\r" not in err


def test_augmentation_moves_image_and_mask_together():
    """Crop-resize and flip apply one geometry to both: every pixel still pairs the right colour
    with its class (bar the resampled edge column), the mask is resampled nearest (no new ids), and
    the flip happens, not always."""
    h, w = 40, 48
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0, :, : w // 2] = 220  # left: red, class 0
    image[2, :, w // 2:] = 220  # right: blue, class 1
    mask = torch.zeros(h, w, dtype=torch.int64)
    mask[:, w // 2:] = 1
    transform = augmentation(Params(), (32, 32))
    torch.manual_seed(0)
    flips = 0
    for _ in range(12):
        im, m = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert im.shape == (3, 32, 32) and m.shape == (32, 32)
        assert set(m.unique().tolist()) <= {0, 1}
        red, blue = im[0].int(), im[2].int()
        agree = torch.where(m == 0, red > blue, blue > red)
        assert agree.float().mean() > 0.9  # independent geometries would agree about half the time
        flips += int(m[0, 0] == 1 and m[0, -1] == 0)
    assert 0 < flips < 12
