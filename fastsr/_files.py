"""Atomic file writing shared by checkpoint and training saves."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def temp_beside(path: Path) -> Path:
    """Create an empty hidden temporary file next to ``path`` (same filesystem, so a rename is atomic).

    It gets the umask's permissions like any new file, not ``tempfile.mkstemp``'s 0600, so the file renamed
    onto ``path`` is readable as users expect (bundled weights are installed for every user of a machine).
    """
    for _ in range(100):  # 64 random bits per name: a clash is practically impossible, but never loop forever
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            with open(tmp, "xb"):
                return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary beside ``path``, renamed onto ``path`` when the block succeeds (an
    interrupted write never leaves a half-written file there; the temporary is always removed)."""
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
