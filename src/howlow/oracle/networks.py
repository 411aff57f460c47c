"""The per-image network: a per-pixel MLP (or an ensemble of them) with optional position lattices.

`StackedMLP` holds G independent MLPs as (G, in, out) tensors, so the engine trains the networks of
many images in one step; `PixelMLP` is one image's network (its ensemble members are slots of the
same module, so the engine and pseudo-labelling compute the same thing the same way).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..params import OracleParams
from .features import n_features

# Whole-image predictions run this many pixels at a time: the activations stay in cache, ~3x faster
# on 2 CPU cores than one product over the whole image (and no image-sized temporaries).
PREDICT_ROWS = 4096


def grid_nodes(grid: list[int] | tuple[int, ...]) -> int:
    """Nodes of the position lattices with these many cells across each side: sum of (n + 1)^2."""
    return sum((n + 1) ** 2 for n in grid)


class StackedMLP(nn.Module):
    """G per-pixel MLPs in one module: weights[l] is (G, in, out), biases[l] is (G, 1, out).
    `forward` maps (G, n, C) features to (G, n, K) logits; `slots` picks a subset (no copy of the
    others' work).

    With `grid` (cells across each side, one lattice per entry) every slot also owns a learnable
    position embedding: `grid_dim` numbers per lattice node, zero at the start, read at each pixel by
    bilinear interpolation. The last 8 x len(grid) columns of a feature row are then the pixel's four
    corner nodes per lattice (flat node index, as a float) and their bilinear weights
    (features.grid_corners). Unlike a sine, a node only moves the pixels of its own cells, so a
    click corrects its neighbourhood without rippling across the image."""

    def __init__(
        self,
        groups: int,
        in_channels: int,
        n_classes: int,
        hidden: int = 64,
        layers: int = 2,
        grid: list[int] | tuple[int, ...] = (),
        grid_dim: int = 4,
    ):
        super().__init__()
        self.levels, self.grid_dim = len(grid), grid_dim
        self.cues = in_channels - 8 * self.levels  # columns that enter the first layer as they are
        dims = [self.cues + grid_dim * self.levels] + [hidden] * layers + [n_classes]
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(groups, a, b)) for a, b in itertools.pairwise(dims)])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(groups, 1, b)) for b in dims[1:]])
        self.grid = nn.Parameter(torch.zeros(groups, grid_nodes(grid), grid_dim)) if grid else None

    @property
    def groups(self) -> int:
        return self.weights[0].shape[0]

    def embed(self, f: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        """(G, n, cues + grid_dim x levels): the cues, then each lattice's interpolated embedding."""
        if self.grid is None:
            return f
        g, n, l4 = f.shape[0], f.shape[1], 4 * self.levels
        table = self.grid if slots is None else self.grid[slots]
        idx = f[..., self.cues : self.cues + l4].long().reshape(g, n * l4, 1).expand(-1, -1, self.grid_dim)
        corner = torch.gather(table, 1, idx).view(g, n, self.levels, 4, self.grid_dim)
        w = f[..., self.cues + l4 :].reshape(g, n, self.levels, 4, 1)
        return torch.cat([f[..., : self.cues], (corner * w).sum(3).flatten(2)], 2)

    @torch.no_grad()
    def reset_slot(self, g: int, generator: torch.Generator) -> None:
        """nn.Linear's default initialisation for slot g, drawn from the slot's own generator."""
        for w, b in zip(self.weights, self.biases):
            fan_in, fan_out = w.shape[1], w.shape[2]
            weight = torch.empty(fan_out, fan_in)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            w[g].copy_(weight.T)
            b[g].uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
        if self.grid is not None:
            self.grid[g].zero_()

    def forward(self, f: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        last = len(self.weights) - 1
        f = self.embed(f, slots)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if slots is not None:
                w, b = w[slots], b[slots]
            f = torch.baddbmm(b, f, w)
            if i < last:
                f = f.relu()
        return f

    def lattice_matrix(self, f: torch.Tensor) -> torch.Tensor | None:
        """The bilinear reading of the lattices for one image's (n, C) features as a sparse
        (n x levels, nodes) matrix, four weights per row: the whole image's embedding is then one
        sparse product per network (`embed`'s gather is ~10x slower for a whole image). Build it once
        per image and pass it to `predict`. None without lattices."""
        if self.grid is None:
            return None
        n, l4 = f.shape[0], 4 * self.levels
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.arange(0, n * l4 + 1, 4, device=f.device),
                f[:, self.cues : self.cues + l4].long().flatten(),
                f[:, self.cues + l4 :].flatten(),
                (n * self.levels, self.grid.shape[1]),
            )

    @torch.no_grad()
    def predict(self, f: torch.Tensor, slots: Sequence[int], lattice: torch.Tensor | None = None) -> torch.Tensor:
        """(E, n, K) logits of the E networks `slots` on one image's (n, C) features: what `forward`
        computes, arranged for a whole image. The cue columns enter one product for all E networks,
        the lattice embedding a second one, in chunks of PREDICT_ROWS pixels; the sums are in another
        order than `forward`'s, so the logits agree with it to float rounding. Every whole-image
        prediction (the engine's, a stored PixelMLP's) goes through here, so they agree exactly."""
        sl = torch.as_tensor(list(slots), device=f.device)
        ws, bs = [w[sl] for w in self.weights], [b[sl] for b in self.biases]
        e, n, hidden = len(sl), f.shape[0], ws[0].shape[2]
        w_cues = ws[0][:, : self.cues].permute(1, 0, 2).reshape(self.cues, e * hidden)
        b_first = bs[0].permute(1, 0, 2).reshape(1, e * hidden)
        emb = None
        if self.grid is not None:
            lattice = self.lattice_matrix(f) if lattice is None else lattice
            emb = torch.stack([torch.sparse.mm(lattice, self.grid[s]).view(n, -1) for s in sl.tolist()])
        out = f.new_empty(e, n, ws[-1].shape[2])
        for a in range(0, n, PREDICT_ROWS):
            x = f[a : a + PREDICT_ROWS, : self.cues]
            h = torch.addmm(b_first, x, w_cues).view(-1, e, hidden).transpose(0, 1)
            if emb is not None:
                h = torch.baddbmm(h, emb[:, a : a + PREDICT_ROWS], ws[0][:, self.cues :])
            h = h.relu_()
            for w, b in zip(ws[1:-1], bs[1:-1]):
                h = torch.baddbmm(b, h, w).relu_()
            out[:, a : a + len(x)] = torch.baddbmm(bs[-1], h, ws[-1])
        return out

    def slot_state(self, g: int, n: int = 1) -> dict[str, torch.Tensor]:
        """Slots g .. g + n - 1 as the state dict of an n-slot StackedMLP (what an n-member
        `PixelMLP` loads)."""
        return {k: v[g : g + n].detach().clone() for k, v in self.state_dict().items()}

    @torch.no_grad()
    def load_slot(self, g: int, state: dict[str, torch.Tensor]) -> None:
        """Put a `slot_state` back into slots g .. g + n - 1."""
        own = self.state_dict()
        for k, v in state.items():
            own[k][g : g + len(v)].copy_(v)


def ensemble_logits(out: torch.Tensor) -> torch.Tensor:
    """(E, n, K) member logits -> (n, K): one member's logits as they are; several members' mean
    softmax, as log-probabilities (argmax and softmax then read it like logits)."""
    return out[0] if len(out) == 1 else out.softmax(2).mean(0).log()


class PixelMLP(StackedMLP):
    """One per-pixel network: `members` MLPs (slots of a StackedMLP, so the Oracle's batched engine and
    this module compute the same thing the same way) whose softmax is averaged (ensemble_logits).
    `forward` takes (N, C, H, W) like the other networks; `pixels` takes (n, C) feature vectors."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        hidden: int = 64,
        layers: int = 2,
        grid: list[int] | tuple[int, ...] = (),
        grid_dim: int = 4,
        members: int = 1,
    ):
        super().__init__(members, in_channels, n_classes, hidden, layers, grid, grid_dim)

    def pixels(self, f: torch.Tensor) -> torch.Tensor:
        return ensemble_logits(self.predict(f, range(self.groups)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        logits = self.pixels(x.permute(0, 2, 3, 1).reshape(n * h * w, c))
        return logits.view(n, h, w, -1).permute(0, 3, 1, 2)


def oracle_network(p: OracleParams, n_classes: int, seed: int) -> PixelMLP:
    """One image's network, its `p.ensemble` members drawn one after the other from a generator
    seeded with `seed`, as the engine draws them."""
    gen = torch.Generator().manual_seed(seed)
    net = PixelMLP(n_features(p), n_classes, p.width, p.depth, p.grid, p.grid_dim, p.ensemble)
    for e in range(p.ensemble):
        net.reset_slot(e, gen)
    return net
