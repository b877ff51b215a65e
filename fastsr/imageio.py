"""Image files for ``fastsr upscale``: safe reading (pixel limit, truncated files), formats and atomic writing.

Reading decodes with Pillow, applies the EXIF orientation (the written file carries no EXIF) and turns the
modes :func:`fastsr.upscale` does not take into ones it does (CMYK / YCbCr / ... -> RGB, 1-bit -> L,
``I`` with 16-bit values -> ``I;16``). Every failure -- not an image, truncated, corrupt, over the pixel
limit -- is one ``ValueError`` that names the file; a missing file is ``FileNotFoundError``.

Pixel limit: images with more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`, 40 million:
an 8K frame is 33 million; upscaled x4 that is already 0.5 billion output pixels) are refused before they are
decoded, which defuses decompression bombs (a few KB of PNG that claim gigapixels). Raise it with
``max_pixels=`` (``None``: no limit) or ``fastsr upscale --max-pixels``.

Writing goes to a temporary file beside the target, which is then renamed over it (or hard-linked to it when
overwriting is not allowed, so an existing file is never replaced), so a crash never leaves a half-written
image under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import first_line
from ._files import error_about, forget_temp, move_into_place, open_temp_beside

# 40 megapixels per image: above any camera or 8K video frame (33 MP), below Pillow's own bomb warning
# (89 MP). See the module docstring.
DEFAULT_MAX_PIXELS = 40_000_000

# Extensions picked up when a folder is given to ``fastsr upscale``.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# Formats whose output keeps the input's format, and the image modes each can store faithfully (None: all the
# modes fastsr produces). Anything else -- GIF (palette only), alpha in JPEG / BMP, 16-bit in WebP -- is
# written as PNG.
_FORMAT_MODES: dict[str, frozenset[str] | None] = {
    "PNG": None,
    "TIFF": None,
    "JPEG": frozenset({"RGB", "L"}),
    "BMP": frozenset({"RGB", "L"}),
    "WEBP": frozenset({"RGB", "RGBA"}),
}
# Lossy encoders get a high quality: the point of the output is the detail the network added.
_SAVE_PARAMS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"quality": 95}}
_ICC_FORMATS = frozenset({"PNG", "TIFF", "JPEG", "WEBP"})

_MODE_CONVERSIONS = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB",
                     "RGBa": "RGBA", "La": "LA", "PA": "RGBA"}
_PIL_LIMIT_LOCK = threading.Lock()


class PixelLimitError(ValueError):
    """An image (or batch) with more pixels than the limit allows, refused before it is decoded or upscaled."""


def check_pixel_limit(height: int, width: int, max_pixels: int | None, what: str = "image", count: int = 1) -> None:
    """:class:`PixelLimitError` when ``count`` images of ``height * width`` exceed ``max_pixels`` (None: no limit)."""
    if max_pixels is None:
        return
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int):
        raise TypeError(f"max_pixels must be an int or None, got {type(max_pixels).__name__} {max_pixels!r}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 (or None for no limit), got {max_pixels}")
    if count * height * width > max_pixels:
        size = f"{width}x{height}" if count == 1 else f"{count} x {width}x{height}"
        raise PixelLimitError(
            f"{what} is {size} = {count * height * width:,} pixels, over the limit of {max_pixels:,} "
            "(a guard against decompression bombs); raise it with max_pixels= / --max-pixels"
        )


@contextlib.contextmanager
def _pil_limit(max_pixels: int | None) -> Iterator[None]:
    """Let Pillow open what ``max_pixels`` allows (fastsr checks the limit itself, before decoding)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pil_limit = Image.MAX_IMAGE_PIXELS
        # Pillow refuses images over twice its MAX_IMAGE_PIXELS; lift that only when the caller's limit is higher.
        if pil_limit is not None and (max_pixels is None or max_pixels > 2 * pil_limit):
            with _PIL_LIMIT_LOCK:
                Image.MAX_IMAGE_PIXELS = None
                try:
                    yield
                finally:
                    Image.MAX_IMAGE_PIXELS = pil_limit
        else:
            yield


def _normalise_mode(im, path: Path):
    import numpy as np
    from PIL import Image

    mode = im.mode
    if mode in ("RGB", "RGBA", "L", "LA", "P") or mode.startswith("I;16"):
        return im
    if mode in _MODE_CONVERSIONS:
        return im.convert(_MODE_CONVERSIONS[mode])
    if mode == "I":  # 32-bit integers: some decoders' container for 16-bit gray
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"cannot read image {path}: 32-bit integer pixels outside 0..65535 are not supported")
        return Image.fromarray(a.astype(np.uint16))
    raise ValueError(f"cannot read image {path}: unsupported image mode {mode!r}")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def not_regular_reason(path: Path) -> str | None:
    """Why ``path`` is no readable regular file ("not found", "a FIFO (named pipe)", "a symlink loop", ...),
    or None when it is one. Never opens the path (opening a FIFO blocks)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found (a broken symlink)" if path.is_symlink() else "not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        return e.strerror or str(e)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "it is a folder"
    return f"not a regular file: {_file_kind(mode)}"


def open_regular_file(path: Path):
    """``path`` opened for binary reading, if it is a regular file: FileNotFoundError when it does not exist,
    ValueError naming what it is otherwise (a folder, a FIFO, a device, a symlink loop). Opened without
    blocking and checked on the descriptor, so a FIFO swapped in after a check cannot hang the reader."""
    reason = not_regular_reason(path)
    if reason is not None and reason.startswith("not found"):
        raise FileNotFoundError(f"input not found: {path}" + (" (a broken symlink)" if "symlink" in reason else ""))
    if reason is not None:
        raise ValueError(f"cannot read image {path}: {reason}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"input not found: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError(f"cannot read image {path}: not a regular file: {_file_kind(mode)}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Decode the image file ``path`` (first frame) into a loaded ``PIL.Image`` in a mode upscale takes.

    Raises FileNotFoundError for a missing file and ValueError for anything that cannot be decoded or is over
    ``max_pixels``.
    """
    path = Path(path)
    return _decode(open_regular_file(path), path, max_pixels)


def decode_image(data: bytes, name: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """:func:`read_image` for the bytes of an image file read elsewhere (Ray Data, an object store): the same
    decoding, checks and result, pixel for pixel. ``name`` (a path or URI) is what error messages call it."""
    return _decode(_NamedBytes(data, name), name, max_pixels)


class _NamedBytes(io.BytesIO):
    """Bytes in memory that decoders' messages name as Pillow names a file opened by path."""

    def __init__(self, data: bytes, name: str | os.PathLike) -> None:
        super().__init__(data)
        self._name = os.fspath(name)

    def __repr__(self) -> str:
        return repr(self._name)


def _decode(handle, path, max_pixels: int | None):
    """The decoding of :func:`read_image` and :func:`decode_image`, from an open binary ``handle`` (closed here)."""
    from PIL import Image, ImageOps

    with _pil_limit(max_pixels), handle:
        try:
            im = Image.open(handle)
        except Image.DecompressionBombError as e:
            raise PixelLimitError(f"image {path} is over the pixel limit: {e}") from e
        except Exception as e:  # decoders raise OSError, SyntaxError, EOFError, struct.error, ... for bad files
            raise ValueError(f"cannot read image {path}: {first_line(e)}") from e
        with im:
            width, height = im.size
            check_pixel_limit(height, width, max_pixels, f"image {path}")
            if width == 0 or height == 0:
                raise ValueError(f"image {path} is empty ({width}x{height})")
            try:
                im.load()
            except Exception as e:  # truncated or corrupt data
                raise ValueError(f"cannot read image {path}: {first_line(e)}") from e
            fmt, icc = im.format, im.info.get("icc_profile")
            try:
                out = ImageOps.exif_transpose(im)  # a copy, detached from the file
            except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels unreadable
                out = im.copy()
    out = _normalise_mode(out, path)
    out.format = fmt
    if icc:
        out.info["icc_profile"] = icc
    return out


def read_pixels(path: str | os.PathLike, *, gray: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """An image file's 8-bit pixels as a numpy array, for evaluation and training data.

    A gray image (L, LA, 16-bit gray) gives ``HxW`` uint8 when ``gray`` is true; anything else, or every
    image when ``gray`` is false, gives ``HxWx3`` uint8 RGB (alpha dropped, palettes resolved). 16-bit gray
    is scaled to 8 bits as ``round(value / 257)``, as upscale scales uint16. Errors as :func:`read_image`.
    """
    import numpy as np

    im = read_image(path, max_pixels=max_pixels)
    if im.mode.startswith("I;16"):
        y = np.rint(np.asarray(im, dtype=np.float64) / 257).astype(np.uint8)  # 65535 / 257 = 255
        return y if gray else np.repeat(y[..., None], 3, axis=2)
    if gray and im.mode in ("L", "LA"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def format_for_path(path: str | os.PathLike) -> str:
    """Pillow's format name for ``path``'s extension (ValueError for an extension Pillow cannot write)."""
    from PIL import Image

    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write {path}: unknown image extension {ext or '(none)'!r}; use .png, .jpg, ...")
    return fmt


def can_store(fmt: str, mode: str) -> bool:
    """Whether ``fmt`` stores ``mode`` images faithfully (alpha, 16 bits, gray)."""
    if fmt in _FORMAT_MODES:
        modes = _FORMAT_MODES[fmt]
        return modes is None or mode in modes
    return mode in ("RGB", "L")  # other writable formats: leave it to Pillow for plain 8-bit images


def output_format(input_format: str | None, mode: str) -> str:
    """The format to write an upscaled ``mode`` image read as ``input_format``: the same, or PNG."""
    if input_format in _FORMAT_MODES and can_store(input_format, mode):
        return input_format
    return "PNG"


def extension_for(fmt: str) -> str:
    """A file extension for Pillow format ``fmt`` (``.png``, ``.jpg``, ...)."""
    return {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp"}.get(fmt, ".png")


def _save(img, f, fmt: str, icc_profile: bytes | None) -> None:
    params = dict(_SAVE_PARAMS.get(fmt, {}))
    if icc_profile and fmt in _ICC_FORMATS:
        params["icc_profile"] = icc_profile
    img.save(f, format=fmt, **params)


def encode_image(img, format: str, *, icc_profile: bytes | None = None) -> bytes:
    """The bytes :func:`write_image` would write for ``img`` (a PIL image) as ``format``, in memory."""
    if not can_store(format, img.mode):
        raise ValueError(f"cannot store a {img.mode} image as {format}; use PNG")
    buffer = io.BytesIO()
    _save(img, buffer, format, icc_profile)
    return buffer.getvalue()


def write_image(img, path: str | os.PathLike, *, format: str | None = None, overwrite: bool = False,
                icc_profile: bytes | None = None) -> Path:
    """Write ``img`` (a PIL image) to ``path`` atomically: a temporary file beside it, then a rename.

    Without ``overwrite`` an existing ``path`` raises FileExistsError and is left untouched (the temporary
    file is hard-linked into place, which fails instead of replacing). ``format`` defaults to the extension's.
    """
    path = Path(path)
    fmt = format or format_for_path(path)
    if not can_store(fmt, img.mode):
        raise ValueError(f"cannot write a {img.mode} image as {fmt} ({path}); use .png")
    # Hidden, same folder (the rename stays on one filesystem), written through the descriptor that created it.
    f, tmp = open_temp_beside(path)
    try:
        with f:
            _save(img, f, fmt, icc_profile)
            f.flush()
            os.fsync(f.fileno())
        move_into_place(tmp, path, overwrite=overwrite)
    except FileExistsError:
        raise
    except OSError as e:  # a full disk, a quota, a failed rename: about the file asked for, not the temporary
        raise error_about(e, path) from None
    finally:
        forget_temp(tmp)
    return path
