"""The batched engine (howlow.oracle.engine): G per-image networks in one step give the same results as one
image at a time, slots are independent, and a finished slot takes the next image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import unit_oracle
from howlow.data import synthetic_scene
from howlow.oracle import oracle_network, run_oracle, run_oracle_many
from howlow.oracle.engine import SlotAdam
from howlow.oracle.features import image_features
from howlow.oracle.networks import PixelMLP, StackedMLP

K = 6


pytestmark = pytest.mark.usefixtures("one_thread")


def images(sizes):
    return [
        (f"im{i}", *synthetic_scene(np.random.default_rng(10 + i), h, w), 100 + i) for i, (h, w) in enumerate(sizes)
    ]


def params(**update):
    return unit_oracle(**{"target_accuracy": 0.95, "max_fraction": 0.2, **update})


def batched(items, p, batch_size, select_workers=1):
    runs, order = {}, []

    def done(key, run):
        runs[key] = run
        order.append(key)

    run_oracle_many(items, K, p, batch_size, done, select_workers=select_workers)
    return runs, order


def assert_same(a, b, exact=True):
    """Same revealed pixels (order included), accuracies and predictions. Weights and losses: bit for
    bit when every slot trains on the same number of pixels; otherwise the padded GEMM of the last
    layer's weight gradient may sum in another order, so they agree to float rounding."""
    assert a.revealed == b.revealed
    assert [c["accuracy"] for c in a.curve] == [c["accuracy"] for c in b.curve]
    assert a.reached == b.reached
    np.testing.assert_array_equal(a.prediction, b.prediction)
    loss_a, loss_b = [c["loss"] for c in a.curve], [c["loss"] for c in b.curve]
    if exact:
        assert loss_a == loss_b
        for k, v in a.model.state_dict().items():
            assert torch.equal(v, b.model.state_dict()[k]), k
    else:
        np.testing.assert_allclose(loss_a, loss_b, rtol=1e-4, atol=1e-6)
        for k, v in a.model.state_dict().items():
            torch.testing.assert_close(v, b.model.state_dict()[k], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("strategy", ["error_center", "random_error", "margin"])
def test_batch_of_three_equals_three_sequential_runs(strategy):
    """Bit for bit on CPU: revealed pixels (order included), accuracies, losses, predictions, weights
    (the three images reveal the same number of pixels per round, so no slot is padded)."""
    items = images([(48, 64)] * 3)
    p = params(strategy=strategy)
    runs, _ = batched(items, p, 3)
    for key, image, label, seed in items:
        assert_same(runs[key], run_oracle(image, label, K, p, seed))
    # the images really differ, so equality is not trivial
    assert len({tuple(map(tuple, r.revealed)) for r in runs.values()}) == 3


def test_position_lattice_is_batched_too():
    """With `oracle.grid` each slot owns its lattice embedding: batched bit for bit as one at a time, and
    the stored network (models.PixelMLP, as pseudolabel loads it) predicts what the Oracle scored."""
    items = images([(48, 64)] * 2)
    p = params(grid=[4, 8], fourier=2)
    runs, _ = batched(items, p, 2)
    for key, image, label, seed in items:
        alone = run_oracle(image, label, K, p, seed)
        assert_same(runs[key], alone)
        assert alone.model.state_dict()["grid"].abs().sum() > 0  # the lattice was trained
        with torch.no_grad():
            pred = alone.model(image_features(image, p)[None])[0].argmax(0).numpy()
        np.testing.assert_array_equal(pred, alone.prediction)


def test_ensemble_is_batched_and_stored_whole():
    """With `oracle.ensemble` every image trains several networks from different initial weights: a
    batch of images equals one image at a time bit for bit, the Oracle scores the members' mean
    softmax, and the stored network (all members, as pseudolabel loads it) predicts what it scored."""
    items = images([(48, 64)] * 2)
    p = params(ensemble=3, grid=[4], fourier=2)
    runs, _ = batched(items, p, 2)
    for key, image, label, seed in items:
        alone = run_oracle(image, label, K, p, seed)
        assert_same(runs[key], alone)
        state = alone.model.state_dict()
        assert state["weights.0"].shape[0] == 3
        assert not torch.equal(state["weights.0"][0], state["weights.0"][1])  # members really differ
        feats = image_features(image, p)
        members = []
        for e in range(3):  # each member alone, as a one-network PixelMLP
            one = PixelMLP(feats.shape[0], K, p.width, p.depth, p.grid, p.grid_dim)
            one.load_state_dict({k: v[e : e + 1] for k, v in state.items()})
            with torch.no_grad():
                members.append(one(feats[None])[0].softmax(0))
        mean = torch.stack(members).mean(0)
        with torch.no_grad():
            torch.testing.assert_close(alone.model(feats[None])[0].exp(), mean)
        np.testing.assert_array_equal(mean.argmax(0).numpy(), alone.prediction)
        # and the members disagree somewhere, so the mean is not one network's answer
        assert any((m.argmax(0) != mean.argmax(0)).any() for m in members)


def test_ensemble_member_zero_is_the_plain_network():
    """Members draw their weights one after the other from the image's generator: member 0 starts
    where a one-network Oracle starts, the others elsewhere."""
    one = oracle_network(params(), K, 5).state_dict()
    three = oracle_network(params(ensemble=3), K, 5).state_dict()
    for k, v in one.items():
        assert torch.equal(three[k][:1], v), k
    assert not torch.equal(three["weights.0"][1], three["weights.0"][0])


def test_images_of_different_sizes_and_continuous_batching():
    """Two slots, four images of three sizes: finished slots take the next image, results unchanged."""
    items = images([(40, 56), (64, 48), (40, 56), (72, 80)])
    p = params()
    runs, order = batched(items, p, 2, select_workers=2)  # selection in threads too
    assert sorted(order) == [k for k, *_ in items]
    for key, image, label, seed in items:
        assert runs[key].prediction.shape == label.shape
        assert_same(runs[key], run_oracle(image, label, K, p, seed), exact=False)


def test_restart_each_round_is_batched_too():
    items = images([(40, 56)] * 2)
    p = params(warm_start=False, max_fraction=0.05)
    runs, _ = batched(items, p, 2)
    for key, image, label, seed in items:
        assert_same(runs[key], run_oracle(image, label, K, p, seed))


def test_slots_do_not_leak_into_each_other():
    """Slot 0's gradient and Adam update do not depend on what the other slot trains on."""
    torch.manual_seed(0)
    x = torch.randn(2, 30, 5)
    outs = []
    for other in (0, 1):
        net = StackedMLP(2, 5, 3, 8, 2)
        for g in range(2):
            net.reset_slot(g, torch.Generator().manual_seed(g))
        adam = SlotAdam(list(net.parameters()), 0.01)
        y = torch.stack([torch.zeros(30, dtype=torch.long), torch.full((30,), 2 * other)])
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum")
            adam.zero_grad()
            loss.backward()
            adam.step(torch.tensor([True, True]))
        outs.append(net.slot_state(0))
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k])


def test_slot_adam_matches_torch_adam():
    """Per-slot Adam is PyTorch's Adam (same defaults), up to float rounding."""
    torch.manual_seed(0)
    w = torch.randn(1, 4, 3, requires_grad=True)
    ref = w.detach().clone().requires_grad_(True)
    ours, theirs = SlotAdam([w], 0.05), torch.optim.Adam([ref], lr=0.05)
    for _step in range(20):
        data = torch.randn(4)
        for param, opt in ((w, ours), (ref, theirs)):
            param.grad = None
            ((param[0].T @ data) ** 2).sum().backward()
            opt.step(torch.tensor([True])) if opt is ours else opt.step()
    torch.testing.assert_close(w, ref, rtol=1e-5, atol=1e-6)


def test_inactive_slot_is_frozen_and_restarts_clean():
    net = StackedMLP(2, 3, 2, 4, 1)
    for g in range(2):
        net.reset_slot(g, torch.Generator().manual_seed(g))
    adam = SlotAdam(list(net.parameters()), 0.1)
    before = net.slot_state(1)
    net(torch.randn(2, 5, 3)).sum().backward()
    adam.step(torch.tensor([True, False]))
    after = net.slot_state(1)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert adam.t.tolist() == [1, 0]
    adam.reset_slot(0)
    assert adam.t.tolist() == [0, 0] and all(m[0].abs().sum() == 0 for m in adam.m)


def test_pixel_mlp_is_a_one_slot_stack():
    """The stored per-image network (PixelMLP) labels an image exactly as the engine predicted it."""
    net = PixelMLP(5, 3, 8, 2)
    net.reset_slot(0, torch.Generator().manual_seed(0))
    x = torch.randn(1, 5, 7, 9)
    feats = x[0].flatten(1).T.contiguous()
    assert torch.equal(net(x)[0].flatten(1).T, net.pixels(feats))


def test_round_growth_reveals_a_share_of_what_is_revealed():
    image, label = synthetic_scene(np.random.default_rng(3), 48, 64)
    p = params(round_growth=0.5, pixels_per_round=2, target_accuracy=0.999, max_fraction=0.3)
    run = run_oracle(image, label, K, p, seed=1)
    sizes = np.bincount([r for *_, r in run.revealed])
    # each round adds max(2, ceil(0.5 x revealed so far)) pixels (error_center may find fewer)
    for r in range(1, len(sizes)):
        assert sizes[r] <= max(2, int(np.ceil(0.5 * sizes[:r].sum())))
    assert sizes[1] == 10 and len(sizes) < 12  # 20 initial -> 10, then growing rounds


@pytest.mark.parametrize("lattice", [[], [4]])
def test_whole_image_prediction_matches_the_training_forward(lattice):
    """StackedMLP.predict (chunked, cues and lattice in separate products) computes forward's logits."""
    net = StackedMLP(3, 7 + 8 * len(lattice), K, 16, 2, lattice, 4)
    gen = torch.Generator().manual_seed(0)
    for g in range(3):
        net.reset_slot(g, gen)
    if net.grid is not None:
        torch.nn.init.normal_(net.grid, generator=gen)
    from howlow.oracle.features import grid_corners

    h, w = 70, 90  # more pixels than one chunk of PREDICT_ROWS
    cues = torch.randn(h * w, 7, generator=gen)
    f = torch.cat([cues, grid_corners(h, w, lattice).flatten(1).T], 1) if lattice else cues
    torch.testing.assert_close(net.predict(f, [2, 0]), net(f[None].expand(3, -1, -1))[[2, 0]], rtol=1e-5, atol=1e-5)


def test_propagated_clicks_give_the_oracles_prediction_at_every_target():
    """One Oracle run to the highest target holds the lower targets' runs as prefixes, and replaying
    its clicks (howlow.oracle.replay.propagate) gives the Oracle's own prediction at each target."""
    from howlow.oracle.replay import propagate
    from howlow.oracle.scorer import Scorer
    from howlow.studies.dataset.annotations import click_rounds, target_rounds

    image, label = synthetic_scene(np.random.default_rng(4), 48, 64)
    p = params(target_accuracy=0.97, geodesic=0.3)
    top = run_oracle(image, label, K, p, seed=5)
    curve = [[c["round"], c["revealed"], c["accuracy"], c["miou"]] for c in top.curve]
    marks = target_rounds(curve, [0.9, 0.97])
    assert marks["0.9"]["round"] < marks["0.97"]["round"] == len(top.curve) - 1
    clicks = np.array(top.revealed)
    keep = {marks[t]["round"]: t for t in marks}
    out = {}
    rounds = click_rounds(clicks, 64, max(keep) + 1)
    propagate([("im", image, rounds, keep, 5)], K, p, 1, on_done=lambda key, o: out.update(o))
    low = run_oracle(image, label, K, params(target_accuracy=0.9, geodesic=0.3), seed=5)
    assert low.revealed == top.revealed[: marks["0.9"]["clicks"]]
    np.testing.assert_array_equal(out["0.9"][0], low.prediction)
    np.testing.assert_array_equal(out["0.97"][0], top.prediction)
    assert Scorer(image, p).weight == 0.3  # the vote took part


def test_a_job_resumed_from_its_last_state_goes_on_as_one_run():
    """engine.Job.resume: rounds run one call at a time, each resumed where the last stopped (weights
    and Adam moments), give what one call over all rounds gives, bit for bit (the Label Studio
    backend's updates, and the import that replays them)."""
    from howlow.oracle.engine import Job, run_recipe
    from howlow.oracle.features import pixel_features
    from howlow.oracle.replay import PropagateState
    from howlow.oracle.scorer import Scorer

    image, label = synthetic_scene(np.random.default_rng(2), 40, 56)
    p = params(geodesic=0.3, grid=[4], ensemble=2)
    flat = np.random.default_rng(0).permutation(label.size)[:9]
    rounds = [(flat[: 3 * (r + 1)], label.ravel()[flat[: 3 * (r + 1)]].astype(np.int64)) for r in range(3)]
    feats = pixel_features(image, p)
    whole = PropagateState(label.shape, rounds, {2: "last"}, Scorer(image, p))
    whole_weights: dict = {}
    whole_job = Job("im", feats, 5, whole)
    run_recipe([whole_job], p, K, 1, on_done=lambda job, w, s: whole_weights.update(w))
    assert whole_job.resume is None  # not asked to keep its state: nothing held in memory
    resume, weights = None, {}
    for r in range(3):
        step = PropagateState(label.shape, [rounds[r]], {0: "last"}, Scorer(image, p))
        job = Job("im", feats, 5, step, resume=resume, keep=True)
        run_recipe([job], p, K, 1, on_done=lambda job, w, s: weights.update(w))
        resume = job.resume
    np.testing.assert_array_equal(step.out["last"][0], whole.out["last"][0])
    assert all(torch.equal(v, weights[k]) for k, v in whole_weights.items())
    assert resume is not None and resume["adam"]["t"][0].tolist() == [3 * p.steps_per_round] * 2
    fresh = PropagateState(label.shape, [rounds[2]], {0: "last"}, Scorer(image, p))
    fresh_job = Job("im", feats, 5, fresh, keep=True)
    run_recipe([fresh_job], p, K, 1)
    assert fresh_job.resume is not None
    assert not torch.equal(fresh_job.resume["model"]["weights.0"], weights["weights.0"])
