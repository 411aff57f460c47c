"""The Oracle's pixel selection rules (howlow.oracle.select) on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from howlow.oracle.select import region_centers, select_error_center, select_pixels, select_random_error

STRATEGIES = ("random", "random_error", "error_center")


def square(shape, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def as_set(points: np.ndarray) -> set[tuple[int, int]]:
    return {(int(y), int(x)) for y, x in points}


def test_region_center_of_square_is_its_centre():
    """A 7x7 square's farthest-from-boundary pixel is its centre, 4 px from the outside."""
    pts, dist = region_centers(square((20, 20), 5, 12, 5, 12), 3)
    assert pts.tolist() == [[8, 8]]
    assert dist.tolist() == [4.0]


def test_region_touching_border_is_measured_to_the_border():
    """The image border is a boundary: a corner square's centre is inside it, not at the corner."""
    pts, dist = region_centers(square((20, 20), 0, 5, 0, 5), 1)
    assert pts.tolist() == [[2, 2]]
    assert dist.tolist() == [3.0]
    # a square filling the whole image: centre in the middle, distance to the border
    pts, dist = region_centers(np.ones((9, 9), bool), 1)
    assert pts.tolist() == [[4, 4]] and dist.tolist() == [5.0]


def test_regions_largest_first_and_k_limits():
    """Regions come largest first (equal sizes by centre raster order); only the k largest are kept."""
    m = square((30, 30), 20, 23, 20, 23)  # 9 px, centre (21, 21)
    m |= square((30, 30), 2, 9, 2, 9)  # 49 px, centre (5, 5)
    m |= square((30, 30), 12, 15, 2, 5)  # 9 px, centre (13, 3)
    m |= square((30, 30), 20, 25, 10, 15)  # 25 px, centre (22, 12)
    pts, dist = region_centers(m, 10)
    assert pts.tolist() == [[5, 5], [22, 12], [13, 3], [21, 21]]
    assert dist.tolist() == [4.0, 3.0, 2.0, 2.0]
    pts, _ = region_centers(m, 2)
    assert pts.tolist() == [[5, 5], [22, 12]]


def test_regions_are_4_connected():
    """Two diagonal-touching squares are two regions (4-connectivity)."""
    m = square((12, 12), 0, 3, 0, 3) | square((12, 12), 3, 6, 3, 6)
    pts, _ = region_centers(m, 5)
    assert len(pts) == 2


def test_region_centers_empty_mask():
    """No region: empty (0, 2) centres and no distances."""
    pts, dist = region_centers(np.zeros((5, 5), bool), 3)
    assert pts.shape == (0, 2) and dist.shape == (0,)


def test_region_center_ties_first_in_raster_order():
    """An even-sized square has 4 equally central pixels; the docstring promises the first in raster order."""
    for size in (2, 4, 6, 8, 10, 12, 26):
        for y0, x0 in ((0, 0), (3, 2), (2, 3)):
            pts, _ = region_centers(square((30, 30), y0, y0 + size, x0, x0 + size), 1)
            assert pts.tolist() == [[y0 + size // 2 - 1, x0 + size // 2 - 1]], (size, y0, x0)


def test_error_center_spreads_points_in_one_big_region():
    """k > number of regions: several distinct points inside the error, well apart (not neighbours)."""
    error = square((40, 40), 4, 36, 4, 36)
    valid = np.ones_like(error)
    pts = select_error_center(error, valid, np.zeros_like(error), 6)
    assert len(pts) == 6 and len(as_set(pts)) == 6
    assert error[pts[:, 0], pts[:, 1]].all()
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 5  # spread over a 32x32 square, not clustered around its centre
    # the first click is the region's centre; later clicks lie outside the disk of half its boundary
    # distance that is cut out around it
    (centre,), (d0,) = region_centers(error, 1)
    assert pts[0].tolist() == centre.tolist() and np.abs(pts[0] - 19.5).max() <= 0.5
    assert (np.sqrt(((pts[1:] - pts[0]) ** 2).sum(-1)) > d0 / 2).all()


def test_error_center_one_point_per_region_first():
    """With as many regions as k, each region gets its own centre."""
    error = square((30, 30), 1, 8, 1, 8) | square((30, 30), 15, 20, 15, 20) | square((30, 30), 25, 28, 2, 5)
    pts = select_error_center(error, np.ones_like(error), np.zeros_like(error), 3)
    assert pts.tolist() == [[4, 4], [17, 17], [26, 3]]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rules_never_return_revealed_void_or_duplicates(strategy, seed):
    """On random masks no rule returns a revealed pixel, a void pixel or the same pixel twice."""
    rng = np.random.default_rng(seed)
    shape = (24, 31)
    error = rng.random(shape) < 0.4
    error |= square(shape, 3, 15, 5, 20)  # a big blob so error_center has to split regions
    valid = rng.random(shape) < 0.8
    revealed = (rng.random(shape) < 0.15) & valid
    k = 40
    pts = select_pixels(strategy, error, valid, revealed, k, rng)
    assert pts.ndim == 2 and pts.shape[1] == 2 and 0 < len(pts) <= k
    assert len(as_set(pts)) == len(pts)
    assert valid[pts[:, 0], pts[:, 1]].all()
    assert not revealed[pts[:, 0], pts[:, 1]].any()
    if strategy != "random":
        assert error[pts[:, 0], pts[:, 1]].all()


@pytest.mark.parametrize("seed", range(4))
def test_random_error_only_returns_error_pixels(seed):
    """random_error picks among misclassified pixels only, and returns k of them when there are enough."""
    rng = np.random.default_rng(seed)
    error = rng.random((20, 20)) < 0.3
    valid = np.ones_like(error)
    pts = select_random_error(error, valid, np.zeros_like(error), 25, rng)
    assert len(pts) == 25 and len(as_set(pts)) == 25
    assert error[pts[:, 0], pts[:, 1]].all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fewer_candidates_than_k_returns_all(strategy):
    """When fewer than k pixels qualify, every candidate is returned (once)."""
    shape = (10, 10)
    error = np.zeros(shape, bool)
    error[[1, 1, 5, 8], [2, 3, 5, 0]] = True
    valid = np.ones(shape, bool)
    valid[8, 0] = False  # void
    revealed = np.zeros(shape, bool)
    revealed[5, 5] = True
    if strategy == "random":  # candidates: valid & unrevealed
        valid[:] = False
        valid[[1, 1, 5, 8], [2, 3, 5, 0]] = True
        valid[8, 0] = False
    pts = select_pixels(strategy, error, valid, revealed, 50, np.random.default_rng(0))
    assert as_set(pts) == {(1, 2), (1, 3)} and len(pts) == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_candidates_gives_empty(strategy):
    """Everything revealed (or void): an empty (0, 2) array."""
    error = np.ones((6, 6), bool)
    valid = np.ones((6, 6), bool)
    valid[0] = False
    revealed = valid.copy()
    pts = select_pixels(strategy, error, valid, revealed, 5, np.random.default_rng(0))
    assert pts.shape == (0, 2)


def test_unknown_strategy_raises():
    """A strategy name outside the three rules is a ValueError naming it."""
    m = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="'nearest'"):
        select_pixels("nearest", m, m, ~m, 3, np.random.default_rng(0))
