"""The bundled default model: an MDSR-baseline trained by fastsr on the 291 classic training images
(T91 + BSD200; never on the evaluation sets).

The weights ship inside the package (``fastsr/weights/``) as an fp16 fastsr safetensors file with a SHA-256
checksum beside it; nothing is downloaded. This module says where they are and checks them; it imports no
other fastsr module, so the model resolver (:mod:`fastsr.sources`) can use it. :mod:`fastsr.bundle` makes the
bundle and reads its provenance.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

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
