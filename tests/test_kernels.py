"""The fused NHWC conv kernel against F.conv2d, path by path, under the Triton interpreter (CPU)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 (CPU machines)")


@pytest.fixture(scope="module")
def kernels():
    from fastsr.kernels import conv

    return conv


def reference(x, w, b, *, shift=None, relu=False, residual=None, shuffle=1, final=False, quantize=False,
              out_scale=1.0, row0=0, rows=None):
    if shift is not None:
        x = x + shift.view(1, -1, 1, 1)
    y = F.conv2d(x, w, b, padding=w.shape[-1] // 2)
    if relu:
        y = y.relu()
    rows = y.shape[2] - row0 if rows is None else rows
    y = y[:, :, row0 : row0 + rows]
    if residual is not None:
        y = y + residual
    if shuffle > 1:
        y = F.pixel_shuffle(y, shuffle)
    if final:
        y = (y * out_scale).clamp(0, 255)
        if quantize:
            y = y.round()
    return y


# (dtype, atol, rtol): fp32 uses IEEE products (only the summation order differs from oneDNN); fp16 rounds
# inputs, weights and the stored output to 11-bit mantissas (outputs here are O(10)).
DTYPES = [(torch.float32, 1e-4, 1e-5), (torch.float16, 2e-2, 5e-3)]

PATHS = [
    dict(ci=8, co=16, k=3),
    dict(ci=3, co=16, k=3, shift=True),  # the head: mean subtracted in the load, 3 input channels
    dict(ci=16, co=16, k=5, relu=True),  # MDSR pre-processing
    dict(ci=16, co=16, k=3, residual=True),
    dict(ci=16, co=64, k=3, shuffle=2),
    dict(ci=16, co=36, k=3, shuffle=3),
    dict(ci=16, co=3, k=3, final=True),
    # the conv-shuffle tail (OpenCV's EDSR files): the image stored pixel-shuffled, x4 in one step, and x3
    dict(ci=16, co=48, k=3, shuffle=4, final=True),
    dict(ci=16, co=27, k=3, shuffle=3, final=True, row0=1, rows=4),
    dict(ci=40, co=16, k=3, row0=2, rows=3),  # a band of rows; C_in not a multiple of BLOCK_K
    # The flattened K loop (one loop over taps x channel chunks): one chunk per tap, two chunks per tap with
    # a 5x5 kernel, a band with the residual epilogue, and a shuffle store.
    dict(ci=16, co=16, k=3, relu=True, flat=True),
    dict(ci=32, co=16, k=5, relu=True, flat=True),
    dict(ci=16, co=16, k=3, residual=True, row0=1, rows=5, flat=True),
    dict(ci=16, co=64, k=3, shuffle=2, flat=True),
]

# The interpreter's tile config with the flattened K loop; BLOCK_K = 16 divides every flat path's C_in.
FLAT = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=16, num_warps=4, num_stages=1, FLAT_K=1)


@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_conv_paths(kernels, path, dtype, atol, rtol):
    g = torch.Generator().manual_seed(0)
    n, h, w = 2, 7, 5
    ci, co, k = path["ci"], path["co"], path["k"]
    x = torch.randn(n, ci, h, w, generator=g) * 2
    wt = torch.randn(co, ci, k, k, generator=g) * 0.2
    b = torch.randn(co, generator=g)
    shift = torch.randn(ci, generator=g) if path.get("shift") else None
    row0 = path.get("row0", 0)
    rows = path.get("rows", h - row0)
    residual = torch.randn(n, co, rows, w, generator=g) if path.get("residual") else None
    kw = dict(relu=path.get("relu", False), shuffle=path.get("shuffle", 1), final=path.get("final", False),
              out_scale=3.0 if path.get("final") else 1.0, row0=row0, rows=rows)
    # The kernel reads what the compute dtype holds: compare with the reference on the rounded values.
    xr, wr = x.to(dtype).float(), wt.to(dtype).float()
    rr = residual.to(dtype).float() if residual is not None else None
    expected = reference(xr, wr, b, shift=shift, residual=rr, **kw)
    out = torch.empty(expected.permute(0, 2, 3, 1).shape, dtype=dtype)
    kernels.conv2d_nhwc(x.permute(0, 2, 3, 1).to(dtype), kernels.pack_weight(wt, dtype), b, out, ksize=k, shift=shift,
                        residual=None if residual is None else residual.to(dtype).permute(0, 2, 3, 1),
                        config=FLAT if path.get("flat") else None, **kw)
    torch.testing.assert_close(out.permute(0, 3, 1, 2).float(), expected, atol=atol, rtol=rtol)


def test_quantized_store_rounds_half_to_even(kernels):
    # A 1x1 "conv" with weight 1 passes exact values through: .5 ties must go to the even neighbour.
    values = torch.tensor([0.5, 1.5, 2.5, 3.49, 3.51, -4.0, 254.5, 300.0, 7.0, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5, 14.5])
    x = values.view(1, 1, 16, 1).repeat(1, 1, 1, 16).permute(0, 2, 3, 1).contiguous()  # [1, 16, 16, 1]
    w = torch.ones(3, 1, 1, 1)
    out = torch.empty(1, 16, 16, 3, dtype=torch.uint8)
    kernels.conv2d_nhwc(x, kernels.pack_weight(w, torch.float32), torch.zeros(3), out, ksize=1, final=True, quantize=True)
    expected = values.clamp(0, 255).round().to(torch.uint8)
    assert torch.equal(out[0, :, 0, 0], expected)


def test_residual_may_alias_the_output(kernels):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 6, 16, generator=g)
    wt = torch.randn(16, 16, 3, 3, generator=g) * 0.1
    acc = torch.randn(1, 6, 6, 16, generator=g)
    expected = F.conv2d(x.permute(0, 3, 1, 2), wt, torch.zeros(16), padding=1).permute(0, 2, 3, 1) + acc
    kernels.conv2d_nhwc(x, kernels.pack_weight(wt, torch.float32), torch.zeros(16), acc, ksize=3, residual=acc)
    torch.testing.assert_close(acc, expected, atol=1e-4, rtol=1e-5)


def test_launcher_checks(kernels):
    x = torch.zeros(1, 4, 4, 8)
    w = kernels.pack_weight(torch.zeros(16, 8, 3, 3), torch.float32)
    b = torch.zeros(16)
    out = torch.zeros(1, 4, 4, 16)
    with pytest.raises(ValueError, match=r"out must have shape \(1, 8, 8, 4\)"):
        kernels.conv2d_nhwc(x, w, b, out, ksize=3, shuffle=2)
    with pytest.raises(ValueError, match="shuffle must be an int >= 1 whose square divides C_out=16"):
        kernels.conv2d_nhwc(x, w, b, out, ksize=3, shuffle=3)
    with pytest.raises(ValueError, match="bias must be fp32"):
        kernels.conv2d_nhwc(x, w, b.half(), out, ksize=3)
    with pytest.raises(ValueError, match="w_packed must be contiguous"):
        kernels.conv2d_nhwc(x, w, b, out, ksize=5)
    with pytest.raises(TypeError, match="fp32, fp16 or bf16"):
        kernels.conv2d_nhwc(x.double(), w, b, out, ksize=3)
    with pytest.raises(TypeError, match="a uint8 output needs final=True"):
        kernels.conv2d_nhwc(x, w, b, out.to(torch.uint8), ksize=3)
    with pytest.raises(ValueError, match="outside the image"):
        kernels.conv2d_nhwc(x, w, b, out, ksize=3, row0=2, rows=4)
    with pytest.raises(ValueError, match=r"FLAT_K needs C_in \(8\) a multiple of BLOCK_K \(16\) and no shift"):
        kernels.conv2d_nhwc(x, w, b, out, ksize=3, config=FLAT)
    w16 = kernels.pack_weight(torch.zeros(16, 16, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="FLAT_K needs"):
        kernels.conv2d_nhwc(torch.zeros(1, 4, 4, 16), w16, b, out, ksize=3, shift=torch.zeros(16), config=FLAT)
    with pytest.raises(ValueError, match="square odd-sized conv weight"):
        kernels.pack_weight(torch.zeros(4, 4, 2, 2), torch.float32)
