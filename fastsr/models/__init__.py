"""Reference EDSR / MDSR / batch-norm-baseline networks with the official EDSR-PyTorch state-dict layout."""

from __future__ import annotations

from typing import Any

from .config import (
    EDSRConfig,
    MDSRConfig,
    check_scale,
    config_from_dict,
    config_from_name,
    preset_names,
    upsample_factors,
)
from .networks import EDSR, MDSR, build

__all__ = [
    "EDSR",
    "MDSR",
    "EDSRConfig",
    "MDSRConfig",
    "build",
    "check_scale",
    "config_from_dict",
    "config_from_name",
    "create",
    "preset_names",
    "upsample_factors",
]


def create(name: str, **overrides: Any) -> EDSR | MDSR:
    """A randomly initialised reference network for preset ``name``, e.g. ``create("edsr-baseline-x2")``."""
    return build(config_from_name(name, **overrides))
