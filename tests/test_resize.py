"""Tests for fastsr.resize: MATLAB-compatible bicubic imresize and modcrop.

The data tests check that ``imresize(modcrop(HR, s), 1/s)`` reproduces every
stored LR file of Set5, Set14 and B100 bit-exactly. They locate the data set
through ``$FASTSR_DATA`` or ``<repo>/../shared/data`` and skip when it is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsr.resize import cubic, imresize, modcrop

RNG_SEED = 1234



def _rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


# ---------------------------------------------------------------- synthetic ---


def test_cubic_kernel_values() -> None:
    t = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5, -0.25])
    expected = np.array([1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0, 0.8671875])
    np.testing.assert_array_equal(cubic(t), expected)


@pytest.mark.parametrize("border", ["replicate", "symmetric"])
@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0])
def test_constant_image_stays_constant(scale: float, border: str) -> None:
    img8 = np.full((13, 17, 3), 173, dtype=np.uint8)
    out8 = imresize(img8, scale, border=border)
    assert out8.dtype == np.uint8
    assert np.all(out8 == 173)
    imgf = np.full((13, 17), 0.3, dtype=np.float64)
    outf = imresize(imgf, scale, border=border)
    np.testing.assert_allclose(outf, 0.3, rtol=0, atol=1e-12)


@pytest.mark.parametrize("border", ["replicate", "symmetric"])
def test_identity_at_scale_one(border: str) -> None:
    rng = _rng()
    img8 = rng.integers(0, 256, (11, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img8, 1.0, border=border), img8)
    np.testing.assert_array_equal(imresize(img8, output_shape=(11, 9), border=border), img8)
    imgf = rng.random((11, 9))
    np.testing.assert_array_equal(imresize(imgf, 1, border=border), imgf)


@pytest.mark.parametrize(
    ("n_in", "scale", "n_out"),
    [(7, 0.5, 4), (10, 1 / 3, 4), (9, 1 / 3, 3), (255, 1 / 3, 85), (5, 2.5, 13), (4, 2, 8), (3, 0.1, 1), (480, 1 / 4, 120)],
)
def test_output_size_is_ceil(n_in: int, scale: float, n_out: int) -> None:
    img = np.zeros((n_in, n_in + 1), dtype=np.uint8)
    out = imresize(img, scale)
    assert out.shape == (n_out, math.ceil((n_in + 1) * scale - 1e-9))


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    scale=st.sampled_from([0.25, 1 / 3, 0.5, 0.8, 1.0, 1.25, 2.0, 3.0]),
    value=st.integers(0, 255),
)
def test_property_size_and_constant(h: int, w: int, scale: float, value: int) -> None:
    img = np.full((h, w), value, dtype=np.uint8)
    out = imresize(img, scale)
    assert out.shape == (max(1, math.ceil(h * scale - 1e-9)), max(1, math.ceil(w * scale - 1e-9)))
    assert np.all(out == value)


def test_upscale_ramp_hand_computed() -> None:
    # 1-D ramp 0..7 upscaled x2 along the width. Output x (1-based) samples
    # u = x/2 + 0.25. For x = 1: u = 0.75, taps j = -2..3 with distances
    # 2.75, 1.75, 0.75, -0.25, -1.25, -2.25 and weights
    # 0, -0.0234375, 0.2265625, 0.8671875, -0.0703125, 0 (already sum to 1).
    # replicate: taps -1, 0, 1 all clamp to pixel 1 (value 0) and tap 2 is
    #   pixel 2 (value 1), so out = -0.0703125 * 1 = -0.0703125.
    # symmetric: tap -1 mirrors to pixel 2 (value 1), taps 0, 1 to pixel 1,
    #   so out = -0.0234375 * 1 - 0.0703125 * 1 = -0.09375.
    ramp = np.arange(8, dtype=np.float64)[None, :]
    for border, first in (("replicate", -0.0703125), ("symmetric", -0.09375)):
        out = imresize(ramp, output_shape=(1, 16), border=border)
        assert out.shape == (1, 16)
        assert out[0, 0] == pytest.approx(first, abs=1e-12)
        # The cubic kernel reproduces linear functions exactly away from the
        # border: value = u - 1 (0-based ramp) for x = 6..11 (taps in 1..8).
        x = np.arange(6, 12)
        np.testing.assert_allclose(out[0, x - 1], x / 2 + 0.25 - 1, atol=1e-12)
        # Mirror symmetry of the ramp: out[-1] = 7 - out[0].
        assert out[0, -1] == pytest.approx(7 - first, abs=1e-12)


def test_downscale_hand_computed_both_borders() -> None:
    # [0, 1, 2, 3] -> 2 samples (scale 1/2, antialiased kernel of width 8).
    # Output 1 samples u = 1.5; taps j = -2..5 carry weights
    # 0.5 * cubic((u - j) / 2) = 0.5 * [-0.0234375, -0.0703125, 0.2265625,
    # 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375].
    # replicate: j <= 1 -> pixel 1 (value 0), j >= 4 -> pixel 4 (value 3):
    #   out = 1 * 0.43359375 + 2 * 0.11328125 + 3 * (-0.046875) = 0.51953125
    # symmetric: j = -2, -1, 0 -> pixels 3, 2, 1 and j = 5 -> pixel 4:
    #   out = 1 * 0.3984375 + 2 * 0.1015625 + 3 * (-0.046875) = 0.4609375
    # The second output mirrors the first: 3 - out.
    ramp = np.arange(4, dtype=np.float64)[None, :]
    rep = imresize(ramp, output_shape=(1, 2), border="replicate")
    sym = imresize(ramp, output_shape=(1, 2), border="symmetric")
    np.testing.assert_allclose(rep[0], [0.51953125, 3 - 0.51953125], atol=1e-12)
    np.testing.assert_allclose(sym[0], [0.4609375, 3 - 0.4609375], atol=1e-12)


@pytest.mark.parametrize(("scale", "margin"), [(0.5, 2), (0.25, 2), (2.0, 5)])
def test_replicate_vs_symmetric_differ_only_near_border(scale: float, margin: int) -> None:
    # margin: first output index (0-based) whose non-zero taps all lie inside.
    # x1/2: u = 2x - 0.5, taps |u - j| < 4 need u > 4 -> x >= 3.
    # x1/4: u = 4x - 1.5, taps |u - j| < 8 need u > 8 -> x >= 3.
    # x2:   u = x/2 + 0.25, taps |u - j| < 2 need u > 3 -> x >= 6.
    rng = _rng()
    img = rng.random((48, 40, 3))
    rep = imresize(img, scale, border="replicate")
    sym = imresize(img, scale, border="symmetric")
    inner = (slice(margin, -margin), slice(margin, -margin))
    np.testing.assert_array_equal(rep[inner], sym[inner])
    assert not np.array_equal(rep, sym)
    # uint8 with the same rounding schedule behaves the same way.
    img8 = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    rep8 = imresize(img8, scale, border="replicate", round_each_pass=False)
    sym8 = imresize(img8, scale, border="symmetric", round_each_pass=False)
    np.testing.assert_array_equal(rep8[inner], sym8[inner])


def test_float_and_uint8_paths_agree() -> None:
    rng = _rng()
    img8 = rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)
    for border in ("replicate", "symmetric"):
        for scale in (0.5, 1 / 3, 2.0):
            f64 = imresize(img8.astype(np.float64), scale, border=border)
            assert f64.dtype == np.float64
            once = imresize(img8, scale, border=border, round_each_pass=False)
            assert once.dtype == np.uint8
            # uint8 round-once = float result, rounded half away from zero, clipped.
            np.testing.assert_array_equal(once, np.clip(np.floor(f64 + 0.5), 0, 255).astype(np.uint8))
            # Linearity: [0, 1] floats give the same result scaled by 1/255.
            unit = imresize(img8 / 255.0, scale, border=border)
            np.testing.assert_allclose(unit * 255.0, f64, atol=1e-9)
            # float32 in -> float32 out, close to the float64 result.
            f32 = imresize(img8.astype(np.float32), scale, border=border)
            assert f32.dtype == np.float32
            np.testing.assert_allclose(f32, f64, atol=1e-3)


def test_per_pass_rounding_defaults() -> None:
    rng = _rng()
    img8 = rng.integers(0, 256, (40, 36), dtype=np.uint8)
    rep_default = imresize(img8, 0.5)
    np.testing.assert_array_equal(rep_default, imresize(img8, 0.5, round_each_pass=True))
    assert not np.array_equal(rep_default, imresize(img8, 0.5, round_each_pass=False))
    sym_default = imresize(img8, 0.5, border="symmetric")
    np.testing.assert_array_equal(sym_default, imresize(img8, 0.5, border="symmetric", round_each_pass=False))
    # Float input ignores round_each_pass.
    f = img8.astype(np.float64)
    np.testing.assert_array_equal(imresize(f, 0.5, round_each_pass=True), imresize(f, 0.5, round_each_pass=False))


def test_shapes_channels_and_anisotropic() -> None:
    rng = _rng()
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    assert imresize(gray, 0.5).shape == (10, 15)
    one = gray[:, :, None]
    np.testing.assert_array_equal(imresize(one, 0.5)[:, :, 0], imresize(gray, 0.5))
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    out = imresize(rgb, 0.5)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], imresize(np.ascontiguousarray(rgb[:, :, c]), 0.5))
    assert imresize(rgb, output_shape=(7, 45)).shape == (7, 45, 3)
    assert imresize(rgb, (0.5, 2.0)).shape == (10, 60, 3)
    # Non-contiguous input views work.
    np.testing.assert_array_equal(imresize(rgb[::2, ::2], 2.0), imresize(np.ascontiguousarray(rgb[::2, ::2]), 2.0))
    # Input is not modified.
    before = rgb.copy()
    imresize(rgb, 0.3)
    np.testing.assert_array_equal(rgb, before)


def test_modcrop() -> None:
    img = np.arange(7 * 10 * 3).reshape(7, 10, 3).astype(np.uint8)
    out = modcrop(img, 3)
    assert out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, img[:6, :9])
    assert modcrop(img[:, :, 0], 2).shape == (6, 10)
    assert modcrop(img, 1).shape == img.shape


# ------------------------------------------------------------------- errors ---


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"img": np.zeros(5, np.uint8), "scale": 2}, ValueError, "ndim=1"),
        ({"img": np.zeros((2, 2, 2, 2), np.uint8), "scale": 2}, ValueError, "ndim=4"),
        ({"img": np.zeros((0, 5), np.uint8), "scale": 2}, ValueError, "empty"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": 0}, ValueError, "scale must be a finite number > 0"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": -0.5}, ValueError, "scale"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": float("nan")}, ValueError, "finite"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": float("inf")}, ValueError, "finite"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": "2"}, TypeError, "scale must be a real number"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": 1e-12}, ValueError, "too small"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": (0.5, 0.0)}, ValueError, r"scale\[1\]"),
        ({"img": np.zeros((4, 4), np.uint8), "scale": (0.5, 1, 2)}, ValueError, "pair"),
        ({"img": np.zeros((4, 4), np.int32), "scale": 2}, TypeError, "dtype.*int32"),
        ({"img": np.zeros((4, 4), np.uint16), "scale": 2}, TypeError, "dtype.*uint16"),
        ({"img": np.zeros((4, 4), bool), "scale": 2}, TypeError, "dtype.*bool"),
        ({"img": [[0, 1], [2, 3]], "scale": 2}, TypeError, "numpy array"),
        ({"img": np.zeros((4, 4)), "scale": 2, "border": "reflect"}, ValueError, "border.*reflect"),
        ({"img": np.zeros((4, 4)), "scale": 2, "output_shape": (8, 8)}, ValueError, "exactly one.*both"),
        ({"img": np.zeros((4, 4))}, ValueError, "exactly one.*neither"),
        ({"img": np.zeros((4, 4)), "output_shape": (0, 8)}, ValueError, r"output_shape\[0\] must be >= 1"),
        ({"img": np.zeros((4, 4)), "output_shape": (8, 0)}, ValueError, r"output_shape\[1\]"),
        ({"img": np.zeros((4, 4)), "output_shape": (8,)}, ValueError, "pair"),
        ({"img": np.zeros((4, 4)), "output_shape": (8.5, 8)}, TypeError, "integer"),
    ],
)
def test_imresize_errors(kwargs: dict, exc: type[Exception], pattern: str) -> None:
    img = kwargs.pop("img")
    with pytest.raises(exc, match=pattern):
        imresize(img, **kwargs)


def test_modcrop_errors() -> None:
    img = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match=">= 1"):
        modcrop(img, 0)
    with pytest.raises(TypeError, match="integer"):
        modcrop(img, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="smaller than scale"):
        modcrop(img, 6)
    with pytest.raises(ValueError, match="ndim"):
        modcrop(np.zeros(5, np.uint8), 2)


# ---------------------------------------------------------------- data set ---

_SETS = ("Set5", "Set14", "B100")
_SCALES = (2, 3, 4)
# Number of LR files per scale in the data set (see shared/data/SOURCES.md).
_EXPECTED_COUNT = {"Set5": 5, "Set14": 14, "B100": 100}


@pytest.mark.parametrize("scale", _SCALES)
@pytest.mark.parametrize("set_name", _SETS)
def test_reproduces_stored_lr_files_bit_exactly(set_name: str, scale: int, data_dir: Path) -> None:
    from PIL import Image

    root = data_dir / set_name
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    if not lr_dir.is_dir():
        pytest.skip(f"data set not found at {lr_dir} (set FASTSR_DATA)")
    files = sorted(lr_dir.glob(f"*x{scale}.png"))
    assert len(files) == _EXPECTED_COUNT[set_name]
    mismatched = []
    for lr_path in files:
        name = lr_path.name[: -len(f"x{scale}.png")]
        hr = np.asarray(Image.open(root / "HR" / f"{name}.png"))
        lr = np.asarray(Image.open(lr_path))
        out = imresize(modcrop(hr, scale), 1 / scale)
        if out.shape != lr.shape or not np.array_equal(out, lr):
            mismatched.append(name)
    assert not mismatched, f"{len(mismatched)}/{len(files)} differ: {mismatched[:10]}"
