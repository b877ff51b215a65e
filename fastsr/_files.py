"""Atomic file writing shared by image, checkpoint, export and training saves.

A file is written under a hidden temporary name beside its target (same folder, so the final rename is
atomic and stays on one filesystem) and renamed into place only when complete. The temporary file is
created exclusively (``O_EXCL``, never through a symlink) and written through the descriptor that created
it, so a name swapped in a shared folder cannot redirect the write. Its name fits wherever the final name
fits. Live temporaries are registered, so a signal handler can remove them (:func:`remove_live_temps`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# ".{name}.{16 hex digits}.tmp": the decoration the temporary name adds to the final one, in bytes.
_TEMP_EXTRA = len(".") + len(".") + 16 + len(".tmp")
_DEFAULT_NAME_MAX = 255  # NAME_MAX of every common Linux, macOS and Windows filesystem
_LIVE: set[Path] = set()
_LIVE_LOCK = threading.Lock()


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf; a missing folder fails later
        return _DEFAULT_NAME_MAX


def _temp_name(path: Path) -> str:
    """A hidden name beside ``path`` that is no longer than the longest name the folder allows."""
    name = os.fsencode(path.name)
    keep = max(0, _name_max(path.parent) - _TEMP_EXTRA)
    # Cut in bytes; a multi-byte character cut in half decodes to surrogate escapes, which re-encode exactly.
    return f".{os.fsdecode(name[:keep])}.{secrets.token_hex(8)}.tmp"


def error_about(e: OSError, path: Path) -> OSError:
    """``e`` re-raised about the file the user asked for, not the hidden temporary."""
    return type(e)(e.errno, e.strerror or str(e), str(path)) if e.errno is not None else type(e)(f"{path}: {e}")


def open_temp_beside(path: Path) -> tuple[BinaryIO, Path]:
    """Create a hidden temporary file next to ``path`` and return it open for binary writing, with its name.

    It gets the umask's permissions like any new file, not ``tempfile.mkstemp``'s 0600, so the file renamed
    onto ``path`` is readable as users expect (bundled weights are installed for every user of a machine).
    An OSError (a read-only or missing folder, ...) names ``path``. The caller removes the temporary, or
    renames it into place, and calls :func:`forget_temp`.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    for _ in range(100):  # 64 random bits per name: a clash is practically impossible, but never loop forever
        tmp = path.with_name(_temp_name(path))
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise error_about(e, path) from None
        with _LIVE_LOCK:
            _LIVE.add(tmp)
        return os.fdopen(fd, "wb"), tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def forget_temp(tmp: Path) -> None:
    """Remove ``tmp`` if it is still there and stop tracking it."""
    try:
        tmp.unlink(missing_ok=True)
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(tmp)


def remove_live_temps() -> int:
    """Remove every temporary file this process is writing (for a signal handler); returns how many."""
    with _LIVE_LOCK:
        live = list(_LIVE)
        _LIVE.clear()
    removed = 0
    for tmp in live:
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary beside ``path``, renamed onto ``path`` when the block succeeds (an
    interrupted write never leaves a half-written file there; the temporary is always removed)."""
    f, tmp = open_temp_beside(path)
    try:
        with f:
            yield f
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise error_about(e, path) from None
    finally:
        forget_temp(tmp)


def move_into_place(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Rename the finished temporary ``tmp`` onto ``path``. Without ``overwrite`` an existing ``path`` raises
    FileExistsError and stays untouched: ``tmp`` is hard-linked into place, which fails instead of replacing
    (where the filesystem has no hard links: a check, then the rename). ``tmp`` is left for the caller."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists") from None
    except OSError:  # no hard links on this filesystem: check, then rename
        if path.exists():
            raise FileExistsError(f"{path} exists") from None
        os.replace(tmp, path)
