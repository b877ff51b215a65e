"""Image-quality metrics for super-resolution: BT.601 luma, PSNR and SSIM.

Scale and dtypes
----------------
Every metric works on the 0-255 scale (peak value 255). Inputs may be

* ``uint8`` arrays, values 0-255, or
* float arrays (float16/32/64) holding values in [0, 1]; they are multiplied
  by 255. Float values are *not* clipped, so a slight overshoot of an SR output
  is measured as it is. Passing float images in 0-255 silently gives wrong
  numbers, so convert those to uint8 (or divide by 255) first.

``sr`` and ``hr`` may have different dtypes (e.g. float SR output against a
uint8 ground truth) but must have the same shape.

Luma (Y)
--------
``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with ``R, G, B`` in [0, 1],
equivalently ``16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with ``R, G, B``
on the 0-255 scale (ITU-R BT.601, as MATLAB's ``rgb2ycbcr``), giving Y in
[16, 235] on the 0-255 scale (the coefficients sum to 219 = 235 - 16). It is kept in float64 (not rounded to uint8).

Gray images: a 2-D image (or ``HxWx1``) is taken to *be* Y already. This is the
MATLAB-era convention the SR papers used for Set14's grayscale ``bridge``. The
other convention, expanding gray to RGB and applying the formula, gives
``Y = 16 + 219/255 * gray``, which scales every difference by 219/255 and so
raises the PSNR of that image by ``20*log10(255/219) ~= 1.32 dB``.

PSNR
----
``10 log10(255^2 / MSE)``, MSE over all (shaved) pixels, and over all channels
when ``y_channel=False``. Identical images give ``inf``.

SSIM
----
Wang et al. (2004) SSIM as in the reference MATLAB ``ssim_index``: an 11x11
Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``,
filtering over the 'valid' region only (no padding, like ``filter2(..,'valid')``),
result = mean of the SSIM map. The Gaussian is separable, so it is applied as
two 1-D passes. In RGB mode the per-channel SSIMs are averaged.

Protocols (``evaluate_pair``)
-----------------------------
* ``"benchmark"`` (Set5/Set14/B100/Urban100): Y channel, ``shave = scale``.
* ``"div2k"`` (EDSR's DIV2K validation): RGB channels, ``shave = scale + 6``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rgb_to_y", "psnr", "ssim", "evaluate_pair"]

# Peak signal value of the 0-255 scale.
_PEAK = 255.0
# BT.601 luma coefficients (for R, G, B in [0, 1], result on the 0-255 scale)
# and the offset of the studio-swing range [16, 235].
_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_Y_OFFSET = 16.0
# SSIM constants from Wang et al. 2004.
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_FLOAT_DTYPES: tuple[type, ...] = (np.float16, np.float32, np.float64)
_PROTOCOLS: tuple[str, ...] = ("benchmark", "div2k")
# Extra border pixels EDSR removes on DIV2K validation (shave = scale + 6).
_DIV2K_EXTRA_SHAVE = 6


def _as_255(img: object, name: str) -> np.ndarray:
    """Validate an image and return it as float64 on the 0-255 scale."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (HxW) or 3-D (HxWxC), got shape {img.shape}")
    if img.size == 0:
        raise ValueError(f"{name} is empty (shape {img.shape})")
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype.type in _FLOAT_DTYPES:
        out = img.astype(np.float64)
        if not np.isfinite(out).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return out * _PEAK
    raise TypeError(f"{name} dtype must be uint8 or float (values in [0, 1]), got {img.dtype}")


def _y_from_255(img255: np.ndarray, name: str) -> np.ndarray:
    """Y on the 0-255 scale from a 0-255 float64 image (gray passes through)."""
    if img255.ndim == 2:
        return img255
    channels = img255.shape[2]
    if channels == 1:
        return img255[:, :, 0]
    if channels != 3:
        raise ValueError(f"{name} must have 1 or 3 channels to compute Y, got {channels} (shape {img255.shape})")
    # Y = 16 + c . rgb with rgb in [0, 1], i.e. 16 + (c . img255) / 255.
    return _Y_OFFSET + (img255 @ _Y_COEFFS) / _PEAK


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0-255 scale (float64, in [16, 235] for valid RGB).

    Args:
        img: ``HxWx3`` RGB, uint8 (0-255) or float in [0, 1]; or a gray image
            (``HxW`` or ``HxWx1``), whose values are returned as Y unchanged
            apart from the scale (MATLAB-era convention, see module docstring).

    Returns:
        ``HxW`` float64 array.
    """
    return _y_from_255(_as_255(img, "img"), "img")


def _check_shave(shave: object, shape: tuple[int, ...], minimum: int = 1) -> int:
    if isinstance(shave, (bool, np.bool_)) or not isinstance(shave, (int, np.integer)):
        raise TypeError(f"shave must be an integer, got {shave!r}")
    shave = int(shave)
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    h, w = shape[0] - 2 * shave, shape[1] - 2 * shave
    if h < minimum or w < minimum:
        raise ValueError(
            f"shave={shave} is too large for an image of shape {shape}: "
            f"{max(h, 0)}x{max(w, 0)} pixels remain, need at least {minimum}x{minimum}"
        )
    return shave


def _prepare(
    sr: np.ndarray, hr: np.ndarray, shave: int, y_channel: bool, minimum: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair and return shaved 0-255 float64 images (HxW or HxWxC)."""
    a = _as_255(sr, "sr")
    b = _as_255(hr, "hr")
    if a.shape != b.shape:
        raise ValueError(f"sr and hr must have the same shape, got sr {sr.shape} and hr {hr.shape}")
    s = _check_shave(shave, a.shape, minimum)
    if y_channel:
        a = _y_from_255(a, "sr")
        b = _y_from_255(b, "hr")
    if s:
        a = a[s:-s, s:-s]
        b = b[s:-s, s:-s]
    return a, b


def psnr(sr: np.ndarray, hr: np.ndarray, *, shave: int = 0, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB on the 0-255 scale.

    Args:
        sr, hr: Images of equal shape, uint8 or float in [0, 1].
        shave: Pixels removed from every border before comparing.
        y_channel: Compare BT.601 luma (benchmark protocol); otherwise all
            channels (one MSE over every pixel and channel).

    Returns:
        PSNR in dB; ``inf`` when the (shaved) images are identical.
    """
    a, b = _prepare(sr, hr, shave, y_channel, minimum=1)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(_PEAK**2 / mse)


def _gaussian_1d(size: int = _SSIM_WIN, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's fspecial('gaussian')."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of a 2-D array with the symmetric 1-D kernel ``g``."""
    n = g.shape[0]
    h, w = img.shape
    rows = g[0] * img[: h - n + 1]
    for k in range(1, n):
        rows = rows + g[k] * img[k : h - n + 1 + k]
    out = g[0] * rows[:, : w - n + 1]
    for k in range(1, n):
        out = out + g[k] * rows[:, k : w - n + 1 + k]
    return out


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two 2-D float64 images on the 0-255 scale."""
    c1 = (_SSIM_K1 * _PEAK) ** 2
    c2 = (_SSIM_K2 * _PEAK) ** 2
    g = _gaussian_1d()
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    mu_aa = mu_a * mu_a
    mu_bb = mu_b * mu_b
    mu_ab = mu_a * mu_b
    var_a = _filter_valid(a * a, g) - mu_aa
    var_b = _filter_valid(b * b, g) - mu_bb
    cov = _filter_valid(a * b, g) - mu_ab
    num = (2.0 * mu_ab + c1) * (2.0 * cov + c2)
    den = (mu_aa + mu_bb + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(sr: np.ndarray, hr: np.ndarray, *, shave: int = 0, y_channel: bool = True) -> float:
    """Structural similarity (Wang et al. 2004) on the 0-255 scale.

    Args:
        sr, hr: Images of equal shape, uint8 or float in [0, 1].
        shave: Pixels removed from every border before comparing; at least
            11x11 pixels (the window size) must remain.
        y_channel: Compare BT.601 luma; otherwise average SSIM over channels.

    Returns:
        Mean of the SSIM map over the 'valid' region (1.0 for identical images).
    """
    a, b = _prepare(sr, hr, shave, y_channel, minimum=_SSIM_WIN)
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


def evaluate_pair(sr: np.ndarray, hr: np.ndarray, scale: int, *, protocol: str = "benchmark") -> dict[str, float]:
    """PSNR and SSIM of an SR result under a standard evaluation protocol.

    Args:
        sr, hr: Images of equal shape (crop ``hr`` with ``modcrop`` first).
        scale: The SR scale factor (sets the shave).
        protocol: ``"benchmark"`` (Y channel, shave = scale) or ``"div2k"``
            (RGB, shave = scale + 6).

    Returns:
        ``{"psnr": ..., "ssim": ...}``.
    """
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, np.integer)):
        raise TypeError(f"scale must be an integer, got {scale!r}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if protocol == "benchmark":
        shave, y_channel = int(scale), True
    elif protocol == "div2k":
        shave, y_channel = int(scale) + _DIV2K_EXTRA_SHAVE, False
    else:
        raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {protocol!r}")
    return {
        "psnr": psnr(sr, hr, shave=shave, y_channel=y_channel),
        "ssim": ssim(sr, hr, shave=shave, y_channel=y_channel),
    }
