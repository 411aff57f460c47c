"""The geodesic click vote: every pixel takes the class of its nearest revealed pixel, with distance
measured along the image, so that crossing a colour edge is expensive.

The per-pixel network decides most pixels with confidence; where it is unsure (near label edges, in
look-alike regions) the vote of the clicks around it, reached without crossing an edge, decides
(howlow.oracle.scorer blends the two).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.graph import MCP_Geometric


def edge_cost(image: np.ndarray, edge: float) -> np.ndarray:
    """(H, W) cost of stepping onto each pixel: 1e-3 + `edge` x the colour gradient magnitude (Sobel on
    RGB in [0, 1], blurred by 1 px so single-pixel noise is not an edge)."""
    rgb = ndimage.gaussian_filter(image.astype(np.float64) / 255.0, (1, 1, 0))
    grad = np.sqrt(sum(ndimage.sobel(rgb[..., c], axis) ** 2 for c in range(3) for axis in (0, 1)))
    return 1e-3 + edge * grad


def nearest_click(cost: np.ndarray, points: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(H, W) class of each pixel's geodesically nearest point ((n, 2) y, x with their classes): one
    minimum-cost-path run from all points at once (8-connected), then each pixel follows its
    predecessors back to the point its path started from."""
    h, w = cost.shape
    mcp = MCP_Geometric(cost)
    _, traceback = mcp.find_costs([tuple(int(v) for v in q) for q in points])
    offsets = np.asarray(mcp.offsets)  # traceback[i] indexes the step that reached pixel i
    yy, xx = np.mgrid[0:h, 0:w]
    step = offsets[traceback.clip(0)]
    parent = np.where(traceback >= 0, (yy - step[..., 0]) * w + (xx - step[..., 1]), yy * w + xx).ravel()
    # pointer jumping: after k rounds every pixel points 2^k steps back, so log2(H x W) rounds reach the start
    for _ in range(int(np.ceil(np.log2(h * w))) + 1):
        parent = parent[parent]
    start_class = np.full(h * w, -1, np.int64)
    start_class[points[:, 0] * w + points[:, 1]] = classes
    return start_class[parent].reshape(h, w)
