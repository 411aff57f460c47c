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


class StackedMLP(nn.Module):
    """G per-pixel MLPs in one module: weights[l] is (G, in, out), biases[l] is (G, 1, out).
    `forward` maps (G, n, C) features to (G, n, K) logits; `slots` picks a subset (no copy of the
    others' work)."""

    def __init__(self, groups: int, in_channels: int, n_classes: int, hidden: int = 64, layers: int = 2):
        super().__init__()
        dims = [in_channels] + [hidden] * layers + [n_classes]
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(groups, a, b)) for a, b in zip(dims, dims[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(groups, 1, b)) for b in dims[1:]])

    @property
    def groups(self) -> int:
        return self.weights[0].shape[0]

    @torch.no_grad()
    def reset_slot(self, g: int, generator: torch.Generator) -> None:
        """nn.Linear's default initialisation for slot g, drawn from the slot's own generator."""
        for w, b in zip(self.weights, self.biases):
            fan_in, fan_out = w.shape[1], w.shape[2]
            weight = torch.empty(fan_out, fan_in)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            w[g].copy_(weight.T)
            b[g].uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)

    def forward(self, f: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if slots is not None:
                w, b = w[slots], b[slots]
            f = torch.baddbmm(b, f, w)
            if i < last:
                f = f.relu()
        return f

    def slot_state(self, g: int) -> dict[str, torch.Tensor]:
        """Slot g as the state dict of a one-slot StackedMLP (what `models.PixelMLP` loads)."""
        return {k: v[g : g + 1].detach().clone() for k, v in self.state_dict().items()}


class PixelMLP(StackedMLP):
    """One per-pixel MLP (a one-slot StackedMLP, so the Oracle's batched engine and this module compute
    the same thing the same way). `forward` takes (N, C, H, W) like the other networks; `pixels`
    takes (n, C) feature vectors."""

    def __init__(self, in_channels: int, n_classes: int, hidden: int = 64, layers: int = 2):
        super().__init__(1, in_channels, n_classes, hidden, layers)

    def pixels(self, f: torch.Tensor) -> torch.Tensor:
        return super().forward(f[None])[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        logits = super().forward(x.permute(0, 2, 3, 1).reshape(1, n * h * w, c))
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
                generator: torch.Generator) -> nn.Module:
    """`width`/`depth` are the U-Net's channels and poolings, or the MLP's hidden units and layers."""
    if name == "mlp":
        net = PixelMLP(in_channels, n_classes, width, depth)
        net.reset_slot(0, generator)
        return net
    if name == "unet":
        return init_weights(UNet(in_channels, n_classes, width, depth), generator)
    if name == "lraspp":
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return LRASPP(in_channels, n_classes)
    raise ValueError(f"unknown model {name!r} (mlp, unet, lraspp)")
