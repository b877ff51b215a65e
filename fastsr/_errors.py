"""The checkpoint and video errors and small helpers for error messages, shared by the modules that read user
files (here, below them all, so that no two of them import each other for it)."""

from __future__ import annotations

# Exception texts from decoders and unpicklers can be long (whole tracebacks, byte dumps): a message keeps
# the first line, cut to this many characters.
MAX_DETAIL_CHARS = 300


def first_line(e: BaseException, limit: int = MAX_DETAIL_CHARS) -> str:
    """``"TypeName: first line of the message"`` (cut to ``limit`` characters), or the type name alone."""
    text = str(e).strip()
    text = text.splitlines()[0][:limit] if text else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, matches no known layout, or contradicts the inferred network."""


class VideoError(ValueError):
    """A video that cannot be read, decoded or written as asked (the message names the file and the place)."""
