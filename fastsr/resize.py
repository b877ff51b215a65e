"""MATLAB-compatible bicubic image resizing in pure numpy.

Math
----
Each axis is resized separately with a 1-D filter. For an input axis of length
``n_in``, an output axis of length ``n_out`` and a scale factor ``s`` (``s > 1``
enlarges), output pixel ``x = 1 .. n_out`` (1-based, MATLAB convention) samples
the input at

    u(x) = x / s + 0.5 * (1 - 1 / s)

which maps pixel *centres* onto pixel centres. The weights of the input pixels
``j`` near ``u`` are ``h(u - j)``, normalised to sum to 1, with the Keys cubic
kernel (``a = -0.5``)::

    cubic(t) = 1.5 |t|^3 - 2.5 |t|^2 + 1                 for |t| <= 1
             = -0.5 |t|^3 + 2.5 |t|^2 - 4 |t| + 2         for 1 < |t| <= 2
             = 0                                           otherwise

When enlarging (``s >= 1``) ``h = cubic`` with support width 4. When shrinking
(``s < 1``) the kernel is widened to antialias: ``h(t) = s * cubic(s * t)``
with support width ``4 / s``. The taps considered for output ``x`` are
``floor(u - width / 2) + (0 .. ceil(width) + 1)``; taps whose weight is zero
for every output pixel are dropped (as MATLAB does).

Border conventions
------------------
Taps that fall outside ``1 .. n_in`` are mapped back into the image:

* ``border="replicate"`` clamps the index (``min(max(j, 1), n_in)``), i.e.
  the edge pixel is repeated. This is what older MATLAB ``imresize`` did, and
  it is the procedure that produced the LR files of the benchmark data set.
* ``border="symmetric"`` mirrors the index (``... 2 1 | 1 2 ... n | n n-1 ...``),
  as modern MATLAB and most Python ports do.

Both give the same interior pixels; only pixels within about ``2 / s`` input
pixels (downscaling) or 2 input pixels (upscaling) of the border differ.

Passes and rounding
-------------------
The two 1-D passes run in MATLAB's order: the axis with the smaller scale
factor first, ties (every isotropic resize) broken in favour of the height
axis, so an isotropic resize always does height first, then width. Arithmetic is
float64. For ``uint8`` input, MATLAB keeps the intermediate image as ``uint8``
between passes; ``round_each_pass=True`` reproduces this by converting to
uint8 after every 1-D pass (round half away from zero, then clip to
[0, 255], which is MATLAB's saturating ``uint8`` conversion). With
``round_each_pass=False`` the value is rounded once at the end.

``border="replicate"`` with per-pass rounding (the default for uint8 input)
reproduces every LR file in the data set (Set5, Set14 and B100 at x2, x3 and x4:
15 + 42 + 300 = 357 files, see ``shared/data/SOURCES.md``) bit-exactly from
``modcrop(HR, s)``. Rounding half to even instead, or rounding only once at the
end, does not (checked: 238 and all 357 files would differ).
``border="symmetric"`` defaults to a single rounding at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["imresize", "modcrop", "cubic"]

Border = Literal["replicate", "symmetric"]

_BORDERS: tuple[str, ...] = ("replicate", "symmetric")
_FLOAT_DTYPES: tuple[type, ...] = (np.float16, np.float32, np.float64)
# Support of the cubic kernel (it is non-zero on (-2, 2)).
_CUBIC_WIDTH = 4.0
# Relative tolerance used when computing ceil(n_in * s): a product such as
# 255 * (1/3) that is within rounding error of an integer is treated as that
# integer rather than being rounded up to the next one.
_SIZE_RTOL = 1e-9
# Upper bound on filter taps per output pixel (about 4 / scale when shrinking);
# it only rejects absurd scales (< ~4e-6) that would exhaust memory.
_MAX_TAPS = 2**20


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``).

    Written in MATLAB's exact form so that weights agree bit for bit.
    """
    absx = np.abs(t)
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1.0)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1.0) & (absx <= 2.0))
    return inner + outer


def _contributions(
    n_in: int, n_out: int, scale: float, border: str
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based source indices, both of shape ``(n_out, taps)``."""
    antialias = scale < 1.0
    width = _CUBIC_WIDTH / scale if antialias else _CUBIC_WIDTH

    x = np.arange(1, n_out + 1, dtype=np.float64)
    # 1-based sample positions in the input (MATLAB convention).
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    # ceil(width) taps cover the support; 2 more guard against rounding.
    taps = int(math.ceil(width)) + 2
    if taps > _MAX_TAPS:
        raise ValueError(
            f"scale {scale!r} is too small: the antialiasing kernel would need {taps} taps "
            f"(limit {_MAX_TAPS}) for an axis of length {n_in}"
        )
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    if antialias:
        weights = scale * cubic(scale * dist)
    else:
        weights = cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)

    idx0 = idx.astype(np.int64) - 1  # to 0-based
    if border == "replicate":
        idx0 = np.clip(idx0, 0, n_in - 1)
    else:  # symmetric: period 2*n_in, mirrored half
        period = 2 * n_in
        m = np.mod(idx0, period)
        idx0 = np.where(m < n_in, m, period - 1 - m)

    keep = np.any(weights != 0.0, axis=0)
    return weights[:, keep], idx0[:, keep]


def _resize_axis(img: np.ndarray, axis: int, weights: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Apply a 1-D filter along ``axis`` (0 or 1) of a float64 array."""
    shape = [1] * img.ndim
    shape[axis] = weights.shape[0]
    lead = (slice(None),) * axis
    out: np.ndarray | None = None
    # Loop over the few taps only; every tap is a vectorised gather (fancy
    # indexing, much faster than np.take along a non-leading axis). Summing
    # tap by tap in order matches MATLAB's accumulation order.
    for k in range(weights.shape[1]):
        term = img[lead + (idx[:, k],)]
        term *= weights[:, k].reshape(shape)
        if out is None:
            out = term
        else:
            out += term
    assert out is not None
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB ``uint8()``: round half away from zero, then saturate to [0, 255].

    For negative values half-away rounding and ``floor(x + 0.5)`` differ, but
    both saturate to 0, so ``clip(floor(x + 0.5), 0, 255)`` is equivalent.
    """
    y = x + 0.5
    np.floor(y, out=y)
    np.clip(y, 0.0, 255.0, out=y)
    return y.astype(np.uint8)


def _output_length(n_in: int, scale: float) -> int:
    """``ceil(n_in * scale)``, tolerant of float error, and at least 1."""
    exact = n_in * scale
    nearest = round(exact)
    if abs(exact - nearest) <= _SIZE_RTOL * max(1.0, abs(exact)):
        return max(1, int(nearest))
    return max(1, int(math.ceil(exact)))


def _check_scale(value: object, what: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}")
    s = float(value)
    if not math.isfinite(s) or s <= 0.0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return s


def _check_image(img: object, name: str = "img") -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (HxW) or 3-D (HxWxC), got ndim={img.ndim} (shape {img.shape})")
    if img.size == 0:
        raise ValueError(f"{name} is empty (shape {img.shape})")
    return img


def imresize(
    img: np.ndarray,
    scale: float | Sequence[float] | None = None,
    *,
    output_shape: Sequence[int] | None = None,
    border: Border = "replicate",
    round_each_pass: bool | None = None,
) -> np.ndarray:
    """Resize an image with MATLAB's bicubic ``imresize`` (antialiased when shrinking).

    Args:
        img: ``HxW`` or ``HxWxC`` array of dtype uint8, float16, float32 or
            float64 (float in any range; it is not clipped).
        scale: Scale factor (``> 1`` enlarges), a number or a ``(sh, sw)``
            pair. Output size is ``ceil(H * sh) x ceil(W * sw)``. Give exactly
            one of ``scale`` and ``output_shape``.
        output_shape: ``(H_out, W_out)``; per-axis scales become
            ``H_out / H`` and ``W_out / W``.
        border: ``"replicate"`` (clamp, old MATLAB; reproduces the data set's
            LR files) or ``"symmetric"`` (mirror, modern MATLAB).
        round_each_pass: For uint8 input, round to uint8 after each 1-D pass
            (MATLAB behaviour) instead of once at the end. ``None`` means True
            for ``"replicate"`` and False for ``"symmetric"``. Ignored for float
            input.

    Returns:
        The resized image, same number of dimensions and same dtype as ``img``
        (uint8 stays uint8; float inputs are computed in float64 and cast back).

    Raises:
        TypeError: ``img`` is not an ndarray of a supported dtype, or a scale is
            not a number.
        ValueError: bad ndim, empty image, bad scale or output shape, unknown
            border, or both/neither of ``scale`` and ``output_shape``.
    """
    img = _check_image(img)
    is_uint8 = img.dtype == np.uint8
    if not is_uint8 and img.dtype.type not in _FLOAT_DTYPES:
        raise TypeError(f"img dtype must be uint8, float16, float32 or float64, got {img.dtype}")
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {_BORDERS}, got {border!r}")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape (got "
                         + ("both" if scale is not None else "neither") + ")")

    in_h, in_w = img.shape[0], img.shape[1]
    if scale is not None:
        if np.ndim(scale) > 0:  # a (sh, sw) pair; strings and 0-d arrays are scalars
            if len(scale) != 2:
                raise ValueError(f"scale must be a number or a (sh, sw) pair, got length {len(scale)}")
            scales = (_check_scale(scale[0], "scale[0]"), _check_scale(scale[1], "scale[1]"))
        else:
            s = _check_scale(scale, "scale")
            scales = (s, s)
        out_shape = (_output_length(in_h, scales[0]), _output_length(in_w, scales[1]))
    else:
        assert output_shape is not None
        if isinstance(output_shape, (str, bytes)) or not isinstance(output_shape, (Sequence, np.ndarray)) \
                or len(output_shape) != 2:
            raise ValueError(f"output_shape must be a pair (H_out, W_out), got {output_shape!r}")
        dims = []
        for i, d in enumerate(output_shape):
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
                raise TypeError(f"output_shape[{i}] must be an integer, got {d!r}")
            if d < 1:
                raise ValueError(f"output_shape[{i}] must be >= 1, got {int(d)} (output_shape={tuple(output_shape)})")
            dims.append(int(d))
        out_shape = (dims[0], dims[1])
        scales = (out_shape[0] / in_h, out_shape[1] / in_w)

    if round_each_pass is None:
        round_each_pass = border == "replicate"
    per_pass_round = is_uint8 and bool(round_each_pass)

    # MATLAB resizes the axis with the smaller scale first (stable: height on ties).
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    work: np.ndarray = img.astype(np.float64)
    for axis in order:
        weights, idx = _contributions(img.shape[axis], out_shape[axis], scales[axis], border)
        work = _resize_axis(work, axis, weights, idx)
        if per_pass_round:
            work = _to_uint8(work).astype(np.float64)

    if is_uint8:
        return _to_uint8(work)
    return work.astype(img.dtype, copy=False)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``H`` and ``W`` down to multiples of ``scale`` (top-left origin).

    Returns a view of ``img[:H - H % scale, :W - W % scale]``.
    """
    img = _check_image(img)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, np.integer)):
        raise TypeError(f"modcrop scale must be an integer, got {scale!r}")
    if scale < 1:
        raise ValueError(f"modcrop scale must be >= 1, got {scale}")
    h = img.shape[0] - img.shape[0] % scale
    w = img.shape[1] - img.shape[1] % scale
    if h == 0 or w == 0:
        raise ValueError(f"image of shape {img.shape} is smaller than scale {scale}; modcrop would be empty")
    return img[:h, :w]
