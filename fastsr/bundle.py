"""Making the bundled default weights and reading their provenance: :func:`write_bundle` saves a trained model
as the bundle (fp16 safetensors + SHA-256), :func:`bundle_run` does it from a ``fastsr train`` run folder,
recording the run's provenance (steps, data, recipe) in the file, where :func:`default_weights_info` and
``fastsr info`` read it. :mod:`fastsr.weights` says where the bundle is."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import TRAIN_FORMAT_TAG, CheckpointError, load, read_info, save
from .sources.raw import read_file
from .weights import DEFAULT_WEIGHTS, default_weights_path


def write_bundle(model, root: str | Path, *, info: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` as the default weights in ``root`` (fp16 safetensors + ``.sha256``); returns the path.

    ``info`` (JSON-serialisable) is stored in the file: how the weights were made.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = save(model, root / DEFAULT_WEIGHTS, dtype=torch.float16, info=info)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / (DEFAULT_WEIGHTS + ".sha256")).write_text(f"{digest}  {DEFAULT_WEIGHTS}\n")
    return path


def default_weights_info(root: str | Path | None = None) -> dict[str, Any]:
    """The provenance stored in the bundled weights (``{}`` if none); DefaultWeightsMissing without them."""
    return read_info(default_weights_path(root))


def bundle_run(run: str | os.PathLike, root: str | Path, *, notes: str | None = None,
               earlier_steps: int = 0) -> Path:
    """Bundle the model of a ``fastsr train`` run folder (its ``checkpoint.pt``) as the default weights.

    The file records the run's step count (plus ``earlier_steps``: the training its starting weights already
    had, for a run started with ``init_from``), batch and patch size, the training folders' names and image
    count as the checkpoint recorded them, and ``notes`` (free text: options of earlier sessions, hardware).
    Raises FileNotFoundError without a checkpoint and CheckpointError for one that is not from fastsr train.
    """
    if isinstance(earlier_steps, bool) or not isinstance(earlier_steps, int) or earlier_steps < 0:
        raise ValueError(f"earlier_steps must be an int >= 0, got {earlier_steps!r}")

    ckpt_path = Path(run) / "checkpoint.pt"
    ckpt, _ = read_file(ckpt_path)
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != TRAIN_FORMAT_TAG:
        raise CheckpointError(f"{ckpt_path} is not a fastsr train checkpoint")
    try:
        options = json.loads(ckpt["options"])
        info: dict[str, Any] = {"trained_steps": earlier_steps + int(ckpt["step"]),
                                "batch_size": int(options["batch_size"]),
                                "patch_size": int(options["patch_size"]), "loss": "L1"}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_path}: incomplete fastsr train checkpoint ({e!r})") from e
    data = ckpt.get("data")
    if isinstance(data, Mapping):  # recorded by fastsr train since 0.1.0's provenance change
        info.update({k: data[k] for k in ("train_data", "train_images") if k in data})
    if notes:
        info["notes"] = notes
    return write_bundle(load(ckpt), root, info=info)  # the checkpoint already read, not a second read
