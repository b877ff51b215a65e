"""The bundled default model: an MDSR-baseline trained by fastsr on the 291 classic training images.

The weights ship inside the package (``fastsr/weights/``) with a SHA-256 checksum; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

DEFAULT_WEIGHTS = "mdsr-baseline-291.safetensors"


class DefaultWeightsMissing(RuntimeError):
    """The package carries no default weights (not trained yet, or stripped from this install)."""


def default_weights_path() -> Path:
    """Path of the bundled default weights, verified against their checksum."""
    root = Path(str(resources.files("fastsr") / "weights"))
    path, digest_file = root / DEFAULT_WEIGHTS, root / (DEFAULT_WEIGHTS + ".sha256")
    if not path.is_file() or not digest_file.is_file():
        raise DefaultWeightsMissing(
            "fastsr has no bundled default weights yet (they are being trained); pass a checkpoint with "
            "--model PATH / model=PATH (official EDSR-PyTorch, BasicSR or fastsr .pt/.pth/.safetensors)"
        )
    expected = digest_file.read_text().split()[0]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise DefaultWeightsMissing(f"bundled weights {path} are corrupt: sha256 {actual}, expected {expected}")
    return path
