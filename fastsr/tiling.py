"""Tiling with a halo: the receptive field that makes it exact, the tile grid and the tile size.

An image is cut into *core* tiles that cover it without overlap. Each core is run through the network with a
*halo* of extra input pixels on every side (clipped at the image border, where the network's own zero padding
is the right border), and only the core's part of the output is kept. Convolutions at tile borders see zero
padding instead of the neighbouring pixels, and that error travels inwards by one receptive-field radius.
With a halo of at least :func:`receptive_field` input pixels the core never sees it, so the tiled result is the
untiled one (up to the rounding differences of convolutions run on arrays of other shapes). A smaller halo is
faster and approximate.

Receptive field, in input (LR) pixels of radius: every 3x3 conv at input resolution adds 1, every 5x5 adds 2,
and a 3x3 conv after upsampling by a total factor ``r`` adds ``1/r``; cores start on input-pixel boundaries, so
the halo is the ceiling of the sum. Per preset (same for x2 / x3 / x4 unless shown):

========================  ==========================================================  ====
preset                    sum                                                         halo
========================  ==========================================================  ====
``edsr-baseline-x*``      1 head + 32 (16 blocks) + 1 body end + 1 upsampler + tail    36
                          (x2: 1/2, x3: 1/3, x4: 1/2 + 1/4)
``edsr-bn-baseline-x*``   as EDSR-baseline (batch norm is per pixel)                   36
``edsr-x*``               1 + 64 (32 blocks) + 1 + 1 + tail                           68
``mdsr-baseline``         EDSR-baseline + 8 (two 5x5 blocks of pre-processing)         44
``mdsr``                  1 + 8 + 160 (80 blocks) + 1 + 1 + tail                       172
OpenCV's ``EDSR_x*.pb``   1 + 64 (32 blocks) + 1 + 1 (conv-shuffle tail: an LR conv)    67
========================  ==========================================================  ====

(``tests/test_tiling.py`` checks each against the gradient support of the real networks.)
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .models.config import EDSRConfig, MDSRConfig, upsample_factors

__all__ = [
    "CPU_MEMORY_BUDGET",
    "MIN_TILE",
    "Tile",
    "activation_bytes_per_pixel",
    "auto_tile_size",
    "memory_budget",
    "plan_tiles",
    "receptive_field",
    "split",
]

# Activation memory allowed for one forward pass on the CPU (bytes), capped at half of the available RAM.
# Larger tiles are barely faster on a CPU, and this keeps a large image from swapping a small machine.
CPU_MEMORY_BUDGET = 2 * 2**30
# Fraction of the GPU's free memory one forward pass may use: cuDNN workspaces and the allocator's
# fragmentation need the rest.
GPU_MEMORY_FRACTION = 0.6
# Smallest automatic core side (input pixels). Below it the halo's overlap costs more than the memory saved.
MIN_TILE = 32
# Margin on the activation estimate of activation_bytes_per_pixel: workspaces, small temporaries, allocator
# rounding.
_SAFETY = 1.25


def _config_of(config_or_model: Any) -> EDSRConfig | MDSRConfig:
    config = getattr(config_or_model, "config", config_or_model)
    if not isinstance(config, (EDSRConfig, MDSRConfig)):
        raise TypeError(f"expected an EDSRConfig / MDSRConfig or a fastsr model, got {type(config_or_model).__name__}")
    return config


def receptive_field(config: Any, scale: int) -> int:
    """The halo (input pixels, rounded up) that makes tiling exact for ``config`` (or a model) at ``scale``.

    EDSR-baseline 36, EDSR 68, MDSR-baseline 44, MDSR 172 (see the module docstring for the sum).
    """
    config = _config_of(config)
    config.require_scale(scale)
    # Convs at input resolution: head (3x3), two 3x3 per residual block, the body's closing conv.
    radius = Fraction(1 + 2 * config.n_resblocks + 1)
    if isinstance(config, MDSRConfig):
        radius += 2 * 2 * 2  # per-scale pre-processing: two residual blocks of two 5x5 convs (radius 2 each)
    if getattr(config, "tail", "upsampler") == "conv-shuffle":
        return int(radius) + 1  # one 3x3 conv at input resolution, then the shuffle (no conv after it)
    factor = 1
    for r in upsample_factors(scale):  # each upsampler stage: a 3x3 conv, then PixelShuffle(r)
        radius += Fraction(1, factor)
        factor *= r
    radius += Fraction(1, factor)  # the final 3x3 conv at output resolution
    return math.ceil(radius)


@dataclass(frozen=True)
class Tile:
    """One tile: the core ``[y0, y1) x [x0, x1)`` it produces and the input box it reads (core + halo, clipped).

    Coordinates are input (LR) pixels; the output rows of the core are ``[scale * y0, scale * y1)``.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    iy0: int
    iy1: int
    ix0: int
    ix1: int

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.iy1 - self.iy0, self.ix1 - self.ix0

    @property
    def core_in_input(self) -> tuple[int, int, int, int]:
        """The core's rows and columns ``(y0, y1, x0, x1)`` relative to the input box."""
        return self.y0 - self.iy0, self.y1 - self.iy0, self.x0 - self.ix0, self.x1 - self.ix0


def split(length: int, tile: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of at most ``tile`` covering ``range(length)``, as equal as possible.

    Equal tiles mean equal input shapes, which batch together and keep one conv algorithm per image.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be >= 1, got {length} and {tile}")
    n = -(-length // tile)
    bounds = [i * length // n for i in range(n + 1)]
    return list(itertools.pairwise(bounds))


def _check_nonneg_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def plan_tiles(height: int, width: int, tile: int, halo: int) -> list[Tile]:
    """The tiles of an ``height x width`` image: cores of side <= ``tile`` in row-major order, ``halo`` around."""
    _check_nonneg_int("height", height, 1)
    _check_nonneg_int("width", width, 1)
    _check_nonneg_int("tile", tile, 1)
    _check_nonneg_int("halo", halo, 0)
    tiles = []
    for y0, y1 in split(height, tile):
        for x0, x1 in split(width, tile):
            tiles.append(Tile(y0, y1, x0, x1, max(0, y0 - halo), min(height, y1 + halo),
                              max(0, x0 - halo), min(width, x1 + halo)))
    return tiles


def activation_bytes_per_pixel(config: Any, scale: int, element_size: int = 4) -> int:
    """Estimated peak activation memory of one reference forward pass, in bytes per input pixel.

    The body holds about 6 feature maps (block input and output, both convs, the head's output for the global
    skip). Each upsampler stage holds the head and body outputs (2 maps) plus, at the stage's resolution, its
    conv output, oneDNN's reordered copy of it and the pixel-shuffled copy: ``3 r^2`` maps. On top comes a 25%
    margin. Checks: the reference peaks in DESIGN.md (512^2 input, fp32: 670 MiB at x2, 2.4 GiB at x4) are 10.5
    and 38 maps per pixel, this says 17.5 and 62; measured here on a 16-feature x2 model, 232 floats per pixel
    against 280.
    """
    config = _config_of(config)
    config.require_scale(scale)
    f = config.n_feats
    peak = 6 * f  # the body
    if getattr(config, "tail", "upsampler") == "conv-shuffle":
        # Its conv output (colours x s^2 at LR), the shuffled copy and add_mean's output, beside the body's
        # two maps.
        peak = max(peak, 2 * f + 3 * config.n_colors * scale * scale)
        return math.ceil(peak * element_size * _SAFETY)
    area = 1  # output pixels per input pixel at the current stage
    for r in upsample_factors(scale):
        peak = max(peak, 2 * f + 3 * r * r * f * area)
        area *= r * r
    # The final conv: its input, its output and add_mean's output at full resolution.
    peak = max(peak, 2 * f + f * area + 2 * config.n_colors * area)
    return math.ceil(peak * element_size * _SAFETY)


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device: Any) -> int:
    """Activation bytes one forward pass may use on ``device`` (a ``torch.device``).

    CUDA: ``GPU_MEMORY_FRACTION`` of the free memory. CPU: ``CPU_MEMORY_BUDGET``, capped at half the available RAM.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_MEMORY_FRACTION)
    available = _available_ram()
    return CPU_MEMORY_BUDGET if available is None else max(1, min(CPU_MEMORY_BUDGET, available // 2))


def auto_tile_size(height: int, width: int, halo: int, bytes_per_pixel: int, budget: int) -> int:
    """Core side for an ``height x width`` image so that one tile with its halo fits in ``budget`` bytes.

    The whole image when it fits (no halo needed); otherwise the largest square core whose input box
    ``(core + 2 halo)^2`` fits, but at least ``MIN_TILE`` and at least ``halo`` (so the halo's overlap costs at
    most 9x the core's work). The peak memory of a forward pass is then bounded by the budget -- or, when
    even the smallest tile exceeds it, by that tile, whatever the image size.
    """
    _check_nonneg_int("height", height, 1)
    _check_nonneg_int("width", width, 1)
    _check_nonneg_int("halo", halo, 0)
    _check_nonneg_int("bytes_per_pixel", bytes_per_pixel, 1)
    _check_nonneg_int("budget", budget, 1)
    pixels = budget // bytes_per_pixel
    if height * width <= pixels:
        return max(height, width)
    side = math.isqrt(pixels)
    return max(side - 2 * halo, MIN_TILE, halo)
