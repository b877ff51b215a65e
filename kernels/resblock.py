"""A whole EDSR residual block in one launch over NHWC: ``out = x + conv2(relu(conv1(x) + b1)) + b2``.

Math, for pixel (n, h, w) and channel co, with 3x3 "same" convs (zero padding 1) and the block's residual
scaling already folded into ``conv2``'s weights and bias (``fastsr.engine.plan``)::

    t[n, h, w, c]   = relu(b1[c] + sum_{kh, kw, ci} x[n, h + kh - 1, w + kw - 1, ci] * w1[(kh * 3 + kw) * F + ci, c])
    out[n, h, w, co] = x[n, h, w, co] + b2[co] + sum_{kh, kw, c} t'[n, h + kh - 1, w + kw - 1, c] * w2[(kh * 3 + kw) * F + c, co]

where ``t'`` is ``t`` inside the image and 0 outside (the second conv's zero padding).

Tiling: each program owns a ``HALO x HALO`` window of pixels (``HALO = 16``: 256 rows, a power of two, so no
row of the tile GEMMs is padding) whose inner ``(HALO - 2) x (HALO - 2)`` pixels it writes; windows overlap
by 2 pixels. Stage 1 computes ``t`` on the whole window (the 1-pixel ring is recomputed by the neighbouring
windows: 16^2 / 14^2 = 1.31x the work of conv1) and keeps it in a per-program scratch tile, rounded to the
compute dtype as the unfused engine rounds its intermediate map; stage 2 computes ``conv2`` on the window
reading ``t`` from that scratch, and the epilogue stores the inner pixels. The scratch tile is written and
read back by the same program (a barrier between), so it stays in L1 / L2 on a GPU instead of a full-size
feature map going through memory: the traffic of the intermediate map (a write and nine reads) is what
the fusion saves, at the price of the recomputed ring.

Epilogue (on the fp32 accumulator, in order): + b2 -> + x (the block's input, read in fp32) -> store.

Shapes and dtypes: ``x``, ``out``: ``[N, H, W, F]`` (any strides, ``out`` must not alias ``x``: windows read
their neighbours' pixels), fp32 / fp16 / bf16; ``w1p``, ``w2p``: ``[9 * F, F]`` contiguous (``pack_weight``'s
layout), the compute dtype; ``b1``, ``b2``: fp32 ``[F]``; ``scratch``: ``[programs, HALO * HALO, F]``, the
compute dtype (allocated by the launcher). ``F`` is a power of two from 16 to 128 (the channel dimension of
every tile is all ``F`` channels). On a GPU the compute dtype is fp16 or bf16 (fp32 tiles this size spill
registers); fp32 runs under the interpreter, for tests.

Grid: ``(N * cdiv(H, HALO - 2) * cdiv(W, HALO - 2),)``; offsets are int64. Accumulation is fp32; fp32 inputs
use IEEE products (no TF32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .conv import interpreting


@triton.jit
def _resblock_nhwc_kernel(
    x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr, scratch_ptr,
    H, W, TILES_H, TILES_W,
    stride_xn, stride_xh, stride_xw, stride_xc,
    stride_on, stride_oh, stride_ow, stride_oc,
    F: tl.constexpr, HALO: tl.constexpr, BLOCK_K: tl.constexpr, FP32_DOT: tl.constexpr,
):
    pid = tl.program_id(0)
    TILE: tl.constexpr = HALO - 2
    BLOCK: tl.constexpr = HALO * HALO
    n_idx = pid // (TILES_H * TILES_W)
    t = pid % (TILES_H * TILES_W)
    h0 = (t // TILES_W) * TILE - 1  # the window's top-left pixel (may be -1: outside the image)
    w0 = (t % TILES_W) * TILE - 1

    offs_p = tl.arange(0, BLOCK)
    py = offs_p // HALO
    px = offs_p % HALO
    hh = (h0 + py).to(tl.int64)
    ww = (w0 + px).to(tl.int64)
    in_img = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    offs_c = tl.arange(0, F)
    x_n = n_idx.to(tl.int64) * stride_xn

    # Stage 1: t = relu(conv1(x) + b1) on the whole window, 0 outside the image.
    acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    for kh in tl.static_range(3):
        for kw in tl.static_range(3):
            ih = hh + (kh - 1)
            iw = ww + (kw - 1)
            ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            base = x_n + ih * stride_xh + iw * stride_xw
            for k0 in tl.static_range(0, F, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                a = tl.load(x_ptr + base[:, None] + offs_k[None, :].to(tl.int64) * stride_xc, mask=ok[:, None], other=0.0)
                b = tl.load(w1_ptr + ((kh * 3 + kw) * F + offs_k)[:, None].to(tl.int64) * F + offs_c[None, :])
                if FP32_DOT:
                    acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(a.to(b.dtype), b)
    b1 = tl.load(b1_ptr + offs_c)
    acc = tl.maximum(acc + b1[None, :], 0.0)
    acc = tl.where(in_img[:, None], acc, 0.0)
    s_base = scratch_ptr + pid.to(tl.int64) * (BLOCK * F)
    tl.store(s_base + offs_p[:, None].to(tl.int64) * F + offs_c[None, :], acc.to(scratch_ptr.dtype.element_ty))
    tl.debug_barrier()  # the whole window's t is written before any thread reads its neighbours

    # Stage 2: conv2 over the window, reading t from the scratch tile; only inner pixels are valid.
    acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    for kh in tl.static_range(3):
        for kw in tl.static_range(3):
            sy = py + (kh - 1)
            sx = px + (kw - 1)
            ok = (sy >= 0) & (sy < HALO) & (sx >= 0) & (sx < HALO)
            row = (sy * HALO + sx).to(tl.int64)
            for k0 in tl.static_range(0, F, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                a = tl.load(s_base + row[:, None] * F + offs_k[None, :], mask=ok[:, None], other=0.0)
                b = tl.load(w2_ptr + ((kh * 3 + kw) * F + offs_k)[:, None].to(tl.int64) * F + offs_c[None, :])
                if FP32_DOT:
                    acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(a.to(b.dtype), b)

    # Epilogue: + b2 -> + x -> store the inner pixels.
    inner = (py >= 1) & (py <= TILE) & (px >= 1) & (px <= TILE) & in_img
    mask = inner[:, None]
    b2 = tl.load(b2_ptr + offs_c)
    res = tl.load(x_ptr + (x_n + hh * stride_xh + ww * stride_xw)[:, None] + offs_c[None, :].to(tl.int64) * stride_xc,
                  mask=mask, other=0.0)
    acc = acc + b2[None, :] + res.to(tl.float32)
    o_off = (n_idx.to(tl.int64) * stride_on + hh * stride_oh + ww * stride_ow)[:, None] \
        + offs_c[None, :].to(tl.int64) * stride_oc
    tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=mask)


def get_configs() -> list[dict[str, int]]:
    """Window and launch configs. A 16x16 window (14x14 written) on a GPU; an 8x8 one (6x6 written) under the
    interpreter, whose programs are slow and whose tests are tiny."""
    if interpreting():
        return [dict(HALO=8, BLOCK_K=16, num_warps=4, num_stages=1)]
    return [dict(HALO=16, BLOCK_K=64, num_warps=8, num_stages=2)]


_COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def resblock_nhwc(x: torch.Tensor, w1p: torch.Tensor, b1: torch.Tensor, w2p: torch.Tensor, b2: torch.Tensor,
                  out: torch.Tensor, *, config: dict[str, int] | None = None) -> torch.Tensor:
    """Launch the fused residual block ``out <- x + conv2(relu(conv1(x)))`` (see the module docstring)."""
    if not (x.is_cuda or interpreting()):
        raise ValueError("resblock_nhwc needs CUDA tensors (or TRITON_INTERPRET=1 for CPU)")
    if x.dim() != 4 or tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"x and out must be the same 4-D NHWC shape, got {tuple(x.shape)} and {tuple(out.shape)}")
    n, h, w, f = x.shape
    if f < 16 or f > 128 or f & (f - 1):
        raise ValueError(f"the fused block takes F = 16, 32, 64 or 128 channels, got {f}")
    if x.dtype not in _COMPUTE_DTYPES or w1p.dtype != w2p.dtype or w1p.dtype not in _COMPUTE_DTYPES:
        raise TypeError(f"x / weights must be fp32, fp16 or bf16, got {x.dtype} / {w1p.dtype} / {w2p.dtype}")
    for name, wp in (("w1p", w1p), ("w2p", w2p)):
        if tuple(wp.shape) != (9 * f, f) or not wp.is_contiguous():
            raise ValueError(f"{name} must be contiguous [{9 * f}, {f}] (pack_weight of a 3x3 conv), got {tuple(wp.shape)}")
    for name, b in (("b1", b1), ("b2", b2)):
        if tuple(b.shape) != (f,) or b.dtype != torch.float32:
            raise ValueError(f"{name} must be fp32 [{f}], got {b.dtype} {tuple(b.shape)}")
    if out.dtype != x.dtype:
        raise TypeError(f"out must have x's dtype {x.dtype}, got {out.dtype}")
    if x.is_cuda and w1p.dtype == torch.float32:
        # 256 x F fp32 tiles with IEEE products spill registers (ptxas ran over 10 minutes on sm_90): the
        # fused block is an fp16 / bf16 kernel on the GPU; fp32 runs unfused.
        raise TypeError("the fused block runs fp16 or bf16 on a GPU; use the unfused convs for fp32")
    if x.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        raise ValueError("x and out share memory: each window reads its neighbours' pixels of x")
    cfg = dict(get_configs()[0] if config is None else config)
    halo, block_k = cfg["HALO"], min(cfg["BLOCK_K"], f)
    tile = halo - 2
    tiles_h, tiles_w = triton.cdiv(h, tile), triton.cdiv(w, tile)
    programs = n * tiles_h * tiles_w
    if programs >= 2**31:
        raise ValueError(f"{programs} programs; split the batch")
    scratch = torch.empty(programs, halo * halo, f, device=x.device, dtype=w1p.dtype)
    _resblock_nhwc_kernel[(programs,)](
        x, w1p, b1, w2p, b2, out, scratch,
        h, w, tiles_h, tiles_w,
        *x.stride(), *out.stride(),
        F=f, HALO=halo, BLOCK_K=block_k, FP32_DOT=w1p.dtype == torch.float32,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
