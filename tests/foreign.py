"""Stand-ins for the model classes users bring to ``fastsr.optimize``: EDSR-PyTorch's ``EDSR`` / ``MDSR``
and BasicSR's ``EDSR``, written here from their published module structure and forward semantics (module
names, attributes and value ranges), so the drop-in path is tested without those packages installed."""

from __future__ import annotations

import torch
from torch import nn

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def _conv(ci, co, k=3):
    return nn.Conv2d(ci, co, k, padding=k // 2)


class MeanShift(nn.Conv2d):
    def __init__(self, rgb_range, sign=-1):
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_MEAN)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, n_feats, k=3, res_scale=1.0):
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats, k), nn.ReLU(True), _conv(n_feats, n_feats, k))
        self.res_scale = res_scale

    def forward(self, x):
        res = self.body(x).mul(self.res_scale)
        res += x
        return res


def _upsampler(scale, f):
    layers = []
    if scale == 3:
        layers += [_conv(f, 9 * f), nn.PixelShuffle(3)]
    else:
        for _ in range(scale.bit_length() - 1):
            layers += [_conv(f, 4 * f), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


class OfficialEDSR(nn.Module):
    """EDSR-PyTorch ``model/edsr.py``'s structure: [0, rgb_range] in and out."""

    def __init__(self, n_resblocks=2, n_feats=16, scale=2, res_scale=1.0, rgb_range=255):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(_conv(3, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale=res_scale) for _ in range(n_resblocks)], _conv(n_feats, n_feats))
        self.tail = nn.Sequential(_upsampler(scale, n_feats), _conv(n_feats, 3))

    def forward(self, x):
        x = self.sub_mean(x)
        x = self.head(x)
        res = self.body(x)
        res += x
        x = self.tail(res)
        return self.add_mean(x)


class OfficialMDSR(nn.Module):
    """EDSR-PyTorch ``model/mdsr.py``'s structure: the branch is chosen by ``set_scale(idx)``."""

    def __init__(self, n_resblocks=2, n_feats=16, scales=(2, 3, 4), rgb_range=255):
        super().__init__()
        self.scale_idx = 0
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(_conv(3, n_feats))
        self.pre_process = nn.ModuleList([nn.Sequential(ResBlock(n_feats, 5), ResBlock(n_feats, 5)) for _ in scales])
        self.body = nn.Sequential(*[ResBlock(n_feats) for _ in range(n_resblocks)], _conv(n_feats, n_feats))
        self.upsample = nn.ModuleList([_upsampler(s, n_feats) for s in scales])
        self.tail = nn.Sequential(_conv(n_feats, 3))

    def set_scale(self, scale_idx):
        self.scale_idx = scale_idx

    def forward(self, x):
        x = self.sub_mean(x)
        x = self.head(x)
        x = self.pre_process[self.scale_idx](x)
        res = self.body(x)
        res += x
        x = self.upsample[self.scale_idx](res)
        x = self.tail(x)
        return self.add_mean(x)


class BasicSRBlock(nn.Module):
    def __init__(self, f, res_scale):
        super().__init__()
        self.res_scale = res_scale
        self.conv1, self.conv2, self.relu = _conv(f, f), _conv(f, f), nn.ReLU(inplace=True)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class BasicSREDSR(nn.Module):
    """BasicSR ``archs/edsr_arch.py``'s structure: [0, 1] in and out, ``(x - mean) * img_range`` inside."""

    def __init__(self, num_feat=16, num_block=2, upscale=2, res_scale=1.0, img_range=255.0, rgb_mean=DIV2K_MEAN):
        super().__init__()
        self.img_range = img_range
        self.mean = torch.Tensor(rgb_mean).view(1, 3, 1, 1)
        self.conv_first = _conv(3, num_feat)
        self.body = nn.Sequential(*[BasicSRBlock(num_feat, res_scale) for _ in range(num_block)])
        self.conv_after_body = _conv(num_feat, num_feat)
        self.upsample = _upsampler(upscale, num_feat)
        self.conv_last = _conv(num_feat, 3)

    def forward(self, x):
        self.mean = self.mean.type_as(x)
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x))
        res += x
        x = self.conv_last(self.upsample(res))
        return x / self.img_range + self.mean
