"""The data-set network, trained from scratch: a small U-Net of our own, or torchvision's LR-ASPP
MobileNetV3 built without any pretrained weights."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm behaves the same in training and eval and with tiny batches; BatchNorm learned CamVid
    # faster at batch 8 (CHANGELOG)
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(math.gcd(8, channels), channels)


def _block(cin: int, cout: int, norm: str = "group") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with `depth` poolings; channels width * 2**level. Any input size works (skips are
    resized to match), so odd image sizes need no padding."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 16, depth: int = 3, norm: str = "group"):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(in_channels, chans[0], norm)] + [_block(chans[i], chans[i + 1], norm) for i in range(depth)]
        )
        self.up = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i], norm) for i in reversed(range(depth))])
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


def build_model(
    name: str,
    in_channels: int,
    n_classes: int,
    width: int,
    depth: int,
    generator: torch.Generator,
    norm: str = "group",
) -> nn.Module:
    """`width`/`depth`/`norm`: the U-Net's base channels, poolings and normalisation (LR-ASPP has a
    fixed shape)."""
    if name == "unet":
        return init_weights(UNet(in_channels, n_classes, width, depth, norm), generator)
    if name == "lraspp":
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return LRASPP(in_channels, n_classes)
    raise ValueError(f"unknown model {name!r} (unet, lraspp)")
