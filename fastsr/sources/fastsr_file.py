"""fastsr's own checkpoint files (:func:`fastsr.save`): the official key layout plus the network's config,
stored in the safetensors metadata or beside the state dict in a torch file. The stored config is a claim:
:func:`fastsr.sources.layout.build_checked` compares its sizes with the tensors before anything is built."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from .._errors import CheckpointError, first_line
from ..models.config import EDSRConfig, MDSRConfig, config_from_dict, config_from_name
from .layout import ARCHS, require_layout
from .raw import Raw

NAME = "fastsr"
CARRIES_CONFIG = True
MEAN_IN_CONFIG = False
FORMAT_TAG = "fastsr"
FORMAT_VERSION = 1


def detect(raw: Raw) -> bool:
    obj, metadata = raw.obj, raw.metadata
    return ((isinstance(obj, Mapping) and obj.get("format") == FORMAT_TAG)
            or (metadata.get("format") == FORMAT_TAG and "config" in metadata))


def carried_config(raw: Raw, tag: str = FORMAT_TAG) -> dict[str, Any] | None:
    """The config dict a fastsr file (or, with ``tag``, a training checkpoint) carries; ``None`` for others."""
    if isinstance(raw.obj, Mapping) and raw.obj.get("format") == tag:
        config = raw.obj.get("config")
    elif tag == FORMAT_TAG and raw.metadata.get("format") == FORMAT_TAG and "config" in raw.metadata:
        try:
            config = json.loads(raw.metadata["config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"fastsr safetensors metadata has an unreadable config: {e}") from e
    else:
        return None
    if not isinstance(config, dict):
        raise CheckpointError(f"fastsr checkpoint config must be a dict, got {type(config).__name__}")
    return config


def config_and_state(raw: Raw, carried: dict[str, Any] | None, *, arch: str | None,
                     overrides: Mapping[str, Any]) -> tuple[EDSRConfig | MDSRConfig, dict[str, torch.Tensor]]:
    """The carried config (with ``overrides``; ``arch`` is only checked against it) and the state dict."""
    state = raw.state
    require_layout(state)
    try:
        config = config_from_dict(carried)
        config = config.replace(**overrides) if overrides else config
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the fastsr checkpoint carries an invalid config: {e}") from e
    if arch is not None:  # the file's own config wins; arch is only checked against it
        wanted = arch if arch in ARCHS else config_from_name(arch).arch
        if wanted != config.arch:
            raise CheckpointError(f"arch={arch!r} was requested but the checkpoint is a {config.arch}")
    return config, state


def convert(raw: Raw, *, arch: str | None = None, **overrides: Any) -> tuple[EDSRConfig | MDSRConfig, dict[str, torch.Tensor]]:
    carried = carried_config(raw)
    return config_and_state(raw, carried, arch=arch, overrides=overrides)


def read_info(raw: Raw) -> dict[str, Any]:
    """The ``info`` dict a fastsr file was saved with; ``{}`` when it has none or is not a fastsr file."""
    if raw.metadata.get("format") == FORMAT_TAG:
        text = raw.metadata.get("info")
    elif isinstance(raw.obj, Mapping) and raw.obj.get("format") == FORMAT_TAG:
        text = raw.obj.get("info")
    else:
        return {}  # not a fastsr file: an "info" entry there is some other framework's
    if text is None:
        return {}
    try:
        info = json.loads(text)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{raw.where}: unreadable info ({first_line(e)})") from e
    if not isinstance(info, dict):
        raise CheckpointError(f"{raw.where}: info must be a JSON object, got {type(info).__name__}")
    return info
