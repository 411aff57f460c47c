"""The per-image network's inputs: cues computed from the image itself, nothing learnt elsewhere."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..params import OracleParams


def grid_corners(h: int, w: int, grid: list[int]) -> torch.Tensor:
    """(8 x len(grid), H, W): for each lattice of n x n cells spanning the image, every pixel's four
    corner nodes (flat index into all lattices' nodes, as a float) and then their bilinear weights.
    What networks.StackedMLP reads its position embedding with."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    idx, wts, offset = [], [], 0
    for n in grid:
        # position in cell units, the last row/column kept inside the last cell
        fy = np.minimum(yy / max(h - 1, 1) * n, n - 1e-6)
        fx = np.minimum(xx / max(w - 1, 1) * n, n - 1e-6)
        y0, x0 = np.floor(fy), np.floor(fx)
        ty, tx = fy - y0, fx - x0

        def node(y, x, offset=offset, n=n):
            return offset + y * (n + 1) + x

        idx += [node(y0, x0), node(y0, x0 + 1), node(y0 + 1, x0), node(y0 + 1, x0 + 1)]
        wts += [(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx]
        offset += (n + 1) ** 2
    return torch.from_numpy(np.stack(idx + wts).astype(np.float32)) if grid else torch.zeros(0, h, w)


def image_features(image: np.ndarray, p: OracleParams) -> torch.Tensor:
    """(C, H, W) per-image standardised cues: RGB; per scale, blurred RGB and local contrast (std of
    grey levels in a Gaussian window); y/x in [-1, 1] when `p.coords`; sin/cos of pi 2^k y and x for
    k < `p.fourier`. With `p.grid`, the lattice corners and weights follow, unstandardised."""
    rgb = image.astype(np.float32) / 255.0
    grey = rgb.mean(2)
    chans = [rgb[..., c] for c in range(3)]
    for s in p.scales:
        chans += [ndimage.gaussian_filter(rgb[..., c], s) for c in range(3)]
        mean = ndimage.gaussian_filter(grey, s)
        chans.append(np.sqrt(np.maximum(ndimage.gaussian_filter(grey * grey, s) - mean * mean, 0)))
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h - 1, 1) * 2 - 1, xx / max(w - 1, 1) * 2 - 1
    if p.coords:
        chans += [yy, xx]
    for k in range(p.fourier):
        f = np.pi * 2**k
        chans += [np.sin(f * yy), np.cos(f * yy), np.sin(f * xx), np.cos(f * xx)]
    x = torch.from_numpy(np.stack(chans).astype(np.float32))
    x = (x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), keepdim=True) + 1e-6)
    return torch.cat([x, grid_corners(h, w, p.grid)]) if p.grid else x


def n_features(p: OracleParams) -> int:
    return 3 + 4 * len(p.scales) + (2 if p.coords else 0) + 4 * p.fourier + 8 * len(p.grid)


def pixel_features(image: np.ndarray, p: OracleParams) -> torch.Tensor:
    """(H*W, C) cues in raster order: what the per-pixel network sees."""
    return image_features(image, p).flatten(1).T.contiguous()
