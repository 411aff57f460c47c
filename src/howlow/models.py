"""Networks trained from scratch: a per-pixel MLP (default per-image Oracle network), a small U-Net
(Oracle option and default data-set model) and torchvision's LR-ASPP MobileNetV3 built without any
pretrained weights."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: one image per batch and identical train/eval behaviour
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(math.gcd(8, cout), cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(math.gcd(8, cout), cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with `depth` poolings; channels width * 2**level. Any input size works (skips are
    resized to match), so odd image sizes need no padding."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 16, depth: int = 3):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, chans[0])] +
                                  [_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


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
    (howlow.oracle.grid_corners). Unlike a sine, a node only moves the pixels of its own cells, so a
    click corrects its neighbourhood without rippling across the image."""

    def __init__(self, groups: int, in_channels: int, n_classes: int, hidden: int = 64, layers: int = 2,
                 grid: list[int] | tuple[int, ...] = (), grid_dim: int = 4):
        super().__init__()
        self.levels, self.grid_dim = len(grid), grid_dim
        self.cues = in_channels - 8 * self.levels  # columns that enter the first layer as they are
        dims = [self.cues + grid_dim * self.levels] + [hidden] * layers + [n_classes]
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(groups, a, b)) for a, b in zip(dims, dims[1:])])
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

    def slot_state(self, g: int, n: int = 1) -> dict[str, torch.Tensor]:
        """Slots g .. g + n - 1 as the state dict of an n-slot StackedMLP (what an n-member
        `models.PixelMLP` loads)."""
        return {k: v[g : g + n].detach().clone() for k, v in self.state_dict().items()}


def ensemble_logits(out: torch.Tensor) -> torch.Tensor:
    """(E, n, K) member logits -> (n, K): one member's logits as they are; several members' mean
    softmax, as log-probabilities (argmax and softmax then read it like logits)."""
    return out[0] if len(out) == 1 else out.softmax(2).mean(0).log()


class PixelMLP(StackedMLP):
    """One per-pixel network: `members` MLPs (slots of a StackedMLP, so the Oracle's batched engine and
    this module compute the same thing the same way) whose softmax is averaged (ensemble_logits).
    `forward` takes (N, C, H, W) like the other networks; `pixels` takes (n, C) feature vectors."""

    def __init__(self, in_channels: int, n_classes: int, hidden: int = 64, layers: int = 2,
                 grid: list[int] | tuple[int, ...] = (), grid_dim: int = 4, members: int = 1):
        super().__init__(members, in_channels, n_classes, hidden, layers, grid, grid_dim)

    def pixels(self, f: torch.Tensor) -> torch.Tensor:
        return ensemble_logits(super().forward(f[None].expand(self.groups, -1, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        logits = self.pixels(x.permute(0, 2, 3, 1).reshape(n * h * w, c))
        return logits.view(n, h, w, -1).permute(0, 3, 1, 2)


class LRASPP(nn.Module):
    """torchvision LR-ASPP MobileNetV3-Large, no weights, no pretrained backbone; returns logits."""

    def __init__(self, in_channels: int, n_classes: int):
        super().__init__()
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        if in_channels != 3:
            raise ValueError("the lraspp model takes RGB input only")
        self.net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every conv and linear layer from a private generator: deterministic per image even when several
    images train at once in threads (the global torch RNG would be shared between them)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    bound = 1 / math.sqrt(m.weight[0].numel())
                    m.bias.uniform_(-bound, bound, generator=generator)
    return model


def build_model(name: str, in_channels: int, n_classes: int, width: int, depth: int,
                generator: torch.Generator, grid: list[int] | tuple[int, ...] = (), grid_dim: int = 4,
                members: int = 1) -> nn.Module:
    """`width`/`depth` are the U-Net's channels and poolings, or the MLP's hidden units and layers;
    `grid`/`grid_dim`/`members` the MLP's position lattices and ensemble size (PixelMLP; the params
    reject them for the others). Ensemble members draw their weights one after the other from
    `generator`, as the Oracle's engine does."""
    if name == "mlp":
        net = PixelMLP(in_channels, n_classes, width, depth, grid, grid_dim, members)
        for e in range(members):
            net.reset_slot(e, generator)
        return net
    if name == "unet":
        return init_weights(UNet(in_channels, n_classes, width, depth), generator)
    if name == "lraspp":
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return LRASPP(in_channels, n_classes)
    raise ValueError(f"unknown model {name!r} (mlp, unet, lraspp)")
