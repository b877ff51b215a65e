"""The bundled default model: an MDSR-baseline trained by fastsr on the 291 classic training images
(T91 + BSD200; never on the evaluation sets).

The weights ship inside the package (``fastsr/weights/``) as an fp16 fastsr safetensors file with a SHA-256
checksum beside it; nothing is downloaded. :func:`write_bundle` makes both from a trained model.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

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


def write_bundle(model, root: str | Path) -> Path:
    """Save ``model`` as the default weights in ``root`` (fp16 safetensors + ``.sha256``); returns the path."""
    from .checkpoint import save

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = save(model, root / DEFAULT_WEIGHTS, dtype=torch.float16)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / (DEFAULT_WEIGHTS + ".sha256")).write_text(f"{digest}  {DEFAULT_WEIGHTS}\n")
    return path
