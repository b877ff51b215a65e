"""Where models come from: one module per checkpoint format, one registry, one resolver.

Each format module (in the manner of spandrel's architecture detection) has ``NAME``, ``detect(raw)`` and
``convert(raw, *, arch=None, **overrides) -> (config, state_dict)``, the state dict in the official EDSR key
layout that fastsr's networks share; formats of module instances add ``detect_module`` and ``from_module``.
:data:`FORMATS` is the registry, tried in order; adding a format is one new module and one entry there.

:func:`load` reads a file or state dict of any format; :func:`resolve_model` is the one answer to "which models
do you accept?" for every entry point (``fastsr.upscale`` / ``Upscaler``, ``optimize``, ``export_onnx``, Ray,
video, serve): ``None`` (the bundled weights), a checkpoint path, a preset name that the bundled weights
are, a state dict, or a module.

What a file can make :func:`load` do (README, "Loading untrusted checkpoints"): no pickled code runs; nothing
is allocated from a file's claims (a stored config, a preset) before they agree with the tensors the file
actually holds; every tensor is checked (dense, strided, float, finite) before use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .. import weights
from ..models.config import config_from_name, preset_names
from ..models.networks import EDSR, MDSR
from . import basicsr, edsr_pytorch, fastsr_file, fastsr_train, opencv_pb
from .layout import MEAN_KEYS, build_checked, describe, no_known_layout, require_layout
from .raw import Raw, read

__all__ = ["FORMATS", "Raw", "detect_format", "from_module", "load", "read", "resolve_model"]

log = logging.getLogger("fastsr.checkpoint")

# Containers that name themselves come first; then layouts recognised by their keys.
FORMATS = (fastsr_file, fastsr_train, opencv_pb, basicsr, edsr_pytorch)

def detect_format(raw: Raw):
    """The first format module of :data:`FORMATS` whose ``detect`` accepts ``raw``; CheckpointError if none."""
    for fmt in FORMATS:
        if fmt.detect(raw):
            return fmt
    raise no_known_layout(raw.state)


def load(source: str | os.PathLike | Mapping[str, Any], *, arch: str | None = None, **overrides: Any) -> EDSR | MDSR:
    """A reference network (eval mode, fp32, CPU) with the weights of ``source``: a path (``.pt``, ``.pth``,
    ``.safetensors``; ``.pb``: OpenCV dnn_superres's EDSR files) or a state dict of any format in
    :data:`FORMATS`. ``arch`` forces ``"edsr"``, ``"edsr-bn"``, ``"mdsr"`` or a preset name; ``overrides``
    replace config fields (e.g. ``res_scale``, which no checkpoint records). Raises FileNotFoundError for a
    missing file and CheckpointError (a ValueError) for anything that cannot be read or does not match.
    """
    raw = read(source)
    fmt = detect_format(raw)
    config, state = fmt.convert(raw, arch=arch, **overrides)
    if fmt.CARRIES_CONFIG:
        claimed_by = "the config stored in the file" + (" (with the overrides)" if overrides else "")
    else:
        claimed_by = "the requested network" if arch is not None or overrides else "the inferred network"
    optional = set(MEAN_KEYS) if fmt.MEAN_IN_CONFIG else set()
    model = build_checked(config, state, claimed_by, layout=require_layout(state), optional=optional)
    log.debug("loaded %s (%s) from %s", describe(config), fmt.NAME, raw.where)
    return model


def from_module(module: nn.Module) -> tuple[EDSR | MDSR, str]:
    """(a fastsr reference network with the function of ``module``, the name of the format it came from).

    ``module``: a fastsr ``EDSR`` / ``MDSR`` (returned as is), or an instance of a format with module support
    (EDSR-PyTorch's EDSR / MDSR, BasicSR's EDSR).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"expects an nn.Module, got {type(module).__name__}")
    if isinstance(module, (EDSR, MDSR)):
        return module, "fastsr"
    for fmt in FORMATS:
        if hasattr(fmt, "detect_module") and fmt.detect_module(module):
            state, kwargs = fmt.from_module(module)
            return load(state, **kwargs), fmt.NAME
    raise TypeError(
        f"model must be a fastsr EDSR / MDSR, an EDSR-PyTorch EDSR / MDSR or a BasicSR EDSR module, got "
        f"{type(module).__name__}; or pass its checkpoint's path (fastsr.load reads official EDSR-PyTorch, "
        "BasicSR, fastsr and OpenCV .pb files)"
    )


def _bundled_preset(name: str) -> EDSR | MDSR:
    bundled = load(weights.default_weights_path())  # DefaultWeightsMissing without the bundle
    if config_from_name(name) != bundled.config:
        raise ValueError(
            f"{name!r} is a preset without bundled weights (a preset name, which has no weights of its own; "
            f"fastsr bundles {bundled.config.arch} weights only): pass a checkpoint path (official EDSR-PyTorch, "
            "BasicSR, fastsr .pt/.pth/.safetensors or OpenCV .pb), a loaded module, or model=None for the "
            "bundled default"
        )
    return bundled


def resolve_model(spec: Any = None, *, caller: str = "model") -> EDSR | MDSR:
    """The fastsr reference network (eval mode) that ``spec`` names, for every entry point.

    ``spec``: ``None`` (the bundled default weights; DefaultWeightsMissing without them), a checkpoint path
    (any format of :data:`FORMATS`), a preset name that the bundled weights are (any other preset name has no
    weights: ValueError), a state dict, a module (see :func:`from_module`), or an ``optimize``d module (its
    reference network). ``caller`` names the entry point in the TypeError for anything else.
    """
    if spec is None:
        return load(weights.default_weights_path())
    if isinstance(spec, nn.Module):
        reference = getattr(spec, "reference", None)  # an optimize()d module keeps its reference network
        if isinstance(reference, (EDSR, MDSR)):
            return reference
        return from_module(spec)[0]
    if isinstance(spec, Mapping):
        return load(spec)
    if isinstance(spec, (str, os.PathLike)):
        if isinstance(spec, str) and spec in preset_names() and not Path(spec).exists():
            return _bundled_preset(spec)
        return load(spec)
    raise TypeError(f"{caller} takes a checkpoint path, a state dict, a preset name, None (the bundled weights) "
                    f"or a module; got {type(spec).__name__}")
