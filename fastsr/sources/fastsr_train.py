"""``fastsr train``'s resumable checkpoints (``checkpoint.pt`` in a run folder): the network's weights under
``model`` and its config beside them, with the optimizer state and the run's options (ignored here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..models.config import EDSRConfig, MDSRConfig
from .fastsr_file import carried_config, config_and_state
from .raw import Raw

NAME = "fastsr-train"
CARRIES_CONFIG = True
MEAN_IN_CONFIG = False
FORMAT_TAG = "fastsr-train"


def detect(raw: Raw) -> bool:
    return isinstance(raw.obj, Mapping) and raw.obj.get("format") == FORMAT_TAG


def convert(raw: Raw, *, arch: str | None = None, **overrides: Any) -> tuple[EDSRConfig | MDSRConfig, dict[str, torch.Tensor]]:
    carried = carried_config(raw, FORMAT_TAG)
    return config_and_state(raw, carried, arch=arch, overrides=overrides)
