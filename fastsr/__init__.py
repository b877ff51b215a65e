"""fastsr: EDSR / MDSR super-resolution as a fast inference engine.

Public API (imported lazily, so ``import fastsr`` and ``fastsr --version`` stay cheap):

* ``fastsr.load(path_or_state_dict, *, arch=None, **overrides)`` -- a reference network from an official
  EDSR-PyTorch, BasicSR or fastsr checkpoint (``.pt`` / ``.pth`` / ``.safetensors``).
* ``fastsr.save(model, path)`` -- a fastsr checkpoint that carries its config.
* ``fastsr.optimize(model, *, backend=None, precision=None)`` -- the inference engine for a reference network
  (or an EDSR-PyTorch / BasicSR EDSR instance), with the same forward contract.
* ``fastsr.models`` -- the reference networks, configs and presets (``fastsr.models.create("mdsr")``).
* ``fastsr.export_onnx(model, path, *, scale=None, precision="fp32", dynamic=True)`` -- the optimized network
  as an ONNX file (needs the ``export`` extra: onnx).
* ``fastsr.upscale_video(src, dst, scale, *, model=None, codec=None, crf=None, ...)`` -- a video file upscaled
  frame by frame, its audio and subtitles kept, resumable (needs the ``video`` extra: PyAV).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from . import models
    from .checkpoint import CheckpointError, load, save
    from .engine import optimize
    from .export import export_onnx
    from .upscaler import Upscaler, upscale
    from .video import VideoError, upscale_video

_LAZY = {
    "load": ("fastsr.checkpoint", "load"),
    "save": ("fastsr.checkpoint", "save"),
    "CheckpointError": ("fastsr.checkpoint", "CheckpointError"),
    "models": ("fastsr.models", None),
    "optimize": ("fastsr.engine", "optimize"),
    "export_onnx": ("fastsr.export", "export_onnx"),
    "upscale": ("fastsr.upscaler", "upscale"),
    "Upscaler": ("fastsr.upscaler", "Upscaler"),
    "upscale_video": ("fastsr.video", "upscale_video"),
    "VideoError": ("fastsr.video", "VideoError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fastsr' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
