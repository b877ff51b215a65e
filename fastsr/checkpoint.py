"""Checkpoint loading and saving.

:func:`load` reads, without ever executing pickled code (``torch.load(weights_only=True)`` or safetensors),
every format of :mod:`fastsr.sources` -- one module per format:

* official EDSR-PyTorch files (plain state dicts: ``edsr_baseline_x2-1bc95232.pt``, ``mdsr-*.pt``, ...),
  including the legacy (pre-1.6, non-zip) serialization they were published in;
* BasicSR EDSR files, bare or nested under ``params_ema`` (preferred) or ``params``;
* fastsr's own files (:func:`save`), which carry their config, and ``fastsr train``'s checkpoints;
* OpenCV dnn_superres's EDSR ``.pb`` files (:mod:`fastsr.sources.opencv_pb`);
* a state dict passed directly.

The architecture (EDSR / MDSR / batch-norm baseline), depth, width, scale(s) and colours are inferred from
key names and shapes. ``res_scale`` is in no checkpoint: it defaults to 0.1 for 256 features (the official
EDSR) and 1.0 otherwise, and can be overridden. The inferred network must then match the checkpoint key for
key and shape for shape -- anything missing, unexpected or mis-shaped raises one :class:`CheckpointError`
that names it (unlike the official loader, which silently skips mismatched tail weights).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._errors import CheckpointError
from ._files import atomic_write
from ._version import __version__
from .models.config import EDSRConfig, MDSRConfig
from .models.networks import EDSR, MDSR
from .sources import basicsr, fastsr_file, fastsr_train, layout
from .sources import load as _load_any
from .sources.raw import plain_state, read

__all__ = ["CheckpointError", "load", "save", "read_state_dict", "read_info", "infer_config"]

FORMAT_TAG = fastsr_file.FORMAT_TAG
FORMAT_VERSION = fastsr_file.FORMAT_VERSION
TRAIN_FORMAT_TAG = fastsr_train.FORMAT_TAG  # fastsr.train's resumable checkpoints (weights under "model")


def load(source: str | os.PathLike | Mapping[str, Any], *, arch: str | None = None, **overrides: Any) -> EDSR | MDSR:
    """A reference network (eval mode, fp32, CPU) with the weights of ``source``.

    ``source`` is a path (``.pt``, ``.pth``, ``.safetensors``; ``.pb``: OpenCV dnn_superres's EDSR files, see
    :mod:`fastsr.sources.opencv_pb`) or a state dict: official EDSR-PyTorch, BasicSR (bare or under
    ``params_ema`` / ``params``) or fastsr. ``arch`` forces ``"edsr"``, ``"edsr-bn"``, ``"mdsr"`` or a preset
    name; ``overrides`` replace config fields (e.g. ``res_scale``, which no checkpoint records). Raises
    FileNotFoundError for a missing file and :class:`CheckpointError` (a ValueError) for anything that cannot
    be read or does not match.

    What a file can make it do (README, "Loading untrusted checkpoints"): no pickled code runs; nothing is
    allocated from a file's claims (a stored config, a preset) before they agree with the tensors the file
    actually holds -- sizes come from the tensors' shapes, so the network built is no larger than the file's
    own weights; every tensor is checked (dense, strided, float, finite) before use.
    """
    return _load_any(source, arch=arch, **overrides)


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The raw state dict of a checkpoint file or object, and its fastsr config dict if it carries one.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for anything unreadable.
    """
    raw = read(source)
    config = fastsr_file.carried_config(raw)
    if config is None:
        config = fastsr_file.carried_config(raw, fastsr_train.FORMAT_TAG)
    return plain_state(raw.obj), config


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``info`` dict a fastsr checkpoint was saved with (see :func:`save`); ``{}`` when it has none or is
    not a fastsr file.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for an unreadable file.
    """
    return fastsr_file.read_info(read(path))


def infer_config(state: Mapping[str, torch.Tensor], *, arch: str | None = None, **overrides: Any) -> EDSRConfig | MDSRConfig:
    """The config of the network a state dict (official / BasicSR / fastsr key layout) belongs to.

    ``arch`` may be ``"edsr"``, ``"edsr-bn"``, ``"mdsr"`` (checked against the detected layout) or a preset
    name (its config is used as the base instead of inference). ``overrides`` replace config fields.
    """
    if "conv_first.weight" in state:
        state = basicsr.to_official(state)
    return layout.infer_config(state, arch=arch, **overrides)


# ----------------------------------------------------------------------------------------------- saving


def save(model: EDSR | MDSR, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
         info: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a fastsr checkpoint that carries its config; ``.safetensors`` or torch format.

    ``dtype`` (e.g. ``torch.float16``) casts the floating-point weights. ``info`` (a JSON-serialisable dict:
    training steps, data, ...) is stored beside the config and read back by :func:`read_info`. The file is
    written to a temporary name and renamed, so an interrupted save never leaves a half-written checkpoint.
    """
    if not isinstance(model, (EDSR, MDSR)):
        raise TypeError(f"save expects a fastsr EDSR or MDSR module, got {type(model).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    info_json = None
    if info is not None:
        if not isinstance(info, Mapping):
            raise TypeError(f"info must be a dict, got {type(info).__name__}")
        try:
            info_json = json.dumps(dict(info), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"info must be JSON-serialisable: {e}") from e
    path = Path(path)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    config = model.config.to_dict()
    with atomic_write(path) as f:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import save as safetensors_bytes

            metadata = {"format": FORMAT_TAG, "format_version": str(FORMAT_VERSION),
                        "fastsr_version": __version__, "config": json.dumps(config)}
            if info_json is not None:
                metadata["info"] = info_json
            f.write(safetensors_bytes(state, metadata=metadata))
        else:
            obj = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "fastsr_version": __version__,
                   "config": config, "state_dict": state}
            if info_json is not None:
                obj["info"] = info_json
            torch.save(obj, f)
    return path
