"""Building blocks shared by the reference networks, laid out like EDSR-PyTorch's ``model/common.py`` so that
official state dicts load with ``strict=True``.

Every conv is a zero-padded "same" conv with bias. Inputs and outputs are NCHW float in [0, rgb_range].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .config import upsample_factors


def conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """Zero-padded "same" conv with bias (EDSR-PyTorch's ``default_conv``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True)


class MeanShift(nn.Conv2d):
    """A frozen 1x1 conv computing ``sign * rgb_range * mean / std + x / std`` per channel.

    ``sign=-1`` is ``sub_mean`` (in front of the head), ``sign=+1`` is ``add_mean`` (after the tail). Its
    weight and bias are parameters with ``requires_grad=False``, as in the official code: they are part of
    the state dict and of the official parameter counts.
    """

    def __init__(self, rgb_range: float, rgb_mean: Sequence[float], rgb_std: Sequence[float], sign: int) -> None:
        n = len(rgb_mean)
        super().__init__(n, n, kernel_size=1)
        std = torch.tensor(rgb_std, dtype=torch.float32)
        mean = torch.tensor(rgb_mean, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.eye(n).view(n, n, 1, 1) / std.view(n, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * mean / std)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)


class ResBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))``; with ``batch_norm``: conv-BN-ReLU-conv-BN in the branch.

    ``body`` indices follow the official code: 0 conv, 1 ReLU, 2 conv -- or, with batch norm,
    0 conv, 1 BN, 2 ReLU, 3 conv, 4 BN.
    """

    def __init__(self, n_feats: int, kernel_size: int, *, res_scale: float = 1.0, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv(n_feats, n_feats, kernel_size)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(n_feats))
        layers.append(nn.ReLU(inplace=True))
        layers.append(conv(n_feats, n_feats, kernel_size))
        if batch_norm:
            layers.append(nn.BatchNorm2d(n_feats))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return res + x


class Upsampler(nn.Sequential):
    """conv(F -> r^2 F) + PixelShuffle(r) per factor r: r = 3 once for x3, r = 2 log2(scale) times otherwise.

    Indices 0, 2, ... are the convs (``tail.0.0``, ``tail.0.2`` in EDSR; ``upsample.k.0`` in MDSR).
    """

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        for r in upsample_factors(scale):
            layers += [conv(n_feats, r * r * n_feats, 3), nn.PixelShuffle(r)]
        super().__init__(*layers)
