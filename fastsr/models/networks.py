"""The reference networks: EDSR, the batch-norm baseline and MDSR, with EDSR-PyTorch's state-dict layout.

Forward semantics are EDSR-PyTorch's: NCHW float in [0, rgb_range] in, NCHW float out (not clamped, not
quantized), ``scale`` times larger. MDSR takes the scale as a forward argument instead of the official
mutable ``set_scale`` state.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MeanShift, ResBlock, Upsampler, conv
from .config import EDSRConfig, MDSRConfig


def _check_input(x: torch.Tensor, n_colors: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != n_colors:
        raise ValueError(f"expected an NCHW tensor with {n_colors} channels, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor in [0, rgb_range], got dtype {x.dtype}")


class _SRNet(nn.Module):
    config: EDSRConfig | MDSRConfig

    def _mean_shifts(self, config: EDSRConfig | MDSRConfig) -> None:
        self.sub_mean = MeanShift(config.rgb_range, config.rgb_mean, config.rgb_std, sign=-1)
        self.add_mean = MeanShift(config.rgb_range, config.rgb_mean, config.rgb_std, sign=+1)

    @property
    def arch(self) -> str:
        return self.config.arch

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def extra_repr(self) -> str:
        return repr(self.config)


class EDSR(_SRNet):
    """EDSR (``config.batch_norm=False``) or the batch-norm baseline (``True``).

    Keys: ``sub_mean``, ``add_mean``, ``head.0``, ``body.{i}.body.{0,2}`` (BN: ``{0,1,3,4}``) for i < B,
    ``body.{B}``, ``tail.0.{0,2,...}`` (upsampler convs), ``tail.1`` (final conv). With
    ``config.tail == "conv-shuffle"`` the tail is ``tail.0`` (conv F -> colours x scale^2) and ``tail.1``
    (PixelShuffle(scale), no parameters).
    """

    def __init__(self, config: EDSRConfig) -> None:
        super().__init__()
        if not isinstance(config, EDSRConfig):
            raise TypeError(f"EDSR needs an EDSRConfig, got {type(config).__name__}")
        self.config = config
        f = config.n_feats
        self._mean_shifts(config)
        self.head = nn.Sequential(conv(config.n_colors, f, 3))
        self.body = nn.Sequential(
            *[ResBlock(f, 3, res_scale=config.res_scale, batch_norm=config.batch_norm) for _ in range(config.n_resblocks)],
            conv(f, f, 3),
        )
        if config.tail == "conv-shuffle":
            s = config.scale
            self.tail = nn.Sequential(conv(f, config.n_colors * s * s, 3), nn.PixelShuffle(s))
        else:
            self.tail = nn.Sequential(Upsampler(config.scale, f), conv(f, config.n_colors, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.n_colors)
        x = self.head(self.sub_mean(x))
        res = self.body(x) + x
        return self.add_mean(self.tail(res))


class MDSR(_SRNet):
    """MDSR: ``forward(x, scale)`` runs the shared body with ``scale``'s pre-processing and upsampler.

    Keys: ``sub_mean``, ``add_mean``, ``head.0``, ``pre_process.{k}.{0,1}.body.{0,2}`` (5x5),
    ``body.*`` as EDSR, ``upsample.{k}.{0,2,...}``, ``tail.0``; k indexes ``config.scales``.
    """

    def __init__(self, config: MDSRConfig) -> None:
        super().__init__()
        if not isinstance(config, MDSRConfig):
            raise TypeError(f"MDSR needs an MDSRConfig, got {type(config).__name__}")
        self.config = config
        f = config.n_feats
        self._mean_shifts(config)
        self.head = nn.Sequential(conv(config.n_colors, f, 3))
        # The official pre-processing blocks use ResBlock's default res_scale of 1 whatever the body uses.
        self.pre_process = nn.ModuleList(
            [nn.Sequential(ResBlock(f, 5), ResBlock(f, 5)) for _ in config.scales]
        )
        self.body = nn.Sequential(
            *[ResBlock(f, 3, res_scale=config.res_scale) for _ in range(config.n_resblocks)],
            conv(f, f, 3),
        )
        self.upsample = nn.ModuleList([Upsampler(s, f) for s in config.scales])
        self.tail = nn.Sequential(conv(f, config.n_colors, 3))

    def scale_index(self, scale: int) -> int:
        """The branch index of ``scale`` (TypeError / ValueError for a scale this MDSR has no branch for)."""
        return self.config.scales.index(self.config.require_scale(scale))

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        k = self.scale_index(scale)
        _check_input(x, self.config.n_colors)
        x = self.pre_process[k](self.head(self.sub_mean(x)))
        res = self.body(x) + x
        return self.add_mean(self.tail(self.upsample[k](res)))


def build(config: EDSRConfig | MDSRConfig) -> EDSR | MDSR:
    """The reference network for ``config`` (randomly initialised, PyTorch's default init)."""
    if isinstance(config, EDSRConfig):
        return EDSR(config)
    if isinstance(config, MDSRConfig):
        return MDSR(config)
    raise TypeError(f"expected an EDSRConfig or MDSRConfig, got {type(config).__name__}")


def check_weights(model: nn.Module) -> None:
    """Check, once, that a module given to the engine or the API can run: ValueError naming the first tensor
    that is on the meta device (a shape without values), on a device other than the CPU or CUDA, or holds
    NaN / infinity (which would otherwise come out as a silently black image after clamping)."""
    for kind, named in (("weight", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.device.type == "meta":
                raise ValueError(f"the model's {kind} {name!r} is on the meta device (a shape without values); "
                                 "load real weights first (e.g. model.to_empty(device='cpu') + load_state_dict)")
            if t.device.type not in ("cpu", "cuda"):
                raise ValueError(f"the model's {kind} {name!r} is on {t.device}; fastsr runs on the CPU or CUDA")
            if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
                raise ValueError(f"the model's {kind} {name!r} contains NaN or infinite values")
