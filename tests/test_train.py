"""The data-set network's training (howlow.segmentation): each label source's targets and cost,
the joint augmentation, progress output, the per-epoch history, evaluation, and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from torchvision import tv_tensors

from conftest import make_params, merge, project_env
from howlow.data import load_prepared, prepare
from howlow.io import VOID, write_csv, write_png
from howlow.layout import Layout
from howlow.segmentation.datasets import Annotation
from howlow.segmentation.engine import save_checkpoint
from howlow.segmentation.models import build_model
from howlow.segmentation.train import annotated_pixels, augmentation, evaluate, label_map, train_source

# tiny synthetic data and network: a training takes well under a second
TINY = {
    "data": {"synthetic": {"n_train": 3, "n_val": 1, "height": 32, "width": 40}},
    "train": {"epochs": 3, "width": 4, "depth": 1, "crop": [16, 16], "batch_size": 2, "eval_every": 0},
    "runtime": {"threads": 1},
}


def tiny_project(tmp_path, extra: dict | None = None):
    """Params, a Layout rooted at tmp_path with prepared data, the training ids and an Oracle summary
    (enough for the `full` source)."""
    params = make_params(merge(TINY, extra or {}))
    layout = Layout(tmp_path)
    prepared = load_prepared(prepare(params, layout.prepared))
    ids = [r["id"] for r in prepared.split("train")]
    write_csv(layout.oracle / "summary.csv", [{"id": i, "revealed": 5, "pixels": 32 * 40} for i in ids])
    return params, layout, prepared, ids


def test_label_sources_and_their_cost(tmp_path):
    params = make_params(
        {"data": {"synthetic": {"n_train": 1, "n_val": 1, "height": 40, "width": 48}}, "train": {"confidence": 0.6}}
    )
    layout = Layout(tmp_path)
    prepared = load_prepared(prepare(params, layout.prepared))
    row = prepared.split("train")[0]
    truth = prepared.label(row)
    revealed = [[1, 2, int(truth[1, 2]), 0], [30, 40, int(truth[30, 40]), 1]]
    ann = Annotation(np.array(revealed), 40, 48)
    pseudo = (truth.astype(int) + 1).clip(0, 5).astype(np.uint8)
    conf = np.zeros_like(truth)
    conf[:, :24] = 200  # 200/255 = 0.78 >= 0.6: kept; 0 elsewhere: dropped
    write_png(layout.pseudo / f"{row['id']}.png", pseudo)
    write_png(layout.pseudo / f"{row['id']}_conf.png", conf)
    write_png(layout.random_pseudo / f"{row['id']}.png", truth)

    def target(source):
        return label_map(source, params, prepared, row, layout, ann)

    assert np.array_equal(target("full"), truth)
    assert np.array_equal(target("pseudo"), pseudo)
    assert np.array_equal(target("random_pseudo"), truth)  # its own folder
    assert annotated_pixels("random_pseudo", truth, truth, 2) == 2  # the clicks, not the labels
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
    params = make_params({"data": {"synthetic": {"n_train": 1, "n_val": 1, "height": 40, "width": 48}}})
    layout = Layout(tmp_path)
    prepared = load_prepared(prepare(params, layout.prepared))
    row = prepared.split("train")[0]
    truth = prepared.label(row)
    big = np.kron(truth, np.ones((2, 2), np.uint8))  # what the Oracle saw, 80x96
    ann = Annotation(np.array([[5, 7, 3, 0], [79, 95, 1, 1]]), 80, 96)  # -> training (2, 3) and (39, 47)
    write_png(layout.pseudo / f"{row['id']}.png", big)
    write_png(layout.pseudo / f"{row['id']}_conf.png", np.full_like(big, 255))

    def target(source):
        return label_map(source, params, prepared, row, layout, ann)

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


def test_training_shows_a_progress_bar_on_a_terminal_and_lines_in_logs(tmp_path, monkeypatch, caplog, one_thread):
    import logging

    caplog.set_level(logging.INFO, logger="howlow")
    params, layout, prepared, ids = tiny_project(tmp_path)
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    info = train_source(params, "full", prepared, ids, layout)
    assert "train full" in term.text and "3/3" in term.text and "loss " in term.text and "<" in term.text  # ETA
    assert len(info["loss"]) == 3 and not caplog.records  # the bar, not log lines
    monkeypatch.undo()
    train_source(params, "full", prepared, ids, layout)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert any(m.startswith("train full: 1/3 epochs (33 %)") and "ETA" in m for m in lines), lines
    assert any(m.startswith("train full: 3/3 epochs (100 %)") for m in lines), lines


def test_the_json_has_the_learning_curve(tmp_path, one_thread):
    """models/<source>.json keeps the keys the evaluate stage, the study and tracking read, and adds
    one history row per epoch, with the val mIoU every `eval_every` epochs and after the last."""
    params, layout, prepared, ids = tiny_project(tmp_path, {"train": {"epochs": 5, "eval_every": 2}})
    timing = tmp_path / "logs" / "full.json"
    info = train_source(params, "full", prepared, ids, layout, timing=timing)
    stored = yaml.safe_load((layout.models / "full.json").read_text())
    # the times are returned and logged, never in the output: it is a pure function of the inputs
    took = yaml.safe_load(timing.read_text())
    assert stored == {k: v for k, v in info.items() if k not in took} and set(took) == {"seconds", "epoch_seconds"}
    assert "seconds" not in json.dumps(stored)
    for key in (
        "source",
        "images",
        "annotated_pixels",
        "annotated_pct",
        "total_pixels",
        "epochs",
        "final_loss",
        "loss",
    ):
        assert key in info
    history = info["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in history] == info["loss"] and info["final_loss"] == info["loss"][-1]
    assert all(set(r) == {"epoch", "loss", "lr", "val_miou", "val_pixel_accuracy"} for r in history)
    # the training time after each epoch: the learning curve's x, ending at the training's total
    assert len(took["epoch_seconds"]) == 5 and took["epoch_seconds"] == sorted(took["epoch_seconds"])
    assert took["epoch_seconds"][-1] == pytest.approx(took["seconds"], abs=0.01) and took == {k: info[k] for k in took}
    scored = [r["epoch"] for r in history if r["val_miou"] is not None]
    assert scored == [2, 4, 5]
    assert all(0 <= r["val_miou"] <= 1 and 0 <= r["val_pixel_accuracy"] <= 1 for r in history if r["val_miou"])
    assert not (layout.models / "full.ckpt").exists()  # removed once the model is written


class _Channels(torch.nn.Module):
    """Its input as logits: the prediction is the argmax over the input's channels."""

    def forward(self, x):
        return x


def test_evaluate_counts_a_confusion_matrix_and_ignores_void():
    # one 2x3 image, 3 classes; predictions (argmax of channels) and truth by hand
    pred = torch.tensor([[0, 1, 2], [2, 2, 1]])
    truth = torch.tensor([[0, 1, 1], [2, VOID, 0]])
    image = torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1).float()
    loader = torch.utils.data.DataLoader([(image, truth), (image, torch.full_like(truth, VOID))], batch_size=1)
    cm = evaluate(_Channels(), loader, torch.device("cpu"), 3)
    # rows truth, columns prediction: (0,0) (1,1) (1,2) (2,2) (0,1); the void pixels count nowhere
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]


def _state_after(out_dir):
    return torch.load(out_dir / "full.pt", weights_only=True)["state_dict"]


def test_a_killed_training_resumes_to_the_same_weights(tmp_path, one_thread):
    """`howlow train` killed (SIGKILL) after a checkpoint, then rerun: it resumes from the checkpoint
    and ends with the weights and curve of a training that never stopped, bit for bit."""
    params, layout, prepared, ids = tiny_project(
        tmp_path, {"train": {"epochs": 80, "label_sources": ["full"], "eval_every": 20}}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
    ref = train_source(params, "full", prepared, ids, layout, tmp_path / "reference")

    env = project_env(tmp_path)
    cmd = [sys.executable, "-m", "howlow.cli", "train"]
    ckpt = layout.models / "full.ckpt"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the training ended before it could be killed"
    killed_at = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= killed_at < 80 and not (layout.models / "full.pt").exists()

    (layout.models / "stale.json").write_text("{}")  # the stage keeps only the checkpoints of its sources
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INFO howlow.segmentation.train: full: resuming after epoch" in done.stderr
    resumed, expected = _state_after(layout.models), _state_after(tmp_path / "reference")
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    # every output the same bytes as the uninterrupted training's
    for name in ("full.json", "full.pt"):
        assert (layout.models / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    info = yaml.safe_load((layout.models / "full.json").read_text())
    assert info["history"] == ref["history"] and info["loss"] == ref["loss"]
    assert sorted(p.name for p in layout.models.iterdir()) == ["full.json", "full.pt"]


def test_a_checkpoint_of_other_inputs_or_unreadable_is_not_resumed(tmp_path, caplog, one_thread):
    """A checkpoint whose fingerprint differs (other params, images or code) or that cannot be read
    is set aside with a message: the training starts over and ends as if there had been none."""
    params, layout, prepared, ids = tiny_project(tmp_path)
    train_source(params, "full", prepared, ids, layout, tmp_path / "clean")
    clean = _state_after(tmp_path / "clean")
    model = build_model("unet", 3, prepared.n_classes, 4, 1, torch.Generator().manual_seed(5))
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    save_checkpoint(
        layout.models / "full.ckpt",
        fingerprint="other",
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        generator=torch.Generator(),
        epoch=2,
        history=[{}, {}],
        epoch_seconds=[0.5, 1.0],
    )
    info = train_source(params, "full", prepared, ids, layout)
    assert "checkpoint of other params, images or code" in caplog.text
    assert len(info["history"]) == 3 and all(torch.equal(v, clean[k]) for k, v in _state_after(layout.models).items())
    (layout.models / "full.ckpt").write_bytes(b"not a checkpoint")
    caplog.clear()
    train_source(params, "full", prepared, ids, layout)
    assert "unreadable checkpoint" in caplog.text
    assert all(torch.equal(v, clean[k]) for k, v in _state_after(layout.models).items())


def test_augmentation_moves_image_and_mask_together():
    """Crop-resize and flip apply one geometry to both: every pixel still pairs the right colour
    with its class (bar the resampled edge column), the mask is resampled nearest (no new ids), and
    the flip happens, not always."""
    h, w = 40, 48
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0, :, : w // 2] = 220  # left: red, class 0
    image[2, :, w // 2 :] = 220  # right: blue, class 1
    mask = torch.zeros(h, w, dtype=torch.int64)
    mask[:, w // 2 :] = 1
    transform = augmentation(make_params(), (32, 32))
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


def test_without_zoom_the_crop_keeps_the_image_scale():
    """train.zoom [] crops at the image's own scale: every 8x8 crop of a 16x16 ramp is a window of it."""
    ramp = torch.arange(256, dtype=torch.int64).view(16, 16)
    image = tv_tensors.Image(torch.stack([ramp.to(torch.uint8)] * 3))
    transform = augmentation(make_params({"train": {"zoom": []}}), (8, 8))
    torch.manual_seed(0)
    for _ in range(6):
        _, m = transform(image, tv_tensors.Mask(ramp))
        if m[0, 0] > m[0, -1]:  # flipped back, so the window reads left to right
            m = m.flip(-1)
        y, x = divmod(int(m[0, 0]), 16)
        assert torch.equal(m, ramp[y : y + 8, x : x + 8])


def test_median_frequency_weights_favour_rare_classes():
    """Class 0 fills 31 of the 32 pixels of two images, class 1 one pixel of one image, class 2 none:
    f = (31/32, 1/16), weights median(f) / f, an absent class weighs 1; void is not counted."""
    from howlow.segmentation.datasets import class_weights

    a = np.zeros((4, 4), np.uint8)
    a[0, 0] = 1
    b = np.zeros((4, 4), np.uint8)
    c = np.full((4, 4), VOID, np.uint8)
    params = make_params({"train": {"class_weights": "median_frequency"}})
    w = class_weights(params, [a, b, c], 3)
    median = np.median([31 / 32, 1 / 16])
    assert w.tolist() == pytest.approx([median / (31 / 32), median / (1 / 16), 1.0])
    assert w[1] > 1 > w[0]
    assert class_weights(make_params({"train": {"class_weights": "none"}}), [a], 3) is None


def test_a_batchnorm_network_saves_and_loads_as_trained(tmp_path, one_thread):
    """train.norm batch: the saved network rebuilds with BatchNorm and scores as in training."""
    from howlow.segmentation.train import evaluate_source, load_model

    params, layout, prepared, ids = tiny_project(tmp_path, {"train": {"norm": "batch", "eval_every": 3}})
    info = train_source(params, "full", prepared, ids, layout)
    model, _, _ = load_model(layout.models / "full.pt")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) and not model.training
    scored = evaluate_source(prepared, layout.models / "full.pt")
    assert scored["miou"] == pytest.approx(info["history"][-1]["val_miou"])
