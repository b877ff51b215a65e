"""The fused residual-block kernel (kernels/resblock.py) against two F.conv2d calls, under the Triton
interpreter (CPU): odd sizes that end mid-window, batch > 1, several windows per side, strided views."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 (CPU machines)")


@pytest.fixture(scope="module")
def kernels():
    from fastsr.kernels import conv, resblock

    return conv, resblock


def block_reference(x, w1, b1, w2, b2):
    """NCHW: x + conv2(relu(conv1(x)))."""
    t = F.conv2d(x, w1, b1, padding=1).relu()
    return x + F.conv2d(t, w2, b2, padding=1)


# (dtype, atol, rtol): fp32 uses IEEE products, so only the summation order differs; fp16 rounds the input,
# the weights and the intermediate map to 11-bit mantissas (values up to ~10 here).
PRECISIONS = [(torch.float32, 1e-4, 1e-5), (torch.float16, 3e-2, 1e-2)]


@pytest.mark.parametrize("dtype,atol,rtol", PRECISIONS)
@pytest.mark.parametrize("n,h,w,f", [(1, 6, 6, 16), (2, 13, 11, 16), (1, 1, 17, 32), (1, 19, 5, 16)])
def test_fused_block_matches_two_convs(kernels, n, h, w, f, dtype, atol, rtol):
    conv, resblock = kernels
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, f, h, w, generator=g)
    w1, w2 = (torch.randn(f, f, 3, 3, generator=g) * 0.1 for _ in range(2))
    b1, b2 = (torch.randn(f, generator=g) * 0.1 for _ in range(2))

    def q(t):
        return t.to(dtype).float()

    ref = block_reference(q(x), q(w1), b1, q(w2), b2)
    x_nhwc = x.to(dtype).permute(0, 2, 3, 1).contiguous()
    out = torch.full_like(x_nhwc, float("nan"))
    resblock.resblock_nhwc(x_nhwc, conv.pack_weight(w1, dtype), b1, conv.pack_weight(w2, dtype), b2, out)
    torch.testing.assert_close(out.permute(0, 3, 1, 2).float(), ref, atol=atol, rtol=rtol)


def test_strided_views_and_the_engines_buffers(kernels):
    """x and out as NHWC views of NCHW (channels-last) memory and of a wider buffer: strides are honoured."""
    conv, resblock = kernels
    f, g = 16, torch.Generator().manual_seed(7)
    x = torch.randn(1, f, 9, 10, generator=g)
    w1, w2 = (torch.randn(f, f, 3, 3, generator=g) * 0.1 for _ in range(2))
    b1, b2 = (torch.randn(f, generator=g) * 0.1 for _ in range(2))
    wide = torch.zeros(1, 9, 10, 2 * f)
    wide[..., :f] = x.permute(0, 2, 3, 1)
    out = torch.zeros(1, f, 9, 10).permute(0, 2, 3, 1)  # NHWC view of NCHW memory
    resblock.resblock_nhwc(wide[..., :f], conv.pack_weight(w1, torch.float32), b1,
                           conv.pack_weight(w2, torch.float32), b2, out)
    torch.testing.assert_close(out.permute(0, 3, 1, 2), block_reference(x, w1, b1, w2, b2), atol=1e-4, rtol=1e-5)


def test_launcher_checks(kernels):
    conv, resblock = kernels
    x = torch.zeros(1, 4, 4, 16)
    wp, b = conv.pack_weight(torch.zeros(16, 16, 3, 3), torch.float32), torch.zeros(16)
    with pytest.raises(ValueError, match="share memory"):
        resblock.resblock_nhwc(x, wp, b, wp, b, x)
    with pytest.raises(ValueError, match="F = 16, 32, 64 or 128"):
        resblock.resblock_nhwc(torch.zeros(1, 4, 4, 24), wp, b, wp, b, torch.zeros(1, 4, 4, 24))
    with pytest.raises(ValueError, match=r"w2p must be contiguous \[144, 16\]"):
        resblock.resblock_nhwc(x, wp, b, wp[:, :8], b, torch.zeros_like(x))
    with pytest.raises(ValueError, match="b1 must be fp32"):
        resblock.resblock_nhwc(x, wp, b.half(), wp, b, torch.zeros_like(x))
    with pytest.raises(TypeError, match="out must have x's dtype"):
        resblock.resblock_nhwc(x, wp, b, wp, b, torch.zeros(1, 4, 4, 16, dtype=torch.float16))
