"""Non-oracle selection rules (margin, entropy, pixelpick) on hand-made probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from howlow.oracle.select import select_pixels, uncertainty


def probs(h=6, w=8, k=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.random((k, h, w)) ** 4
    return p / p.sum(0, keepdims=True)


def as_set(points) -> set[tuple[int, int]]:
    return {(int(y), int(x)) for y, x in points}


def test_margin_and_entropy_rank_a_tie_above_a_sure_pixel():
    p = np.zeros((2, 1, 3))
    p[:, 0, 0] = [0.5, 0.5]  # a coin flip
    p[:, 0, 1] = [0.99, 0.01]  # sure
    p[:, 0, 2] = [0.7, 0.3]
    for kind in ("margin", "entropy"):
        u = uncertainty(p, kind)[0]
        assert u[0] > u[2] > u[1], kind


@pytest.mark.parametrize("kind", ["margin", "entropy"])
def test_most_uncertain_picks_the_top_k_unrevealed_valid(kind):
    p = probs()
    valid = np.ones((6, 8), bool)
    valid[0, :] = False
    revealed = np.zeros((6, 8), bool)
    revealed[1, :4] = True
    pts = select_pixels(kind, np.zeros_like(valid), valid, revealed, 5, np.random.default_rng(0), p)
    score = np.where(valid & ~revealed, uncertainty(p, kind), -np.inf)
    expected = np.argsort(-score.ravel(), kind="stable")[:5]
    assert as_set(pts) == as_set(np.stack(np.unravel_index(expected, valid.shape), 1))


def test_pixelpick_samples_from_the_most_uncertain_pool():
    p = probs(20, 20, seed=1)
    valid = np.ones((20, 20), bool)
    revealed = np.zeros_like(valid)
    pool = select_pixels("margin", None, valid, revealed, 20, None, p)  # top 5 % of 400 = 20 pixels
    picks = [
        as_set(select_pixels("pixelpick", None, valid, revealed, 4, np.random.default_rng(s), p)) for s in range(5)
    ]
    assert all(len(s) == 4 and s <= as_set(pool) for s in picks)
    assert len(set().union(*picks)) > 4  # random within the pool, not always the same top 4


@pytest.mark.parametrize("kind", ["margin", "entropy", "pixelpick"])
def test_uncertainty_rules_need_probabilities_and_never_repeat(kind):
    valid = np.ones((6, 8), bool)
    with pytest.raises(ValueError, match="probabilities"):
        select_pixels(kind, valid, valid, ~valid, 3, np.random.default_rng(0))
    revealed = np.zeros_like(valid)
    for _ in range(8):  # 8 rounds of 6 = all 48 pixels, each exactly once
        pts = select_pixels(kind, None, valid, revealed, 6, np.random.default_rng(0), probs())
        assert not revealed[pts[:, 0], pts[:, 1]].any() and len(as_set(pts)) == len(pts)
        revealed[pts[:, 0], pts[:, 1]] = True
    assert revealed.all()
