"""Pixel selection rules: which pixels to reveal next.

Oracle rules (`random`, `random_error`, `error_center`) may look at where the network is wrong;
uncertainty rules (`margin`, `entropy`, `pixelpick`) only at its class probabilities.

Each rule takes the boolean masks of one image and returns up to `k` new (y, x) positions.
Candidates are always valid (not void) and not yet revealed, so a pixel is never revealed twice and
void is never revealed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _pick_random(candidates: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(candidates)
    if len(ys) == 0:
        return np.zeros((0, 2), np.int64)
    idx = rng.choice(len(ys), size=min(k, len(ys)), replace=False)
    return np.stack([ys[idx], xs[idx]], 1).astype(np.int64)


def select_random(valid: np.ndarray, revealed: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform among unrevealed valid pixels (ignores where the network errs)."""
    return _pick_random(valid & ~revealed, k, rng)


def select_random_error(
    error: np.ndarray, valid: np.ndarray, revealed: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform among unrevealed misclassified pixels."""
    return _pick_random(error & valid & ~revealed, k, rng)


def region_centers(mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of the k largest 4-connected regions of `mask`, its pixel farthest from the region's
    boundary (Euclidean distance transform; the image border counts as boundary). Ties: first in
    raster order. Regions are ordered largest first, then by their centre's raster position.
    Returns the centres (n, 2) and their distances to the boundary (n,)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    # pad with background so a region touching the border is measured to the border
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    # first maximum of each region in raster order (maximum_position's tie order is arbitrary)
    maxima = np.concatenate([[np.inf], ndimage.maximum(dist, labels, index=np.arange(1, n + 1))])
    flat = np.flatnonzero((labels > 0) & (dist == maxima[labels]))
    _, first = np.unique(labels.ravel()[flat], return_index=True)
    centers = [tuple(int(v) for v in np.unravel_index(flat[i], mask.shape)) for i in first]
    order = sorted(range(n), key=lambda i: (-sizes[i], centers[i]))[:k]
    pts = np.array([centers[i] for i in order], np.int64).reshape(-1, 2)
    return pts, dist[pts[:, 0], pts[:, 1]]


def select_error_center(error: np.ndarray, valid: np.ndarray, revealed: np.ndarray, k: int) -> np.ndarray:
    """Centres of the largest error regions (RITM-style clicks). With fewer than k regions, a disk
    of half the boundary distance around each chosen centre is cut out of the mask and the rule runs
    again, so a big region gets several well-spread clicks instead of neighbouring ones."""
    candidates = error & valid & ~revealed
    yy, xx = np.ogrid[: error.shape[0], : error.shape[1]]
    picked: list[np.ndarray] = []
    while len(picked) < k and candidates.any():
        centers, dists = region_centers(candidates, k - len(picked))
        picked.extend(centers)
        for (y, x), d in zip(centers, dists):
            candidates &= (yy - y) ** 2 + (xx - x) ** 2 > (d / 2) ** 2
            candidates[y, x] = False
    return np.array(picked, np.int64).reshape(-1, 2)


# --------------------------------------------------------------------------- non-oracle rules
# These see only the network's class probabilities (C, H, W), never the error map: what a practical
# annotator could use. The Oracle still supplies the labels of the pixels they pick.
def uncertainty(prob: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) uncertainty, larger = less sure: `margin` is 1 - (p1 - p2), `entropy` is -sum p log p."""
    if kind == "margin":
        top2 = np.sort(prob, axis=0)[-2:]
        return 1.0 - (top2[1] - top2[0])
    if kind == "entropy":
        return -(prob * np.log(np.clip(prob, 1e-12, 1))).sum(0)
    raise ValueError(f"unknown uncertainty {kind!r}")


def select_most_uncertain(prob: np.ndarray, valid: np.ndarray, revealed: np.ndarray, k: int, kind: str) -> np.ndarray:
    """The k most uncertain unrevealed valid pixels (ties: raster order)."""
    score = np.where(valid & ~revealed, uncertainty(prob, kind), -np.inf).ravel()
    n = min(k, int(np.isfinite(score).sum()))
    idx = np.argsort(-score, kind="stable")[:n]
    return np.stack(np.unravel_index(idx, valid.shape), 1).astype(np.int64)


def select_pixelpick(
    prob: np.ndarray, valid: np.ndarray, revealed: np.ndarray, k: int, rng: np.random.Generator, top: float = 0.05
) -> np.ndarray:
    """PixelPick-style: k at random among the `top` fraction most uncertain (margin) candidates,
    which spreads the picks instead of clustering them on one ambiguous boundary."""
    candidates = valid & ~revealed
    n_top = max(k, int(np.ceil(top * candidates.sum())))
    pool = np.zeros_like(candidates)
    chosen = select_most_uncertain(prob, valid, revealed, n_top, "margin")
    pool[chosen[:, 0], chosen[:, 1]] = True
    return _pick_random(pool, k, rng)


ORACLE_RULES = ("random", "random_error", "error_center")
UNCERTAINTY_RULES = ("margin", "entropy", "pixelpick")


def select_pixels(
    strategy: str,
    error: np.ndarray,
    valid: np.ndarray,
    revealed: np.ndarray,
    k: int,
    rng: np.random.Generator,
    prob: np.ndarray | None = None,
) -> np.ndarray:
    """Dispatch on `oracle.strategy`; the uncertainty rules need the class probabilities `prob`."""
    if strategy == "random":
        return select_random(valid, revealed, k, rng)
    if strategy == "random_error":
        return select_random_error(error, valid, revealed, k, rng)
    if strategy == "error_center":
        return select_error_center(error, valid, revealed, k)
    if strategy in UNCERTAINTY_RULES:
        if prob is None:
            raise ValueError(f"strategy {strategy!r} needs the network's class probabilities")
        if strategy == "pixelpick":
            return select_pixelpick(prob, valid, revealed, k, rng)
        return select_most_uncertain(prob, valid, revealed, k, strategy)
    raise ValueError(f"unknown oracle.strategy {strategy!r} ({', '.join(ORACLE_RULES + UNCERTAINTY_RULES)})")
