"""The Oracle loop (howlow.oracle) on tiny synthetic images: stopping rules, budget bookkeeping,
determinism, the cues, and the stage's outputs and resume."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import UNIT_ORACLE, make_params, unit_oracle
from howlow.data import load_prepared, prepare, synthetic_scene
from howlow.io import VOID, read_csv, read_json
from howlow.layout import Layout
from howlow.metrics import confusion, pixel_accuracy
from howlow.oracle import image_seed, oracle_network, run_oracle
from howlow.oracle.features import grid_corners, image_features, n_features
from howlow.oracle.networks import StackedMLP
from howlow.params import Params
from howlow.stages import oracle as oracle_stage
from howlow.stages.oracle import load_result, oracle_image

H, W, K = 32, 40, 6
STRATEGIES = ("error_center", "random", "random_error")


pytestmark = pytest.mark.usefixtures("one_thread")


def scene(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    image, label = synthetic_scene(np.random.default_rng(seed), H, W)
    label = label.copy()
    label[:4, :6] = VOID  # extra void on top of the rings around cars
    return image, label


def oracle_params(**update):
    return unit_oracle(**{"target_accuracy": 0.9, "max_fraction": 0.3, **update})


def check_bookkeeping(run, label, p):
    """Invariants every run satisfies: budget arithmetic, curve/revealed consistency, no repeats, no void."""
    n = label.size
    pts = [(y, x) for y, x, _, _ in run.revealed]
    assert len(set(pts)) == len(pts)  # no pixel twice
    for y, x, cls, _ in run.revealed:
        assert label[y, x] != VOID and cls == label[y, x]  # void never revealed; true class recorded
    rounds = [r for *_, r in run.revealed]
    assert rounds == sorted(rounds) and rounds[0] == 0
    assert sorted(set(rounds)) == [c["round"] for c in run.curve] == list(range(len(run.curve)))
    for c in run.curve:
        shown = sum(r <= c["round"] for r in rounds)
        assert c["revealed"] == shown and c["revealed_fraction"] == shown / n
    assert run.curve[-1]["revealed"] == len(run.revealed)
    assert rounds.count(0) == p.initial_pixels
    assert all(rounds.count(r) <= p.pixels_per_round for r in range(1, len(run.curve)))
    assert len(run.revealed) <= max(int(p.max_fraction * n), p.initial_pixels)
    assert run.prediction.shape == label.shape


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reaches_target_and_stops_there(strategy):
    """A reachable target: reached, the last curve point is the first at or above it, budget adds up."""
    image, label = scene()
    p = oracle_params(strategy=strategy)
    run = run_oracle(image, label, K, p, seed=3)
    check_bookkeeping(run, label, p)
    acc = [c["accuracy"] for c in run.curve]
    assert run.reached and acc[-1] >= p.target_accuracy
    assert all(a < p.target_accuracy for a in acc[:-1])
    assert len(run.curve) >= 2  # the test image is not solved by the initial pixels alone
    assert len(run.revealed) == p.initial_pixels + p.pixels_per_round * (len(run.curve) - 1)
    # the reported accuracy is the one of the returned prediction, void excluded
    assert acc[-1] == pixel_accuracy(confusion(run.prediction, label, K))


def unfittable(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels independent of the image (random class per pixel): 100 % accuracy is out of reach."""
    rng = np.random.default_rng(seed)
    image, _ = synthetic_scene(rng, H, W)
    label = rng.integers(0, K, (H, W)).astype(np.uint8)
    label[10:20, 10:30] = VOID
    return image, label


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_max_fraction_stop(strategy):
    """An unreachable target stops at max_fraction: not reached, never more than max_fraction*H*W pixels."""
    image, label = unfittable()
    p = oracle_params(strategy=strategy, target_accuracy=1.0, max_fraction=0.1, steps_per_round=10)
    run = run_oracle(image, label, K, p, seed=0)
    check_bookkeeping(run, label, p)
    budget = int(0.1 * H * W)
    assert not run.reached and run.curve[-1]["accuracy"] < 1.0
    # it stops only when one more round would exceed the budget
    assert budget - p.pixels_per_round < len(run.revealed) <= budget
    assert len(run.revealed) == p.initial_pixels + p.pixels_per_round * (len(run.curve) - 1)


def test_initial_pixels_above_budget_still_revealed():
    """max_fraction smaller than initial_pixels: the initial pixels are revealed, then it stops."""
    image, label = unfittable()
    p = oracle_params(target_accuracy=1.0, max_fraction=0.001, initial_pixels=15, steps_per_round=5)
    run = run_oracle(image, label, K, p, seed=0)
    assert len(run.revealed) == 15 and len(run.curve) == 1 and not run.reached


def test_void_heavy_image_never_reveals_void():
    """Half the image void and most valid pixels revealed at random: still no void, no repeats."""
    image, label = unfittable(1)
    label[:, : W // 2] = VOID
    p = oracle_params(strategy="random", target_accuracy=1.0, max_fraction=0.4, pixels_per_round=60, steps_per_round=5)
    run = run_oracle(image, label, K, p, seed=0)
    check_bookkeeping(run, label, p)
    assert len(run.revealed) > 0.75 * (label != VOID).sum()  # so void would have been hit if allowed


def test_fewer_candidates_than_pixels_per_round():
    """Only 25 valid pixels: round 1 reveals the last 5, then it stops with every valid pixel revealed."""
    image, label = unfittable(2)
    valid = np.zeros((H, W), bool)
    valid[5:10, 5:10] = True
    label[~valid] = VOID
    p = oracle_params(
        strategy="random",
        target_accuracy=1.0,
        max_fraction=1.0,
        initial_pixels=20,
        pixels_per_round=10,
        steps_per_round=5,
    )
    run = run_oracle(image, label, K, p, seed=0)
    check_bookkeeping(run, label, p)
    assert {(y, x) for y, x, *_ in run.revealed} == set(zip(*np.nonzero(valid)))
    assert [r for *_, r in run.revealed].count(1) == 5 and len(run.curve) == 2


def test_deterministic_per_seed():
    """Same seed: identical revealed lists and curves; a different seed: a different run."""
    image, label = scene()
    p = oracle_params()
    a, b = run_oracle(image, label, K, p, 5), run_oracle(image, label, K, p, 5)
    assert a.revealed == b.revealed and a.curve == b.curve
    np.testing.assert_array_equal(a.prediction, b.prediction)
    c = run_oracle(image, label, K, p, 6)
    assert c.revealed != a.revealed


def test_cold_start_differs_from_warm_start():
    """warm_start=False retrains from scratch each round (same seed, same initial pixels, other curve)."""
    image, label = unfittable()
    p = oracle_params(target_accuracy=1.0, max_fraction=0.05, steps_per_round=10)
    warm = run_oracle(image, label, K, p, 0)
    cold = run_oracle(image, label, K, p.model_copy(update={"warm_start": False}), 0)
    assert warm.revealed[: p.initial_pixels] == cold.revealed[: p.initial_pixels]
    assert warm.curve[0] == cold.curve[0]  # round 0 is the same fresh network in both
    assert [c["loss"] for c in warm.curve[1:]] != [c["loss"] for c in cold.curve[1:]]


def test_image_features_shape_and_standardised():
    """Feature stack: RGB + 4 per scale + 2 coords channels, each zero-mean unit-std."""
    image, _ = scene()
    p = oracle_params(scales=[1.0, 3.0])
    x = image_features(image, p)
    assert x.shape == (3 + 4 * 2 + 2, H, W)
    assert torch.allclose(x.mean((1, 2)), torch.zeros(x.shape[0]), atol=1e-4)
    assert torch.allclose(x.std((1, 2)), torch.ones(x.shape[0]), atol=1e-3)
    assert image_features(image, p.model_copy(update={"coords": False})).shape[0] == 11


def test_fourier_position_cues():
    """`oracle.fourier` adds sin/cos of y and x per octave (standardised), and lets the network follow
    a label that only position explains: on a flat grey image a checkerboard of 16 squares is learned
    from fewer revealed pixels with 3 octaves than with plain coordinates (100 vs 260 px at seed 0)."""
    image = np.full((H, W, 3), 128, np.uint8)
    p = oracle_params(scales=[1.0], fourier=3)
    x = image_features(image, p)
    assert x.shape[0] == n_features(p) == 3 + 4 + 2 + 4 * 3
    xx = np.linspace(-1, 1, W, dtype=np.float32)
    expected = np.sin(np.pi * 4 * xx)  # octave 2, sin of x: channel 2 + 4 * 2 from the end of the stack
    got = x[-12 + 4 * 2 + 2].numpy()
    assert np.allclose(got, got[:1]), "a position channel of x must not vary along y"
    assert abs(np.corrcoef(got[0], expected)[0, 1]) > 0.999
    yy, xg = np.meshgrid(np.linspace(-1, 1, H), xx, indexing="ij")
    label = ((np.sin(np.pi * 2 * yy) > 0) ^ (np.sin(np.pi * 2 * xg) > 0)).astype(np.uint8)
    runs = {
        f: run_oracle(
            image, label, 2, oracle_params(scales=[1.0], fourier=f, target_accuracy=0.98, max_fraction=0.25), seed=0
        )
        for f in (0, 3)
    }
    assert runs[3].reached
    assert len(runs[3].revealed) < len(runs[0].revealed)


def test_grid_corners_interpolate_position():
    """Per lattice: four corner nodes inside that lattice's slice of the table, weights summing to 1,
    and bilinear interpolation of the nodes' own coordinates gives back the pixel's position."""
    h, w, grid = 13, 21, [2, 5]
    c = grid_corners(h, w, grid).numpy()
    assert c.shape == (8 * len(grid), h, w)
    idx, wts = c[:8].astype(np.int64), c[8:]
    yy, xx = np.mgrid[0:h, 0:w]
    offset = 0
    for level, n in enumerate(grid):
        i, wt = idx[4 * level : 4 * level + 4], wts[4 * level : 4 * level + 4]
        assert i.min() >= offset and i.max() < offset + (n + 1) ** 2
        np.testing.assert_allclose(wt.sum(0), 1.0, atol=1e-6)
        node_y, node_x = (i - offset) // (n + 1), (i - offset) % (n + 1)
        np.testing.assert_allclose((wt * node_y).sum(0), yy / (h - 1) * n, atol=1e-4)
        np.testing.assert_allclose((wt * node_x).sum(0), xx / (w - 1) * n, atol=1e-4)
        offset += (n + 1) ** 2
    p = oracle_params(scales=[1.0], grid=grid)
    x = image_features(np.zeros((h, w, 3), np.uint8), p)
    assert x.shape[0] == n_features(p) and torch.equal(x[-8 * len(grid) :], torch.from_numpy(c))


def test_grid_node_moves_only_its_own_cells():
    """The point of the lattice: one node's embedding changes the logits of the pixels in the (up to)
    four cells around it and nowhere else, where a sine would move the whole image."""
    h, w, n = 25, 33, 4  # cells of 6 x 8 px; node (2, 1) sits at pixel (12, 8)
    p = oracle_params(scales=[1.0], grid=[n])
    x = image_features(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8), p)
    f = x.flatten(1).T[None]
    net = StackedMLP(1, x.shape[0], K, 16, 2, grid=[n])
    net.reset_slot(0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = net(f)[0]
        net.grid[0, 2 * (n + 1) + 1] = 5.0
        after = net(f)[0]
    moved = (after - before).abs().amax(1).reshape(h, w).numpy() > 0
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (np.abs(yy - 12) < 6) & (np.abs(xx - 8) < 8)
    assert moved[inside].all() or moved[inside].mean() > 0.9  # a weight of 0 leaves the far edges alone
    assert not moved[~inside].any()


def test_grid_alone_carries_position():
    """On a flat grey image whose label is six small squares (only position explains it), the lattice
    is the network's only position cue when coords and octaves are off: with it the Oracle reaches 98 %,
    without it every pixel looks the same and the prediction cannot beat the majority class."""
    image = np.full((H, W, 3), 128, np.uint8)
    label = np.zeros((H, W), np.uint8)
    for y, x in [(3, 4), (5, 27), (14, 14), (22, 3), (24, 30), (12, 33)]:
        label[y : y + 6, x : x + 6] = 1
    runs = {
        tuple(g): run_oracle(
            image,
            label,
            2,
            oracle_params(scales=[1.0], coords=False, grid=g, target_accuracy=0.98, max_fraction=0.3),
            seed=0,
        )
        for g in ([], [4, 8])
    }
    assert runs[(4, 8)].reached
    assert not runs[()].reached
    assert runs[()].curve[-1]["accuracy"] <= (label == 0).mean() + 1e-9


# --------------------------------------------------------------------------- stage, outputs, resume
def stage_params(**oracle_update) -> Params:
    return make_params(
        {
            "data": {"synthetic": {"n_train": 2, "n_val": 1, "height": 32, "width": 40}},
            "oracle": {**UNIT_ORACLE, "target_accuracy": 0.9, "max_fraction": 0.3, **oracle_update},
            "runtime": {"threads": 1},
        }
    )


def stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_stage_outputs_and_resume(tmp_path):
    """The stage writes per-image json/pt, summary.csv, totals.json and the curves; an unfinished run
    resumes from results with the same fingerprint and recomputes when an oracle param changes; a
    finished run is redone whole (DVC reruns it only when something changed, code included)."""
    where = Layout(tmp_path)
    params = stage_params()
    prepare(params, where.prepared)
    totals = oracle_stage.run(params, where)
    ids = ["syn_train_000", "syn_train_001"]
    out = where.oracle
    for i in ids:
        assert (out / f"{i}.json").is_file() and (out / f"{i}.pt").is_file()
    summary = read_csv(out / "summary.csv")
    assert [r["id"] for r in summary] == ids
    assert read_json(out / "totals.json") == totals and totals["images"] == 2
    results = {i: load_result(i, out) for i in ids}
    for i, r in results.items():
        s = r["summary"]
        assert r["id"] == i and s["pixels"] == 32 * 40 and s["revealed"] == len(r["revealed"])
        assert s["rounds"] == len(r["curve"]) and s["accuracy"] == r["curve"][-1]["accuracy"]
        assert s["reached"] == (s["accuracy"] >= 0.9)
        assert s["revealed_pct"] == pytest.approx(100 * s["revealed"] / (32 * 40))
    assert totals["mean_revealed_px"] == pytest.approx(np.mean([results[i]["summary"]["revealed"] for i in ids]))
    curves = read_csv(where.plots / "oracle_curves.csv")
    assert len(curves) == sum(len(r["curve"]) for r in results.values())
    assert [c["image"] for c in curves] == [i for i in ids for _ in results[i]["curve"]]
    assert int(curves[-1]["revealed"]) == results[ids[-1]]["summary"]["revealed"]

    # the saved network reproduces the reported accuracy
    prep = load_prepared(where.prepared)
    row = prep.split("train")[0]
    image, label = prep.image(row), prep.label(row)
    net = oracle_network(params.oracle, prep.n_classes, 0)
    net.load_state_dict(torch.load(out / f"{ids[0]}.pt"))
    with torch.no_grad():
        pred = net(image_features(image, params.oracle)[None])[0].argmax(0).numpy()
    assert pixel_accuracy(confusion(pred, label, prep.n_classes)) == results[ids[0]]["summary"]["accuracy"]
    # ...and the stored run is what run_oracle gives for that image's seed
    run = run_oracle(image, label, prep.n_classes, params.oracle, image_seed(params.oracle.seed, ids[0]))
    assert run.revealed == results[ids[0]]["revealed"]

    # an unfinished run (no summary.csv) with the same fingerprint (a train param is not part of it):
    # the stored results are reused, nothing is rewritten
    (out / "summary.csv").unlink()
    before = {i: (stamp(out / f"{i}.json"), stamp(out / f"{i}.pt")) for i in ids}
    other_train = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 1})})
    assert oracle_image(other_train, ids[0], where) == results[ids[0]]["summary"]
    assert oracle_stage.run(params, where) == totals  # the stored summaries are reused
    assert {i: (stamp(out / f"{i}.json"), stamp(out / f"{i}.pt")) for i in ids} == before
    # a finished run: redone whole, to the same bytes (no timings in the outputs: they are logged)
    contents = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert "seconds" not in str(contents)
    assert sorted(p.name for p in (where.logs / "oracle").iterdir()) == [f"{i}.json" for i in ids]
    again = oracle_stage.run(params, where)
    assert again == totals and {p.name: p.read_bytes() for p in sorted(out.iterdir())} == contents
    assert all(stamp(out / f"{i}.json") != before[i][0] for i in ids)
    before = {i: (stamp(out / f"{i}.json"), stamp(out / f"{i}.pt")) for i in ids}

    # a changed oracle param: a new fingerprint, recomputed and rewritten
    changed = stage_params(target_accuracy=0.8)
    s = oracle_image(changed, ids[0], where)
    assert stamp(out / f"{ids[0]}.json") != before[ids[0]][0]
    new = load_result(ids[0], out)
    assert new["fingerprint"] != results[ids[0]]["fingerprint"] and new["summary"] == s
    assert s["accuracy"] >= 0.8 and s["revealed"] <= results[ids[0]]["summary"]["revealed"]

    # fewer images: the persisted output folder keeps only this run's images
    fewer = stage_params(target_accuracy=0.8, max_images=1)
    (out / "summary.csv").unlink()
    assert oracle_stage.run(fewer, where)["images"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{ids[0]}.json", f"{ids[0]}.pt", "summary.csv", "totals.json"]
    )


def test_stale_or_partial_result_is_recomputed(tmp_path):
    """A json without its .pt (an interrupted run) is not trusted: the image is computed again."""
    where = Layout(tmp_path)
    params = stage_params(max_fraction=0.05, target_accuracy=1.0, steps_per_round=5)
    prepare(params, where.prepared)
    first = oracle_image(params, "syn_train_000", where)
    (where.oracle / "syn_train_000.pt").unlink()
    before = stamp(where.oracle / "syn_train_000.json")
    again = oracle_image(params, "syn_train_000", where)
    assert (where.oracle / "syn_train_000.pt").is_file()
    assert stamp(where.oracle / "syn_train_000.json") != before
    assert again == first
    with pytest.raises(KeyError, match="syn_val_000"):
        oracle_image(params, "syn_val_000", where)  # validation images are not Oracle images
