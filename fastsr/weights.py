"""The bundled default model: an MDSR-baseline trained by fastsr on the 291 classic training images
(T91 + BSD200; never on the evaluation sets).

The weights ship inside the package (``fastsr/weights/``) as an fp16 fastsr safetensors file with a SHA-256
checksum beside it; nothing is downloaded. :func:`write_bundle` makes both from a trained model, and
:func:`bundle_run` from a ``fastsr train`` run folder, recording its provenance (steps, data, recipe) in the
file, where :func:`default_weights_info` and ``fastsr info`` read it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch

DEFAULT_WEIGHTS = "mdsr-baseline-291.safetensors"


class DefaultWeightsMissing(RuntimeError):
    """The package carries no default weights (not trained yet, or stripped from this install)."""


def _bundle_dir() -> Path:
    return Path(str(resources.files("fastsr") / "weights"))


def default_weights_path(root: str | Path | None = None) -> Path:
    """Path of the bundled default weights (in ``root``, default the package's), verified by checksum."""
    root = Path(root) if root is not None else _bundle_dir()
    path, digest_file = root / DEFAULT_WEIGHTS, root / (DEFAULT_WEIGHTS + ".sha256")
    if not path.is_file() or not digest_file.is_file():
        raise DefaultWeightsMissing(
            f"fastsr has no bundled default weights in {root} (missing {DEFAULT_WEIGHTS} or its .sha256); "
            "pass a checkpoint with --model PATH / model=PATH (official EDSR-PyTorch, BasicSR or fastsr "
            ".pt/.pth/.safetensors)"
        )
    expected = digest_file.read_text().split()[0]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise DefaultWeightsMissing(f"bundled weights {path} are corrupt: sha256 {actual}, expected {expected}")
    return path


def write_bundle(model, root: str | Path, *, info: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` as the default weights in ``root`` (fp16 safetensors + ``.sha256``); returns the path.

    ``info`` (JSON-serialisable) is stored in the file: how the weights were made.
    """
    from .checkpoint import save

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = save(model, root / DEFAULT_WEIGHTS, dtype=torch.float16, info=info)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / (DEFAULT_WEIGHTS + ".sha256")).write_text(f"{digest}  {DEFAULT_WEIGHTS}\n")
    return path


def default_weights_info(root: str | Path | None = None) -> dict[str, Any]:
    """The provenance stored in the bundled weights (``{}`` if none); DefaultWeightsMissing without them."""
    from .checkpoint import read_info

    return read_info(default_weights_path(root))


def bundle_run(run: str | os.PathLike, root: str | Path, *, notes: str | None = None,
               earlier_steps: int = 0) -> Path:
    """Bundle the model of a ``fastsr train`` run folder (its ``checkpoint.pt``) as the default weights.

    The file records the run's step count (plus ``earlier_steps``: the training its starting weights already
    had, for a run started with ``init_from``), batch and patch size, the training folders' names and image
    count as the checkpoint recorded them, and ``notes`` (free text: options of earlier sessions, hardware).
    Raises FileNotFoundError without a checkpoint and CheckpointError for one that is not from fastsr train.
    """
    import json

    if isinstance(earlier_steps, bool) or not isinstance(earlier_steps, int) or earlier_steps < 0:
        raise ValueError(f"earlier_steps must be an int >= 0, got {earlier_steps!r}")
    from .checkpoint import TRAIN_FORMAT_TAG, CheckpointError, _read_file, load

    ckpt_path = Path(run) / "checkpoint.pt"
    ckpt, _ = _read_file(ckpt_path)
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
