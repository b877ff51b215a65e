"""The official EDSR-PyTorch checkpoints (``edsr_baseline_x2-1bc95232.pt``, ``edsr_x4-4f62e9ef.pt``,
``mdsr-*.pt``, ...) and any plain state dict in their key layout, which fastsr's networks share: EDSR, MDSR
and the batch-norm baseline, bare or nested under a training framework's container key. Also EDSR-PyTorch
module instances (for :func:`fastsr.optimize`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.config import EDSRConfig, MDSRConfig
from .layout import infer_config, layout_of
from .raw import Raw

NAME = "edsr-pytorch"
CARRIES_CONFIG = False  # the config is inferred from the tensors
MEAN_IN_CONFIG = False  # the MeanShift tensors are in the file


def detect(raw: Raw) -> bool:
    return layout_of(raw.state) is not None


def convert(raw: Raw, *, arch: str | None = None, **overrides: Any) -> tuple[EDSRConfig | MDSRConfig, dict[str, torch.Tensor]]:
    return infer_config(raw.state, arch=arch, **overrides), raw.state


def detect_module(module: nn.Module) -> bool:
    return hasattr(module, "sub_mean") and hasattr(module, "head") and hasattr(module, "body")


def from_module(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the instance's state dict, the :func:`fastsr.load` keywords for what it holds outside it: residual
    scale, value range)."""
    overrides: dict[str, Any] = {}
    block = module.body[0] if len(module.body) else None
    if block is not None and hasattr(block, "res_scale"):
        overrides["res_scale"] = float(block.res_scale)
    rgb_range = getattr(getattr(module, "sub_mean", None), "rgb_range", None)
    if rgb_range is not None:
        overrides["rgb_range"] = float(rgb_range)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}, overrides
