"""fastsr.upscale / fastsr.Upscaler: input kinds round trip, the quantization contract, gray / alpha / 16-bit,
self-ensemble, model and device arguments, and bad inputs (with a hypothesis fuzz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import fastsr
import fastsr.weights
from fastsr.ensemble import self_ensemble, transform, undo
from fastsr.models import MDSR, EDSRConfig, MDSRConfig, build
from fastsr.system import cpu_bf16_isa
from fastsr.upscaler import Upscaler
from fastsr.weights import DefaultWeightsMissing

# Tiny tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _edsr(scale: int = 2, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(EDSRConfig(n_resblocks=1, n_feats=16, scale=scale, **kw)).eval()


@pytest.fixture(scope="module")
def model():
    return _edsr()


@pytest.fixture(scope="module")
def up(model):
    # The quantization contract is checked exactly against the unoptimized module; the engine-backed default
    # is checked against it in test_engine_backend_agrees_with_reference.
    return Upscaler(model, backend="reference")


@pytest.fixture(scope="module")
def mdsr():
    torch.manual_seed(1)
    return build(MDSRConfig(n_resblocks=1, n_feats=8, scales=(2, 3))).eval()


@pytest.fixture
def checkpoint(tmp_path, model):
    return fastsr.save(model, tmp_path / "tiny.safetensors")


def reference(model, x255: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """The network on an NCHW 0..255 float batch, unclamped (the contract's starting point)."""
    with torch.no_grad():
        return model(x255, scale) if isinstance(model, MDSR) else model(x255)


def hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


RNG = np.random.default_rng(0)
U8 = RNG.integers(0, 256, (9, 13, 4), dtype=np.uint8)
U16 = RNG.integers(0, 65536, (9, 13, 4), dtype=np.uint16)
F32 = RNG.random((9, 13, 4)).astype(np.float32)


# ------------------------------------------------------------------------------------------- round trips

PIL_CASES = [
    ("RGB", lambda: Image.fromarray(U8[..., :3]), "RGB"),
    ("RGBA", lambda: Image.fromarray(U8), "RGBA"),
    ("L", lambda: Image.fromarray(U8[..., 0]), "L"),
    ("LA", lambda: Image.fromarray(U8[..., :2]), "LA"),
    ("P", lambda: Image.fromarray(U8[..., :3]).convert("P"), "RGB"),
    ("P+transparency", lambda: _palette_with_transparency(), "RGBA"),
    ("I;16", lambda: Image.fromarray(U16[..., 0]), "I;16"),
    ("I;16B", lambda: Image.fromarray(U16[..., 0]).convert("I;16B"), "I;16"),
]


def _palette_with_transparency() -> Image.Image:
    im = Image.fromarray(U8[..., :3]).convert("P")
    im.info["transparency"] = 0
    return im


@pytest.mark.parametrize(("name", "make", "mode"), PIL_CASES, ids=[c[0] for c in PIL_CASES])
@pytest.mark.parametrize("tile", [None, 4])
def test_pil_round_trip(up, name, make, mode, tile):
    src = make()
    out = up(src, 2, tile=tile)
    assert isinstance(out, Image.Image)
    assert out.mode == mode
    assert out.size == (2 * src.width, 2 * src.height)


NUMPY_CASES = [
    U8[..., 0], U8[..., :3], U8, U16[..., 0], U16[..., :3], U16, F32[..., 0], F32[..., :3], F32,
    F32.astype(np.float64), F32[..., :3].astype(np.float16), U16.astype(">u2"), U8[:, ::-1],  # strided view
]


@pytest.mark.parametrize("img", NUMPY_CASES, ids=lambda a: f"{a.dtype.str}-{a.shape}")
@pytest.mark.parametrize("tile", [None, 5])
def test_numpy_round_trip(up, img, tile):
    out = up(img, 2, tile=tile)
    assert isinstance(out, np.ndarray)
    assert out.shape == (2 * img.shape[0], 2 * img.shape[1], *img.shape[2:])
    assert out.dtype == img.dtype.newbyteorder("=")
    if out.dtype.kind == "f":
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("shape", [(3, 9, 13), (1, 9, 13), (4, 9, 13), (2, 3, 9, 13), (3, 1, 9, 13), (2, 4, 9, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_tensor_round_trip(up, shape, dtype):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = up(x, 2, tile=6)
    assert out.dtype == dtype and out.device == x.device
    assert out.shape == (*shape[:-2], 2 * shape[-2], 2 * shape[-1])
    assert not out.requires_grad and not torch.is_inference(out)
    out.add_(0)  # an ordinary tensor the caller can modify
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_module_level_function_and_mdsr_scales(mdsr):
    out = fastsr.upscale(U8[..., :3], 3, model=mdsr)
    assert out.shape == (27, 39, 3)
    assert fastsr.Upscaler(mdsr)(U8[..., :3], 2).shape == (18, 26, 3)


# ---------------------------------------------------------------------------------- quantization contract


def test_uint8_is_the_network_clamped_and_rounded_half_to_even(model, up):
    img = U8[..., :3]
    y = reference(model, torch.from_numpy(img).permute(2, 0, 1)[None].float())
    expected = hwc(y.clamp(0, 255).round().to(torch.uint8))
    assert np.array_equal(up(img, 2), expected)
    assert torch.round(torch.tensor([0.5, 1.5, 2.5])).tolist() == [0.0, 2.0, 2.0]  # the rounding meant


def test_uint16_feeds_value_over_257_and_scales_back(model, up):
    img = U16[..., :3]
    y = reference(model, torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] / 257)
    expected = hwc((y.clamp(0, 255) * 257).round().to(torch.int32)).astype(np.uint16)
    assert np.array_equal(up(img, 2), expected)
    pil = up(Image.fromarray(U16[..., 0]), 2)
    assert pil.mode == "I;16"
    assert np.asarray(pil).dtype == np.uint16 and np.asarray(pil).max() > 255  # really 16 bits out


def test_the_default_is_the_engine_in_the_cpu_default_precision(model):
    from fastsr.system import default_cpu_precision

    engine_up = Upscaler(model, device="cpu")
    assert engine_up.backend is None and engine_up.precision == default_cpu_precision()[0]


needs_bf16 = pytest.mark.skipif(cpu_bf16_isa() is None, reason="this CPU has no native bf16 (AVX512-BF16 / AMX-BF16)")


# (precision, largest difference in output levels, share of values that differ, float tolerance):
# fp32: the engine sums in another order (~1e-4 on 0-255), which can move a value lying next to a rounding
#       tie by one level of the output dtype; floats agree to ~1e-6.
# bf16: the body's features and weights carry 8-bit mantissas (relative 2^-9), about 0.1-0.3 of an 8-bit
#       level at the output: a few percent of values move by one level.
@pytest.mark.parametrize("precision,levels,share,float_tol", [
    ("fp32", 1, 0.01, 1e-5),
    pytest.param("bf16", 2, 0.10, 4 / 255, marks=needs_bf16),
])
@pytest.mark.parametrize("img", [U8[..., :3], U16[..., :3], F32[..., :3]], ids=["uint8", "uint16", "float"])
def test_engine_backend_agrees_with_reference(model, up, img, precision, levels, share, float_tol):
    engine_up = Upscaler(model, precision=precision, device="cpu")  # fastsr.optimize's torch backend
    got, want = engine_up(img, 2).astype(np.float64), up(img, 2).astype(np.float64)
    if img.dtype == np.float32:
        assert np.abs(got - want).max() <= float_tol
    elif img.dtype == np.uint8 or precision == "fp32":
        assert np.abs(got - want).max() <= levels
        assert (got != want).mean() < share
    else:  # bf16 to 16 bits: the same error, in levels 257 times finer
        assert np.abs(got - want).max() <= levels * 257


def test_float_is_not_quantized(model, up):
    img = F32[..., :3]
    y = reference(model, torch.from_numpy(img).permute(2, 0, 1)[None] * 255)
    expected = hwc((y / 255).clamp(0, 1))
    out = up(img, 2)
    assert np.abs(out - expected).max() <= 1e-6
    assert len(np.unique(out)) > len(np.unique(np.round(out * 255)))  # values between the 8-bit levels


def test_gray_goes_through_rgb_and_back_as_the_channel_mean(model, up):
    gray = U8[..., 0]
    y = reference(model, torch.from_numpy(np.repeat(gray[..., None], 3, 2)).permute(2, 0, 1)[None].float())
    expected = y.clamp(0, 255).mean(dim=1)[0].round().to(torch.uint8).numpy()
    assert np.array_equal(up(gray, 2), expected)
    assert np.array_equal(np.asarray(up(Image.fromarray(gray), 2)), expected)
    chw = torch.from_numpy(gray).float()[None] / 255
    assert torch.allclose(up(chw, 2)[0], torch.from_numpy(expected).float() / 255, atol=0.5 / 255 + 1e-6)


def test_alpha_is_bicubic_and_colour_is_the_rgb_result(up):
    rgba = U8
    out = up(rgba, 2)
    assert np.array_equal(out[..., :3], up(rgba[..., :3], 2))
    a = torch.from_numpy(rgba[..., 3]).float()[None, None]
    expected = F.interpolate(a, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 255).round()
    assert np.array_equal(out[..., 3], expected[0, 0].to(torch.uint8).numpy())
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert (up(opaque, 2)[..., 3] == 255).all()
    la = np.asarray(up(Image.fromarray(U8[..., :2]), 2))
    a = torch.from_numpy(U8[..., 1]).float()[None, None]
    expected = F.interpolate(a, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 255).round()
    assert np.array_equal(la[..., 1], expected[0, 0].to(torch.uint8).numpy())
    assert np.array_equal(la[..., 0], up(U8[..., 0], 2))


def test_batch_equals_images_one_by_one(up):
    x = torch.rand(3, 3, 9, 13, generator=torch.Generator().manual_seed(5))
    out = up(x, 2, tile=5)
    for i in range(3):
        assert (out[i] - up(x[i], 2)).abs().max() <= 1e-5


def test_rgb_range_other_than_255():
    net = _edsr(rgb_range=1.0)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = net(x).clamp(0, 1)
    assert (Upscaler(net, precision="fp32")(x, 2) - expected).abs().max() <= 1e-5


# -------------------------------------------------------------------------------------------- ensemble


def test_ensemble_is_the_mean_of_the_eight_transformed_runs(model, up):
    x = torch.rand(2, 3, 10, 14, generator=torch.Generator().manual_seed(6))
    runs = []
    with torch.no_grad():
        for k in range(8):
            runs.append(undo(model(transform(x * 255, k).contiguous()), k))
    expected = (torch.stack(runs).mean(0) / 255).clamp(0, 1)
    with torch.no_grad():
        assert torch.allclose(self_ensemble(model, x * 255) / 255, torch.stack(runs).mean(0) / 255, atol=1e-5)
    for tile in (None, 4):  # untiled, and exact tiling: both equal the untiled ensemble
        assert (up(x, 2, ensemble=True, tile=tile) - expected).abs().max() <= 1e-4
    square = torch.rand(1, 3, 12, 12)  # all 8 transforms share one shape: one batched pass
    with torch.no_grad():
        ref = (self_ensemble(model, square * 255) / 255).clamp(0, 1)
    assert (up(square, 2, ensemble=True) - ref).abs().max() <= 1e-4
    assert not torch.equal(up(square, 2, ensemble=True), up(square, 2))


def test_ensemble_batches_within_the_memory_budget(model):
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    calls = []
    small = Upscaler(model, memory_budget=1)  # one image per pass
    large = Upscaler(model)
    for u in (small, large):
        run = u._run
        u._run = lambda t, s, run=run: (calls.append(t.shape[0]), run(t, s))[1]
    a = small(x, 2, ensemble=True)
    assert set(calls) == {1} and len(calls) == 16
    calls.clear()
    b = large(x, 2, ensemble=True)
    assert calls == [16]
    assert (a - b).abs().max() <= 1e-5


# -------------------------------------------------------------------------------------- model argument


def test_model_from_path_state_dict_and_module(model, checkpoint):
    img = U8[..., :3]
    expected = Upscaler(model)(img, 2)
    assert np.array_equal(fastsr.upscale(img, 2, model=checkpoint), expected)
    assert np.array_equal(fastsr.upscale(img, 2, model=str(checkpoint)), expected)
    assert np.array_equal(fastsr.upscale(img, 2, model=model.state_dict()), expected)


def test_default_model_uses_the_bundled_weights(monkeypatch, checkpoint, model):
    monkeypatch.setattr(fastsr.weights, "default_weights_path", lambda: checkpoint)
    assert np.array_equal(fastsr.upscale(U8[..., :3], 2), Upscaler(model)(U8[..., :3], 2))
    assert Upscaler().scales == (2,)


def test_missing_default_weights_is_a_clear_error(monkeypatch):
    def missing():
        raise DefaultWeightsMissing("fastsr has no bundled default weights in this installation")

    monkeypatch.setattr(fastsr.weights, "default_weights_path", missing)
    with pytest.raises(DefaultWeightsMissing, match="no bundled default weights"):
        fastsr.upscale(U8[..., :3], 4)


def test_bad_models():
    with pytest.raises(ValueError, match="preset name, which has no weights"):
        fastsr.upscale(U8[..., :3], 2, model="edsr-baseline-x2")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        fastsr.upscale(U8[..., :3], 2, model="nope.pt")
    with pytest.raises(TypeError, match="fastsr EDSR / MDSR"):
        Upscaler(torch.nn.Conv2d(3, 3, 3))
    with pytest.raises(TypeError):
        Upscaler(42)


def test_users_module_is_never_modified():
    net = _edsr(batch_norm=True).train()  # training mode: batch statistics, running-stat updates
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = Upscaler(net)(U8[..., :3], 2)
    assert out.shape == (18, 26, 3)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    frozen = _edsr()
    assert Upscaler(frozen).model is frozen


def test_device_precision_and_backend_arguments(model):
    assert Upscaler(model, device="cpu", precision="fp32", backend="torch").precision == "fp32"
    assert Upscaler(model, backend="reference").backend == "reference"
    with pytest.raises(ValueError, match="precision 'fp16' is not supported on the CPU"):
        Upscaler(model, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        Upscaler(model, precision="fp8")
    with pytest.raises(ValueError, match="unknown backend"):
        Upscaler(model, backend="tensorrt")
    with pytest.raises(ValueError, match="invalid device"):
        Upscaler(model, device="gpu0")
    with pytest.raises(ValueError, match="unsupported device"):
        Upscaler(model, device="meta")
    with pytest.raises(ValueError, match="memory_budget"):
        Upscaler(model, memory_budget=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Upscaler(model, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_copy_and_tensor_device(model):
    u = Upscaler(model, device="cuda")
    assert u.precision == "fp16"
    assert next(model.parameters()).device.type == "cpu"  # the caller's module stays where it was
    x = torch.rand(1, 3, 20, 20, device="cuda")
    out = fastsr.upscale(x, 2, model=model)
    assert out.device == x.device
    ref = Upscaler(model, device="cpu")(x.cpu(), 2)
    assert (out.cpu() - ref).abs().max() < 2e-2


# ------------------------------------------------------------------------------------------ bad inputs

BAD_INPUTS = [
    (np.zeros((0, 5, 3), np.uint8), ValueError, "empty"),
    (np.zeros((5, 0), np.uint8), ValueError, "empty"),
    (np.full((4, 4, 3), np.nan, np.float32), ValueError, "NaN or infinite"),
    (np.full((4, 4), np.inf), ValueError, "NaN or infinite"),
    (np.full((4, 4, 3), 1.5, np.float32), ValueError, r"must be in \[0, 1\]"),
    (np.full((4, 4, 3), -0.1, np.float32), ValueError, r"must be in \[0, 1\]"),
    (np.zeros((4, 4, 3), np.int32), TypeError, "uint8, uint16 or float"),
    (np.zeros((4, 4, 3), bool), TypeError, "uint8, uint16 or float"),
    (np.zeros((4, 4, 3), np.complex64), TypeError, "uint8, uint16 or float"),
    (np.zeros((4, 4, 2), np.uint8), ValueError, "HxW, HxWx3 or HxWx4"),
    (np.zeros((4, 4, 3, 1), np.uint8), ValueError, "HxW, HxWx3 or HxWx4"),
    (np.zeros(4, np.uint8), ValueError, "HxW, HxWx3 or HxWx4"),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), TypeError, "float in"),
    (torch.zeros(2, 4, 4), ValueError, "C = 1, 3 or 4"),
    (torch.zeros(4, 4), ValueError, "CxHxW or NxCxHxW"),
    (torch.zeros(0, 3, 4, 4), ValueError, "empty batch"),
    (torch.zeros(1, 3, 0, 4), ValueError, "empty"),
    (torch.full((3, 4, 4), float("nan")), ValueError, "NaN"),
    (torch.zeros(3, 4, 4).to_sparse(), TypeError, "dense"),
    (Image.new("CMYK", (4, 4)), ValueError, "unsupported PIL mode"),
    (Image.new("F", (4, 4)), ValueError, "unsupported PIL mode"),
    (Image.new("RGB", (0, 4)), ValueError, "empty"),
    ([[0, 1], [2, 3]], TypeError, "PIL image, a numpy array or a torch tensor"),
    ("photo.png", TypeError, "PIL image, a numpy array or a torch tensor"),
]


@pytest.mark.parametrize(("img", "error", "match"), BAD_INPUTS, ids=lambda v: None)
def test_bad_inputs_raise_clear_errors(up, img, error, match):
    with pytest.raises(error, match=match):
        up(img, 2)


def test_bad_arguments(up):
    img = U8[..., :3]
    with pytest.raises(ValueError, match="the model has no x3; it upscales by x2"):
        up(img, 3)
    with pytest.raises(TypeError, match="scale must be an int"):
        up(img, 2.0)
    with pytest.raises(TypeError, match="scale must be an int"):
        up(img, True)
    with pytest.raises(ValueError, match="tile must be >= 1"):
        up(img, 2, tile=0)
    with pytest.raises(ValueError, match="halo must be >= 0"):
        up(img, 2, halo=-1)
    with pytest.raises(TypeError, match="tile must be an int"):
        up(img, 2, tile=3.5)
    with pytest.raises(TypeError, match="ensemble must be a bool"):
        up(img, 2, ensemble="yes")


def test_pixel_limit(up):
    img = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="600 pixels, over the limit of 599"):
        up(img, 2, max_pixels=599)
    assert up(img, 2, max_pixels=600).shape == (40, 60, 3)
    assert up(img, 2, max_pixels=None).shape == (40, 60, 3)
    with pytest.raises(ValueError, match="over the limit"):
        up(Image.new("RGB", (30, 20)), 2, max_pixels=100)
    with pytest.raises(ValueError, match="over the limit"):
        up(torch.zeros(3, 20, 30), 2, max_pixels=100)


# ------------------------------------------------------------------------------------------------- fuzz

_DTYPES = st.sampled_from([np.uint8, np.uint16, np.float16, np.float32, np.float64, np.uint8, np.float32,
                           np.int16, np.int32, np.bool_])


@st.composite
def _arrays(draw):
    """Mostly image-like shapes (HxW[xC], CxHxW, NxCxHxW, small sides, sometimes 0), any dtype, and float
    values that are in [0, 1] or, sometimes, not (out of range, NaN, inf)."""
    dtype = np.dtype(draw(_DTYPES))
    side = st.sampled_from(range(7))  # 0 one time in 7
    h, w, c = draw(side), draw(side), draw(st.sampled_from([1, 2, 3, 3, 4, 4, 5]))
    shape = draw(st.sampled_from([(h, w), (h, w, c), (c, h, w), (draw(st.integers(0, 2)), c, h, w),
                                  draw(hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=4))]))
    elements = None
    if dtype.kind == "f":
        width = dtype.itemsize * 8
        elements = st.floats(0, 1, width=width)
        if draw(st.booleans()):
            elements = elements | st.sampled_from([-0.5, 1.5, np.nan, np.inf, -np.inf])
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _is_valid(img) -> bool:
    """The documented input contract, stated independently of the implementation."""
    values_ok = img.size != 0 if isinstance(img, np.ndarray) else img.numel() != 0
    if isinstance(img, torch.Tensor):
        if not img.is_floating_point() or img.dim() not in (3, 4) or img.shape[-3] not in (1, 3, 4):
            return False
        a = img.double().numpy()
    else:
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
            return False
        if not (img.dtype in (np.uint8, np.uint16) or img.dtype.kind == "f"):
            return False
        a = img.astype(np.float64)
    if isinstance(img, torch.Tensor) or img.dtype.kind == "f":  # floats must be finite and in [0, 1]
        values_ok = values_ok and bool(np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all())
    return values_ok and min(img.shape[-2:] if isinstance(img, torch.Tensor) else img.shape[:2]) >= 1


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_arrays(), as_tensor=st.booleans(), tile=st.sampled_from([None, 1, 3]))
def test_fuzz_valid_output_or_documented_error(up, a, as_tensor, tile):
    img = torch.from_numpy(a) if as_tensor and a.dtype != np.uint16 else a
    valid = _is_valid(img)
    try:
        out = up(img, 2, tile=tile)
    except (ValueError, TypeError) as e:
        assert not valid, f"valid input {getattr(img, 'dtype', None)} {tuple(img.shape)} refused: {e}"
        return
    assert valid, f"invalid input {img.dtype} {tuple(img.shape)} was accepted"
    if isinstance(img, torch.Tensor):
        assert img.is_floating_point() and img.dim() in (3, 4)
        assert out.shape == (*img.shape[:-2], 2 * img.shape[-2], 2 * img.shape[-1]) and out.dtype == img.dtype
        assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0 and float(out.max()) <= 1
    else:
        assert out.shape == (2 * a.shape[0], 2 * a.shape[1], *a.shape[2:]) and out.dtype == a.dtype
        if a.dtype.kind == "f":
            assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_upscale_batch_equals_one_image_at_a_time():
    # Upscaler.upscale_batch (what the video path sends): each image's own result, for 8 and 16 bits.
    torch.manual_seed(0)
    up = Upscaler(build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)), device="cpu", precision="fp32")
    rng = np.random.default_rng(1)
    for dtype, top in ((np.uint8, 256), (np.uint16, 65536)):
        batch = rng.integers(0, top, (3, 11, 7, 3)).astype(dtype)
        out = up.upscale_batch(batch, 2, tile=4)
        assert out.shape == (3, 22, 14, 3) and out.dtype == dtype
        for i in range(3):
            assert np.array_equal(out[i], up(batch[i], 2))
    with pytest.raises(ValueError, match="a batch must be a non-empty NxHxWx3 or NxHxWx4 array"):
        up.upscale_batch(np.zeros((0, 4, 4, 3), np.uint8), 2)
    with pytest.raises(ValueError, match="a batch must be"):
        up.upscale_batch(np.zeros((4, 4, 3), np.uint8), 2)
    with pytest.raises(ValueError, match="a batch of 2 images"):
        up.upscale_batch(np.zeros((2, 10, 10, 3), np.uint8), 2, max_pixels=150)
    with pytest.raises(ValueError, match="HxW, HxWx3 or HxWx4"):
        up(np.zeros((2, 4, 4, 3), np.uint8), 2)  # a plain call takes one image
