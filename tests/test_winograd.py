"""Winograd F(4, 3) for the CPU fp32 path: the conv itself against F.conv2d at every shape the models use,
its fused epilogues, the engine with Winograd forced on against the reference, and the per-shape choice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastsr.engine import optimize
from fastsr.engine.winograd import WinogradChoice, conv3x3, transform_weight
from fastsr.models import EDSRConfig, MDSRConfig, build, create
from fastsr.system import cpu_bf16_isa

CL = torch.channels_last


def direct(x, w, b):
    return F.conv2d(x.double(), w.double(), b.double(), padding=1)


# (channels in, out): every 3x3 conv shape of the presets: 64 -> 64 (baseline blocks), 256 -> 256 (EDSR),
# 64 -> 256 and 256 -> 1024 (x2 / x4 upsamplers), 64 -> 576 (x3 upsampler), 64 -> 3 and 256 -> 3 (final).
SHAPES = [(64, 64), (256, 256), (64, 256), (256, 1024), (64, 576), (64, 3), (256, 3)]


# (fp32, rtol 3e-5 of the output's scale): F(4, 3)'s transforms (entries up to 8, and 1/24) add rounding of
# about 1e-6-1e-5 relative to the direct conv's; sizes that are not multiples of the 4x4 tile, batch 2.
@pytest.mark.parametrize("cin,cout", SHAPES)
def test_winograd_conv_matches_direct(cin, cout):
    g = torch.Generator().manual_seed(cin + cout)
    x = torch.randn(2, cin, 9, 7, generator=g).contiguous(memory_format=CL)
    w = torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin**0.5)
    b = torch.randn(cout, generator=g)
    ref = direct(x, w, b)
    got = conv3x3(x, transform_weight(w), b)
    assert got.shape == ref.shape and got.is_contiguous(memory_format=CL)
    assert float((got.double() - ref).abs().max()) <= 3e-5 * float(ref.abs().max())


def test_winograd_epilogues():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 13, 6, generator=g).contiguous(memory_format=CL)
    w, b = torch.randn(16, 16, 3, 3, generator=g) * 0.1, torch.randn(16, generator=g)
    u = transform_weight(w)
    ref = direct(x, w, b).float()
    tol = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv3x3(x, u, b, relu=True), ref.relu(), **tol)
    res = torch.randn(1, 16, 13, 6, generator=g).contiguous(memory_format=CL)
    torch.testing.assert_close(conv3x3(x, u, b, residual=res), ref + res, **tol)
    acc = res.clone()
    out = conv3x3(x, u, b, residual=acc, out=acc)  # accumulate in place
    assert out is acc
    torch.testing.assert_close(acc, ref + res, **tol)


def test_transform_weight_rejects_other_kernels():
    with pytest.raises(ValueError, match="needs 3x3 weights"):
        transform_weight(torch.zeros(4, 4, 5, 5))


@pytest.fixture
def always_winograd(monkeypatch):
    monkeypatch.setattr(WinogradChoice, "choose", lambda self, shape, direct, winograd: True)


def call(model, x, scale):
    with torch.no_grad():
        return model(x, scale) if scale is not None else model(x)


# (fp32, atol 5e-3 on a 0-255 output): Winograd's ~1e-5 relative rounding through every 3x3 conv (the
# direct engine's own tolerance is 2e-3).
@pytest.mark.parametrize("name,scale", [("edsr-baseline-x2", None), ("edsr-baseline-x3", None),
                                        ("edsr-baseline-x4", None), ("mdsr-baseline", 3), ("edsr-bn-baseline-x2", None)])
def test_engine_with_winograd_everywhere_matches_reference(name, scale, always_winograd, make_image, randomize_bn):
    torch.manual_seed(0)
    model = randomize_bn(create(name))
    engine = optimize(model, precision="fp32", winograd=True)
    x = make_image(2, 11, 14)
    torch.testing.assert_close(call(engine, x, scale), call(model, x, scale), atol=5e-3, rtol=0)


def test_wide_edsr_with_winograd(always_winograd, make_image):
    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=2, n_feats=256, res_scale=0.1, scale=4)).eval()
    x = make_image(1, 9, 10)
    torch.testing.assert_close(call(optimize(model, precision="fp32", winograd=True), x, None), call(model, x, None),
                               atol=5e-3, rtol=0)


def test_choice_is_made_once_per_shape():
    calls = []
    choice = WinogradChoice()
    slow, fast = (lambda: calls.append("direct")), (lambda: calls.append("winograd"))
    first = choice.choose((1, 64, 8, 8), slow, fast)
    assert calls == ["direct", "direct", "winograd", "winograd"]  # a warm-up and a timed run each
    assert choice.choose((1, 64, 8, 8), slow, fast) is first and len(calls) == 4  # kept, not re-timed
    choice.choose((1, 64, 9, 8), slow, fast)
    assert len(calls) == 8


def test_winograd_errors():
    model = build(MDSRConfig(n_resblocks=1, n_feats=8)).eval()
    with pytest.raises(TypeError, match="winograd must be True or False"):
        optimize(model, winograd="yes")
    with pytest.raises(ValueError, match="winograd=True needs the torch backend on the CPU in fp32"):
        optimize(model, backend="interpret", winograd=True)
    if cpu_bf16_isa() is not None:
        with pytest.raises(ValueError, match="winograd=True needs the torch backend on the CPU in fp32"):
            optimize(model, precision="bf16", winograd=True)


def test_winograd_picks_fp32():
    engine = optimize(build(EDSRConfig(n_resblocks=1, n_feats=8)).eval(), winograd=True)
    assert engine.dtype == torch.float32 and engine.winograd
