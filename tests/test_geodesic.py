"""The geodesic click vote (howlow.oracle.geodesic): nearest click along the image, blended with the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_params, unit_oracle
from howlow.data import synthetic_scene
from howlow.oracle import Scorer, run_oracle
from howlow.oracle.geodesic import edge_cost, nearest_click
from howlow.stages.pseudolabel import predict_image

pytestmark = pytest.mark.usefixtures("one_thread")


def two_halves(h=20, w=30, edge_col=15):
    image = np.zeros((h, w, 3), np.uint8)
    image[:, edge_col:] = 255  # dark left half, bright right half
    return image


def test_flat_image_gives_the_nearest_click():
    """Without edges the geodesic vote is the Voronoi diagram of the clicks (8-connected distance)."""
    cost = edge_cost(np.full((20, 30, 3), 128, np.uint8), 10.0)
    points, classes = np.array([[5, 5], [14, 24]]), np.array([3, 7])
    vote = nearest_click(cost, points, classes)
    yy, xx = np.mgrid[0:20, 0:30]
    d = [np.hypot(yy - y, xx - x) for y, x in points]
    clear = np.abs(d[0] - d[1]) > 2  # away from the bisector, where the 8-connected metric could differ
    np.testing.assert_array_equal(vote[clear], np.where(d[0] < d[1], 3, 7)[clear])


def test_an_edge_stops_the_vote():
    """A click far away on the same side of a colour edge beats a nearby click across it."""
    image = two_halves()
    points, classes = np.array([[10, 0], [10, 16]]), np.array([1, 2])  # far left; just right of the edge
    vote = nearest_click(edge_cost(image, 10.0), points, classes)
    assert (vote[:, :14] == 1).all() and (vote[:, 16:] == 2).all()
    # the same clicks on a flat image: the near click wins the left half's right part
    flat = nearest_click(edge_cost(np.zeros_like(image), 10.0), points, classes)
    assert (flat[:, 10:15] == 2).all()


def test_vote_reads_the_reveal_log():
    scorer = Scorer(two_halves(), unit_oracle(geodesic=0.3))
    revealed = [[3, 2, 4, 0], [12, 25, 1, 0]]  # [y, x, class, round]
    vote = scorer.vote(revealed)
    assert vote[3, 2] == 4 and vote[12, 25] == 1 and set(np.unique(vote)) == {1, 4}
    assert scorer.vote(np.array(revealed)) is vote  # the same pixel set: the vote is not recomputed


def test_scorer_lets_the_vote_decide_only_where_the_network_is_unsure():
    # pixel 0: sure of class 0; pixel 1: unsure between 0 and 1; the vote (both clicks: class 1) says 1
    image = np.zeros((1, 2, 3), np.uint8)
    probs = torch.tensor([[0.90, 0.05, 0.05], [0.45, 0.40, 0.15]])
    revealed = [[0, 0, 1, 0], [0, 1, 1, 0]]
    out = Scorer(image, unit_oracle(geodesic=0.3)).logits(probs.log(), revealed)
    assert out.argmax(1).tolist() == [0, 1]
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2))
    plain = Scorer(image, unit_oracle(geodesic=0.0)).logits(probs.log(), revealed)
    assert plain.argmax(1).tolist() == [0, 0]


def test_oracle_with_vote_is_what_pseudolabel_reproduces():
    """The Oracle scores the blended prediction; the stored network plus the reveal log give the same
    labels in pseudolabel, and the vote changed some of them."""
    params = make_params()
    p = params.oracle.model_copy(update={"target_accuracy": 0.95, "max_fraction": 0.2, "geodesic": 0.3})
    params = params.model_copy(update={"oracle": p})
    image, label = synthetic_scene(np.random.default_rng(3), 48, 64)
    run = run_oracle(image, label, 6, p, seed=1)
    labels, conf = predict_image(params, image, 6, run.model.state_dict(), run.revealed)
    np.testing.assert_array_equal(labels, run.prediction)
    assert conf.min() > 0 and conf.max() <= 1
    plain, _ = predict_image(
        params.model_copy(update={"oracle": p.model_copy(update={"geodesic": 0.0})}),
        image,
        6,
        run.model.state_dict(),
        run.revealed,
    )
    assert (plain != labels).any()


def test_reveal_order_replay_scores_with_the_vote_too():
    """The training-order experiment blends like the Oracle: replaying the reveal order with the same
    seed, one network at a time, is the Oracle's own run, final accuracy included."""
    from howlow.oracle.replay import training_order

    p = unit_oracle(**{"target_accuracy": 0.95, "max_fraction": 0.2, "geodesic": 0.3})
    image, label = synthetic_scene(np.random.default_rng(4), 48, 64)
    run = run_oracle(image, label, 6, p, seed=2)
    acc = training_order([("a", image, label, 2)], {"a": run.revealed}, 6, p, 1, "cpu")
    assert acc["reveal order"] == run.curve[-1]["accuracy"]
