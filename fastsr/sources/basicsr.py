"""BasicSR EDSR checkpoints (``conv_first``, ``body.{i}.conv1/conv2``, ``conv_after_body``, ``upsample.*``,
``conv_last``), bare or nested under ``params_ema`` (preferred) or ``params``, and BasicSR EDSR module
instances (for :func:`fastsr.optimize`).

BasicSR's module maps [0, 1] to [0, 1] with ``(x - mean) * 255`` inside; the converted fastsr network maps
``255 * x`` to ``255 * basicsr(x)`` with the same weights and DIV2K mean, applied by the config's MeanShift
(the file has none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models.config import EDSRConfig, MDSRConfig
from .layout import count_indexed, infer_config
from .raw import Raw

NAME = "basicsr"
CARRIES_CONFIG = False
MEAN_IN_CONFIG = True  # BasicSR applies the mean outside its convs: the config's MeanShift does it here

_RULES = [
    (re.compile(r"^conv_first\.(.+)$"), r"head.0.\1"),
    (re.compile(r"^body\.(\d+)\.conv1\.(.+)$"), r"body.\1.body.0.\2"),
    (re.compile(r"^body\.(\d+)\.conv2\.(.+)$"), r"body.\1.body.2.\2"),
    (re.compile(r"^upsample\.(\d+)\.(.+)$"), r"tail.0.\1.\2"),
    (re.compile(r"^conv_last\.(.+)$"), r"tail.1.\1"),
]


def detect(raw: Raw) -> bool:
    return "conv_first.weight" in raw.state


def to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with BasicSR's names replaced by the official EDSR layout's."""
    n_blocks = count_indexed(state, "body.{}.conv1.weight")
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("conv_after_body."):
            new = f"body.{n_blocks}." + key[len("conv_after_body."):]
        else:
            for pattern, repl in _RULES:
                if pattern.match(key):
                    new = pattern.sub(repl, key)
                    break
        out[new] = value
    return out


def convert(raw: Raw, *, arch: str | None = None, **overrides: Any) -> tuple[EDSRConfig | MDSRConfig, dict[str, torch.Tensor]]:
    state = to_official(raw.state)
    return infer_config(state, arch=arch, **overrides), state


def detect_module(module: nn.Module) -> bool:
    return hasattr(module, "conv_first") and hasattr(module, "conv_last")


def from_module(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the instance's state dict, the :func:`fastsr.load` keywords for what it holds outside it: value
    range, mean, residual scale)."""
    img_range = float(getattr(module, "img_range", 255.0))
    mean = getattr(module, "mean", None)
    kwargs: dict[str, Any] = {"arch": "edsr", "rgb_range": img_range}
    if isinstance(mean, torch.Tensor) and mean.numel() == 3:
        kwargs["rgb_mean"] = tuple(float(v) for v in mean.flatten())
    res_scale = getattr(getattr(module, "body", [None])[0], "res_scale", None)
    if res_scale is not None:
        kwargs["res_scale"] = float(res_scale)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}, kwargs
