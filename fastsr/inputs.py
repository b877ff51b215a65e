"""One way in for inputs: what ``fastsr upscale`` (in one process or on Ray) takes, where each result goes, and
what it may overwrite.

* :func:`expand_inputs`: files, folders (their images, not recursive), globs and, where the caller can read
  them, URIs that pyarrow's filesystems open (``s3://``, ``gs://``, ``file://``) -> :class:`Source` items and
  one error per unusable spec.
* :func:`output_for`: an output's name from its source, the scale and the output's suffix (any kind of
  file: an image, a video); :func:`image_output_for` adds the image rules (format kept or PNG).
* :class:`OutputPlan`: the overwrite and collision policy of one run. An output is never an input, two
  inputs never write the same output (the first in input order wins), and an existing file is replaced only
  with ``overwrite``.

Nothing here prints or parses arguments; pyarrow and Pillow are imported only by the functions that need them.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

__all__ = ["Source", "expand_inputs", "is_uri", "result_mode", "output_for", "image_output_for", "OutputPlan",
           "OutputRefused", "failure_reason"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Source:
    """One input file. ``path``: a local file as found (relative or absolute); for a URI's file, its path on
    ``filesystem`` (a pyarrow filesystem) as a :class:`~pathlib.PurePosixPath`, and ``uri`` the name shown in
    messages. ``folder``: the INPUT folder (local) it was found in, if any."""

    path: PurePath
    folder: Path | None = None
    uri: str | None = None
    filesystem: Any = None

    @property
    def name(self) -> str:
        """The input as messages name it: its URI, or its path."""
        return self.uri if self.uri is not None else str(self.path)


def is_uri(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` is a URI (``scheme://...``), not a local path."""
    return bool(_URI.match(os.fspath(spec)))


# Containers a video input is recognised by (what PyAV reads is wider; these are what folders are listed for).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
                    ".flv", ".wmv", ".3gp", ".ogv")


def is_video(src: Source | str | os.PathLike) -> bool:
    """Whether an input is a video, by its container's extension."""
    path = src.path if isinstance(src, Source) else PurePath(os.fspath(src))
    return path.suffix.lower() in VIDEO_EXTENSIONS


def expand_inputs(specs: Iterable[str | os.PathLike], *, uris: bool = False,
                  videos: bool = False) -> tuple[list[Source], list[str]]:
    """Files, folders (their images -- and with ``videos`` their videos -- not recursive, hidden files
    skipped) and globs -> sources in order (each folder's and glob's sorted), and one error per spec that
    yields nothing. With ``uris`` a URI is listed through pyarrow the same way (a glob only in its last
    component); without, it is a local path."""
    sources: list[Source] = []
    errors: list[str] = []
    for spec in specs:
        spec = os.fspath(spec)
        found, error = _expand_uri(spec) if uris and is_uri(spec) else _expand_local(spec, videos)
        sources += found
        if error:
            errors.append(error)
    return sources, errors


def _expand_local(spec: str, videos: bool = False) -> tuple[list[Source], str | None]:
    from .imageio import IMAGE_EXTENSIONS, not_regular_reason

    path = Path(spec)
    if path.is_dir():
        kinds = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in kinds and not p.name.startswith("."))
        return [Source(p, path) for p in found], None if found else _no_images(path, videos)
    if path.is_file():
        return [Source(path)], None
    if glob.has_magic(spec):
        found = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        return [Source(p) for p in found], None if found else f"no files match {spec}"
    reason = not_regular_reason(path) or "not a regular file"
    return [], f"input not found: {spec}" if reason == "not found" else f"{spec}: {reason}"


def _no_images(folder: str | os.PathLike, videos: bool = False) -> str:
    from .imageio import IMAGE_EXTENSIONS

    if videos:
        return f"no images or videos ({', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)}) in folder {folder}"
    return f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}"


def _expand_uri(spec: str) -> tuple[list[Source], str | None]:
    """A URI's image files on the pyarrow filesystem it names, or an error."""
    import fnmatch
    import posixpath

    from pyarrow import fs as pafs

    from .imageio import IMAGE_EXTENSIONS

    try:
        filesystem, path = pafs.FileSystem.from_uri(spec)
    except Exception as e:  # noqa: BLE001 - unknown scheme, no credentials, a library missing: pyarrow's words
        head, _, tail = spec.rpartition("/")
        if not glob.has_magic(tail):
            return [], f"cannot open {spec}: {e}"
        try:  # pyarrow does not glob: open the folder, match the last component below
            filesystem, path = pafs.FileSystem.from_uri(head)
        except Exception as e2:  # noqa: BLE001
            return [], f"cannot open {spec}: {e2}"
        path = posixpath.join(path, tail)

    def sources(found: list[str], prefix: str) -> list[Source]:
        return [Source(PurePosixPath(p), uri=f"{prefix}/{posixpath.basename(p)}", filesystem=filesystem)
                for p in found]

    def files_in(folder: str) -> list[str]:
        infos = filesystem.get_file_info(pafs.FileSelector(folder, recursive=False))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File)

    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [Source(PurePosixPath(path), uri=spec, filesystem=filesystem)], None
        if info.type == pafs.FileType.Directory:
            found = [p for p in files_in(path) if posixpath.splitext(p)[1].lower() in IMAGE_EXTENSIONS
                     and not posixpath.basename(p).startswith(".")]
            return sources(found, spec.rstrip("/")), None if found else _no_images(spec)
        folder, pattern = posixpath.split(path)
        if glob.has_magic(pattern) and not glob.has_magic(folder):
            found = [p for p in files_in(folder) if fnmatch.fnmatchcase(posixpath.basename(p), pattern)]
            return sources(found, spec.rstrip("/").rpartition("/")[0]), None if found else f"no files match {spec}"
        if glob.has_magic(folder):
            return [], f"{spec}: a URI may have a glob only in its last component"
        return [], f"input not found: {spec}"
    except OSError as e:
        return [], f"cannot list {spec}: {e}"


# ------------------------------------------------------------------------------------------------ naming


def result_mode(im) -> str:
    """The mode of the image :func:`fastsr.upscale` returns for the PIL image ``im``."""
    if im.mode == "P":
        return "RGBA" if "transparency" in im.info else "RGB"
    if im.mode == "PA":
        return "RGBA"
    return "I;16" if im.mode.startswith("I;16") else im.mode


def output_for(src: Source, *, scale: int, suffix: str, output: str | os.PathLike | None = None,
               output_is_file: bool = False, default_folder: str | os.PathLike | None = None) -> Path:
    """Where the result of ``src`` upscaled by ``scale`` goes, as ``<stem><suffix>`` (``suffix``: the output
    format's extension, e.g. ``.png`` or ``.mp4``):

    * ``output_is_file``: ``output`` itself;
    * ``output`` (a folder): ``output/<stem><suffix>``;
    * else ``<stem>_x<scale><suffix>`` in ``default_folder`` if given (the CLI's ``--example``: the current
      folder), in ``FOLDER_x<scale>/`` beside an INPUT folder the source came from (as ``<stem><suffix>``),
      or beside the source.
    """
    if output_is_file:
        if output is None:
            raise ValueError("output_is_file needs an output")
        return Path(output)
    stem = src.path.stem
    if output:
        return Path(output) / f"{stem}{suffix}"
    if default_folder is not None:
        return Path(default_folder) / f"{stem}_x{scale}{suffix}"
    if src.folder is not None:
        return src.folder.parent / f"{src.folder.name}_x{scale}" / f"{stem}{suffix}"
    return Path(src.path).with_name(f"{stem}_x{scale}{suffix}")


def image_output_for(src: Source, im, *, scale: int, output: str | os.PathLike | None = None,
                     output_is_file: bool = False, default_folder: str | os.PathLike | None = None,
                     ) -> tuple[Path, str]:
    """:func:`output_for` for the PIL image ``im`` read from ``src``, and the format to write: the input's
    when it stores the result faithfully (keeping the input's spelling of the extension: ``.jpeg``,
    ``.tiff``), else PNG; an output file's format is its extension's (ValueError if it cannot store the
    result, e.g. alpha as JPEG)."""
    from .imageio import can_store, extension_for, format_for_path, output_format

    mode = result_mode(im)
    if output_is_file:
        out = output_for(src, scale=scale, suffix="", output=output, output_is_file=True)
        fmt = format_for_path(out)
        if not can_store(fmt, mode):
            raise ValueError(f"cannot write a {mode} image as {fmt} ({out}); use .png")
        return out, fmt
    fmt = output_format(im.format, mode)
    suffix = src.path.suffix if fmt == im.format and src.path.suffix else extension_for(fmt)
    return output_for(src, scale=scale, suffix=suffix, output=output, default_folder=default_folder), fmt


# ------------------------------------------------------------------------------------------------ policy


class OutputRefused(ValueError):
    """An output that a run must not write; the message says why, naming the output."""


class OutputPlan:
    """The overwrite and collision policy of one run's outputs.

    ``inputs``: the run's local input files (an output that is one of them, by its absolute or its resolved
    path, is refused even with ``overwrite``). ``overwrite``: an existing output may be replaced; without it
    :meth:`check` refuses one, unless ``resume``: then an existing output is a complete result of an earlier
    run, and the caller skips it (or, with ``overwrite``, replaces it).

    Collisions: :meth:`claim` records each output, so a later input that names a claimed one is refused. A
    caller that sees only some of the inputs (a Ray worker's batch) passes the outputs of the earlier inputs
    that could collide to :meth:`check` instead.
    """

    def __init__(self, inputs: Iterable[str | os.PathLike] = (), *, overwrite: bool = False,
                 resume: bool = False) -> None:
        self.overwrite = overwrite
        self.resume = resume
        self._inputs = frozenset(form for p in inputs for form in _forms(p))
        self._claimed: set[str] = set()

    def is_input(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is one of the inputs."""
        return not self._inputs.isdisjoint(_forms(path))

    def check(self, out: str | os.PathLike, *, earlier: Iterable[str | os.PathLike] = ()) -> None:
        """Raise :class:`OutputRefused` if this run must not write ``out``: it is an input, an earlier input
        is written to it (claimed here, or in ``earlier``), or it exists (without ``overwrite`` or ``resume``).
        ``earlier`` is read only after the first of these checks passed (it may be lazy and costly)."""
        if self.is_input(out):
            raise OutputRefused(f"refusing to overwrite the input {out}")
        key = str(Path(out).resolve())
        if key in self._claimed or any(str(Path(o).resolve()) == key for o in earlier):
            raise OutputRefused(f"another input is already written to {out}")
        if not (self.overwrite or self.resume) and os.path.exists(out):
            raise self.exists_error(out)

    def claim(self, out: str | os.PathLike) -> None:
        """:meth:`check` ``out``, then record it: the inputs after this one may not write it."""
        self.check(out)
        self._claimed.add(str(Path(out).resolve()))

    @staticmethod
    def exists_error(out: str | os.PathLike) -> OutputRefused:
        """The refusal of an existing ``out`` (also for one that appeared while the result was computed)."""
        return OutputRefused(f"{out} exists; pass --overwrite to replace it")


def _forms(path: str | os.PathLike) -> tuple[str, str]:
    """A path's absolute and resolved forms: the same file by either name."""
    return os.path.abspath(path), str(Path(path).resolve())


def failure_reason(e: BaseException, name: str) -> str:
    """Why the input ``name`` failed, as ``fastsr upscale`` reports it: the message of a ValueError, TypeError
    or OSError (else with the exception's type), naming the input."""
    message = str(e) if isinstance(e, (ValueError, TypeError, OSError)) else f"{type(e).__name__}: {e}"
    return message if name in message else f"{name}: {message}"
