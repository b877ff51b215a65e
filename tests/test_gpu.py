"""GPU checks of the Triton backend at realistic sizes (skipped without CUDA).

All GPU checks run with one command: ``python -m pytest -m gpu tests benchmarks``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastsr.engine import optimize
from fastsr.models import EDSRConfig, build, create

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def call(model, x, scale):
    with torch.no_grad():
        return model(x, scale) if scale is not None else model(x)


# (precision, atol, rtol) on a 0-255 output, against the fp32 reference (cuDNN, TF32 off):
# fp32 uses IEEE products in the kernel (summation order only); fp16 / bf16 round activations and weights
# to 11 / 8-bit mantissas through 33+ layers: a few levels at most.
PRECISIONS = [("fp32", 5e-3, 0), ("fp16", 1.5, 0.01), ("bf16", 6.0, 0.03)]
MODELS = [("edsr-baseline-x2", None), ("edsr-baseline-x4", None), ("edsr-bn-baseline-x3", None),
          ("mdsr-baseline", 2), ("mdsr-baseline", 3), ("mdsr-baseline", 4)]


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("precision,atol,rtol", PRECISIONS)
@pytest.mark.parametrize("name,scale", MODELS)
def test_triton_matches_reference(name, scale, precision, atol, rtol):
    torch.manual_seed(0)
    model = create(name).eval().cuda()
    engine = optimize(model, backend="triton", precision=precision)
    x = torch.rand(2, 3, 135, 241, device="cuda") * 255  # odd sizes, batch 2
    ref = call(model, x, scale)
    out = call(engine, x, scale)
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    q = engine.run_uint8(x, scale)
    assert (q.float() - ref.clamp(0, 255).round()).abs().max() <= (1 if precision == "fp32" else atol + 1)


@pytest.mark.parametrize("precision,atol,rtol", PRECISIONS[:2])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_triton_conv_shuffle_tail(scale, precision, atol, rtol):
    """OpenCV's EDSR layout: the image stored pixel-shuffled by s (x4 in one step) from the LR conv."""
    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=4, n_feats=64, scale=scale, res_scale=0.1, tail="conv-shuffle")).eval().cuda()
    engine = optimize(model, backend="triton", precision=precision)
    x = torch.rand(2, 3, 135, 241, device="cuda") * 255
    ref = call(model, x, None)
    torch.testing.assert_close(call(engine, x, None), ref, atol=atol, rtol=rtol)
    q = engine.run_uint8(x)
    assert (q.float() - ref.clamp(0, 255).round()).abs().max() <= (1 if precision == "fp32" else atol + 1)


def test_full_hd_x4_fp16_banded():
    model = create("edsr-baseline-x4").eval().cuda()
    engine = optimize(model)
    assert engine.backend == "triton" and engine.dtype == torch.float16
    x = torch.rand(1, 3, 270, 480, device="cuda") * 255
    torch.testing.assert_close(call(engine, x, None), call(model, x, None), atol=1.5, rtol=0.01)


def test_int64_offsets_past_2_31_elements():
    """An x2 upsampler output of 5 x 1080p x 64 channels has 2.65e9 elements: offsets must be 64-bit."""
    from fastsr.kernels.conv import conv2d_nhwc, pack_weight

    torch.manual_seed(0)
    n, h, w, c = 5, 1080, 1920, 64
    x = torch.randn(n, h, w, c, device="cuda", dtype=torch.float16)
    weight = torch.randn(4 * c, c, 3, 3, device="cuda") * 0.05
    bias = torch.randn(4 * c, device="cuda")
    out = torch.empty(n, 2 * h, 2 * w, c, device="cuda", dtype=torch.float16)
    assert out.numel() > 2**31
    conv2d_nhwc(x, pack_weight(weight, torch.float16), bias, out, ksize=3, shuffle=2)
    # The last image's bottom-right 8x8 LR pixels, against cuDNN on a crop: one real neighbour row / column
    # above and left, the zero padding of the image edge below and right.
    crop = F.pad(x[-1:, -9:, -9:].permute(0, 3, 1, 2).float(), (0, 1, 0, 1))
    ref = F.pixel_shuffle(F.conv2d(crop, weight.half().float(), bias), 2)  # [1, 64, 16, 16]
    got = out[-1:, -16:, -16:].permute(0, 3, 1, 2).float()
    torch.testing.assert_close(got, ref, atol=0.1, rtol=0.01)


def test_wide_edsr_fp16():
    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=4, n_feats=256, res_scale=0.1, scale=2)).eval().cuda()
    x = torch.rand(1, 3, 96, 128, device="cuda") * 255
    torch.testing.assert_close(call(optimize(model), x, None), call(model, x, None), atol=1.5, rtol=0.01)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_cuda_graphs_replay_equals_the_uncaptured_path(backend):
    torch.manual_seed(0)
    model = create("edsr-baseline-x4").cuda().eval()
    plain = optimize(model, backend=backend, precision="fp16")
    graphed = optimize(model, backend=backend, precision="fp16", cuda_graphs=True)
    runner = graphed.runners[4]
    xs = [torch.rand(1, 3, 40, 56, device="cuda") * 255 for _ in range(3)]
    for x in xs:  # first call captures, the others replay with new data in the static input
        assert torch.equal(call(graphed, x, None), call(plain, x, None))
        assert torch.equal(graphed.run_uint8(x), plain.run_uint8(x))
    assert runner.captures == 2 and runner.replays == 4  # one graph per output mode
    for k in range(5):  # more shapes than the LRU keeps: the oldest graphs go
        x = torch.rand(1, 3, 24 + k, 24, device="cuda") * 255
        assert torch.equal(call(graphed, x, None), call(plain, x, None))
    assert len(runner._graphs) == runner.max_shapes


@pytest.mark.parametrize("name,scale", [("edsr-baseline-x4", None), ("mdsr-baseline", 3), ("edsr-x2", None)])
def test_auto_backend_matches_reference_and_caches(name, scale, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTSR_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = create(name).eval().cuda()
    engine = optimize(model, precision="fp16")  # the CUDA default: auto
    assert engine.backend == "auto"
    x = torch.rand(1, 3, 67, 93, device="cuda") * 255
    ref = call(model, x, scale)
    torch.testing.assert_close(call(engine, x, scale), ref, atol=1.5, rtol=0.01)
    report = engine.autotune_report()
    assert report["tuned_ops"] >= 1 and (tmp_path / "autotune.json").is_file()
    # A new engine reads the choices from disk: nothing is timed again.
    again = optimize(model, precision="fp16")
    torch.testing.assert_close(call(again, x, scale), ref, atol=1.5, rtol=0.01)
    assert again.autotune_report()["tuned_ops"] == 0
