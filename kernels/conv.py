"""Implicit-GEMM "same" convolution over NHWC with fused epilogues (EDSR / MDSR inference).

Math, for output pixel (n, h, w) and output channel co of a K x K conv with zero padding P = K // 2::

    acc[n, h, w, co] = sum_{kh, kw, ci} x'[n, h + kh - P, w + kw - P, ci] * wp[(kh * K + kw) * C_in + ci, co]
    x'[n, ih, iw, ci] = x[n, ih, iw, ci] + shift[ci]   if (ih, iw) is inside the image, else 0

(``shift`` is the mean subtraction of EDSR's head, applied in the load so the padding stays zero.) As a
GEMM: M = N * H_out * W output pixels, N = C_out, K = K * K * C_in, the K loop running over the K * K taps
(unrolled) and, inside each tap, over ``BLOCK_K`` channel chunks; or, with ``FLAT_K`` (config ``FLAT_K=1``,
C_in a multiple of BLOCK_K, no shift), as one loop over all K * K * C_in / BLOCK_K chunks, which the
compiler can software-pipeline across taps (at F = 64 the unrolled form has one chunk per tap, nothing to
pipeline). Tiles are 2-D ``[pixels, channels]`` so that ``tl.dot`` maps onto wgmma on Hopper.

Epilogue, on the fp32 accumulator, in order: + bias -> ReLU (optional) -> + residual (optional, read in the
output's layout; may alias the output for in-place accumulation) -> store, in one of two layouts:

* plain: ``out[n, h, w, co]``;
* pixel shuffle by r (2 or 3 in the upsamplers; 4 too, in one step, for the x4 conv-shuffle tail of OpenCV's
  EDSR files): channel ``co = c * r^2 + i * r + j`` goes to ``out[n, h * r + i, w * r + j, c]`` (PyTorch's
  PixelShuffle), so no separate shuffle pass exists;

and, for the image (``final``, with either layout): ``* out_scale``, clamp to [0, clamp_max], and
optionally round half to even (as ``torch.round``) into uint8.

Shapes and dtypes: ``x: [N, H, W, C_in]`` (any strides), fp32 / fp16 / bf16; ``wp: [K * K * C_in, C_out]``
contiguous, the compute dtype; ``bias``, ``shift``: fp32; ``res``: ``[N, H_out, W, C_out]``; ``out``:
``[N, H_out, W, C_out]`` or ``[N, H_out * r, W * r, C_out / r^2]`` (any strides), compute dtype, fp32 or uint8.
Output rows are image rows ``row0 .. row0 + H_out - 1`` (a band of the image), stored from row 0 of ``out``.
Accumulation is fp32; fp32 inputs use IEEE fp32 products (no TF32), so the fp32 path matches PyTorch.

Grid: ``(cdiv(M, BLOCK_M), cdiv(C_out, BLOCK_N))`` with ``M = N * H_out * W`` passed in (below 2^31). Offsets are int64 (the x4 upsampler output at 1080p
exceeds 2^31 elements). Preconditions: K odd; C_out divisible by r^2 for shuffle stores.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _conv_nhwc_kernel(
    x_ptr, w_ptr, bias_ptr, shift_ptr, res_ptr, out_ptr,
    M, H, W, C_IN, C_OUT, H_OUT, ROW0, out_scale, clamp_max,
    stride_xn, stride_xh, stride_xw, stride_xc,
    stride_rn, stride_rh, stride_rw, stride_rc,
    stride_on, stride_oh, stride_ow, stride_oc,
    KSIZE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr, HAS_RES: tl.constexpr,
    SHUFFLE: tl.constexpr, FINAL: tl.constexpr, QUANTIZE: tl.constexpr, FP32_DOT: tl.constexpr,
    FLAT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    PAD: tl.constexpr = KSIZE // 2

    # M = N * H_OUT * W output pixels, computed by the launcher: an int argument equal to 1 (N = 1) is
    # specialised to a compile-time constant, so no tensor methods may be called on the size arguments.
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    mask_m = offs_m < M
    n_idx = offs_m // (H_OUT * W)
    hw = offs_m % (H_OUT * W)
    ho = hw // W  # output row within the band
    w_idx = hw % W
    h_idx = ho + ROW0  # image row

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < C_OUT

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:
        # One loop over all K * K * C_IN reduction rows in BLOCK_K chunks (C_IN % BLOCK_K == 0, so a chunk
        # never straddles two taps). Unlike the unrolled tap loop below, whose inner loop has a single
        # iteration at F = BLOCK_K = 64, this loop is one the compiler can software-pipeline (num_stages):
        # the loads of the next taps are issued while the current tap's dot runs.
        for kk in range(0, KSIZE * KSIZE * C_IN, BLOCK_K):
            tap = kk // C_IN
            ih = h_idx + (tap // KSIZE - PAD)
            iw = w_idx + (tap % KSIZE - PAD)
            in_img = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            offs_k = (kk - tap * C_IN) + tl.arange(0, BLOCK_K)
            a = tl.load(x_ptr + (n_idx * stride_xn + ih * stride_xh + iw * stride_xw)[:, None]
                        + offs_k[None, :].to(tl.int64) * stride_xc, mask=in_img[:, None], other=0.0)
            b = tl.load(w_ptr + (kk + tl.arange(0, BLOCK_K))[:, None].to(tl.int64) * C_OUT + offs_n[None, :],
                        mask=mask_n[None, :], other=0.0)
            if FP32_DOT:
                acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(a.to(b.dtype), b)
    else:
        for kh in tl.static_range(KSIZE):
            ih = h_idx + (kh - PAD)
            for kw in tl.static_range(KSIZE):
                iw = w_idx + (kw - PAD)
                in_img = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                x_base = n_idx * stride_xn + ih * stride_xh + iw * stride_xw
                w_row0 = (kh * KSIZE + kw) * C_IN
                for k0 in range(0, C_IN, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)
                    mask_k = offs_k < C_IN
                    mask_a = in_img[:, None] & mask_k[None, :]
                    a = tl.load(x_ptr + x_base[:, None] + offs_k[None, :].to(tl.int64) * stride_xc,
                                mask=mask_a, other=0.0)
                    b = tl.load(
                        w_ptr + (w_row0 + offs_k)[:, None].to(tl.int64) * C_OUT + offs_n[None, :],
                        mask=mask_k[:, None] & mask_n[None, :],
                        other=0.0,
                    )
                    if HAS_SHIFT:
                        shift = tl.load(shift_ptr + offs_k, mask=mask_k, other=0.0)
                        a = tl.where(mask_a, a.to(tl.float32) + shift[None, :], 0.0)
                    if FP32_DOT:
                        acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
                    else:
                        acc += tl.dot(a.to(b.dtype), b)

    # Epilogue on the fp32 accumulator: bias -> ReLU -> residual -> store.
    bias = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0)
    acc = acc + bias[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    mask_out = mask_m[:, None] & mask_n[None, :]
    if HAS_RES:
        r_off = n_idx[:, None] * stride_rn + ho[:, None] * stride_rh + w_idx[:, None] * stride_rw \
            + offs_n[None, :].to(tl.int64) * stride_rc
        acc += tl.load(res_ptr + r_off, mask=mask_out, other=0.0).to(tl.float32)
    if SHUFFLE == 1:
        o_off = n_idx[:, None] * stride_on + ho[:, None] * stride_oh + w_idx[:, None] * stride_ow \
            + offs_n[None, :].to(tl.int64) * stride_oc
    else:
        c = offs_n // (SHUFFLE * SHUFFLE)
        i = (offs_n // SHUFFLE) % SHUFFLE
        j = offs_n % SHUFFLE
        o_off = n_idx[:, None] * stride_on + (ho[:, None] * SHUFFLE + i[None, :]) * stride_oh \
            + (w_idx[:, None] * SHUFFLE + j[None, :]) * stride_ow + c[None, :].to(tl.int64) * stride_oc
    if FINAL:
        acc = tl.minimum(tl.maximum(acc * out_scale, 0.0), clamp_max)
        if QUANTIZE:
            # Round half to even (torch.round): floor, then settle exact halves on the even neighbour.
            f = tl.floor(acc)
            d = acc - f
            odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
            acc = tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)
    tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=mask_out)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def get_configs() -> list[dict[str, int]]:
    """Tile configs. Hopper-minded (BLOCK_M >= 64 so wgmma is used); a single one under the interpreter,
    which cannot autotune without a GPU and runs each program slowly."""
    if interpreting():
        return [dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=1)]
    return [
        dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3),  # F = 64 (memory-bound)
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3),  # F >= 256 (compute-bound)
    ]


_COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def pack_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[C_out, C_in, K, K]`` -> ``[K * K * C_in, C_out]`` (tap-major, then input channel), contiguous."""
    if weight.dim() != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0:
        raise ValueError(f"expected a square odd-sized conv weight [C_out, C_in, K, K], got {tuple(weight.shape)}")
    c_out, c_in, k, _ = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(k * k * c_in, c_out).to(dtype).contiguous()


def pick_config(c_in: int, c_out: int, dtype: torch.dtype) -> dict[str, int]:
    """The tile config for a conv (chosen by shape; autotuning would re-run in-place residual launches)."""
    configs = get_configs()
    if interpreting():
        return configs[0]
    cfg = dict(configs[1] if c_out >= 256 else configs[0])
    if c_out <= 16:  # the final conv's 3 channels: a narrow N tile (tl.dot needs >= 16)
        cfg.update(BLOCK_N=16, BLOCK_M=128)
    if c_in < cfg["BLOCK_K"]:  # the head's 3 input channels
        cfg["BLOCK_K"] = max(16, triton.next_power_of_2(c_in))
    if dtype == torch.float32:  # 4-byte tiles: halve K and the stages to stay within ~100 KiB of shared memory
        cfg.update(BLOCK_K=min(cfg["BLOCK_K"], 32), num_stages=2)
    return cfg


def candidate_configs(c_in: int, c_out: int, dtype: torch.dtype) -> dict[str, dict[str, int]]:
    """The tile configs worth timing for one conv (the engine's autotune adds cuDNN beside them): the
    shape-picked one, the other tile shapes of :func:`get_configs` with the same adjustments, and each of
    them with the flattened K loop (``-flat``) where C_in is a multiple of BLOCK_K (fp16 / bf16)."""
    picked = pick_config(c_in, c_out, dtype)
    out = {"triton": picked}
    if interpreting():
        return out
    for cfg in get_configs():
        alt = dict(cfg)
        if c_in < alt["BLOCK_K"]:
            alt["BLOCK_K"] = max(16, triton.next_power_of_2(c_in))
        if dtype == torch.float32:
            alt.update(BLOCK_K=min(alt["BLOCK_K"], 32), num_stages=2)
        if alt != picked and c_out > 16:
            out[f"triton-{alt['BLOCK_M']}x{alt['BLOCK_N']}x{alt['BLOCK_K']}"] = alt
    for name, cfg in list(out.items()):
        if c_in % cfg["BLOCK_K"] == 0 and dtype != torch.float32:  # fp32 tiles leave no shared memory for stages
            # Stages that fit ~100 KiB of shared memory: (BLOCK_M + BLOCK_N) * BLOCK_K * 2 bytes per stage.
            stages = 4 if cfg["BLOCK_N"] <= 64 else 3
            out[f"{name}-flat"] = {**cfg, "FLAT_K": 1, "num_stages": stages}
    return out


def conv2d_nhwc(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    bias: torch.Tensor,
    out: torch.Tensor,
    *,
    ksize: int,
    shift: torch.Tensor | None = None,
    relu: bool = False,
    residual: torch.Tensor | None = None,
    shuffle: int = 1,
    final: bool = False,
    quantize: bool = False,
    out_scale: float = 1.0,
    clamp_max: float = 255.0,
    row0: int = 0,
    rows: int | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """Launch the fused conv: ``out <- epilogue(conv(x))``; see the module docstring. Returns ``out``.

    ``row0`` / ``rows`` select the band of image rows computed (default: all); ``out`` then holds just
    those rows (times ``shuffle``). ``config`` (BLOCK_M / BLOCK_N / BLOCK_K / num_warps / num_stages, and
    optionally FLAT_K, e.g. from :func:`candidate_configs`) replaces the shape-picked tile config.
    """
    if not (x.is_cuda or interpreting()):
        raise ValueError("conv2d_nhwc needs CUDA tensors (or TRITON_INTERPRET=1 for CPU)")
    if x.dim() != 4 or out.dim() != 4:
        raise ValueError(f"x and out must be 4-D NHWC, got {tuple(x.shape)} and {tuple(out.shape)}")
    if x.dtype not in _COMPUTE_DTYPES or w_packed.dtype not in _COMPUTE_DTYPES:
        raise TypeError(f"x / weights must be fp32, fp16 or bf16, got {x.dtype} / {w_packed.dtype}")
    n, h, w, c_in = x.shape
    c_out = w_packed.shape[1]
    rows = h - row0 if rows is None else rows
    if row0 < 0 or rows <= 0 or row0 + rows > h:
        raise ValueError(f"rows [{row0}, {row0 + rows}) outside the image's {h} rows")
    if w_packed.shape != (ksize * ksize * c_in, c_out) or not w_packed.is_contiguous():
        raise ValueError(f"w_packed must be contiguous [{ksize * ksize * c_in}, C_out], got {tuple(w_packed.shape)}")
    if bias.shape != (c_out,) or bias.dtype != torch.float32:
        raise ValueError(f"bias must be fp32 [{c_out}], got {bias.dtype} {tuple(bias.shape)}")
    if isinstance(shuffle, bool) or not isinstance(shuffle, int) or shuffle < 1 or c_out % (shuffle * shuffle):
        raise ValueError(f"shuffle must be an int >= 1 whose square divides C_out={c_out}, got {shuffle!r}")
    expected = (n, rows * shuffle, w * shuffle, c_out // (shuffle * shuffle))
    if tuple(out.shape) != expected:
        raise ValueError(f"out must have shape {expected}, got {tuple(out.shape)}")
    if out.dtype == torch.uint8 and not (final and quantize):
        raise TypeError("a uint8 output needs final=True, quantize=True")
    if shift is not None and (shift.shape != (c_in,) or shift.dtype != torch.float32):
        raise ValueError(f"shift must be fp32 [{c_in}], got {shift.dtype} {tuple(shift.shape)}")
    if residual is not None and (tuple(residual.shape) != (n, rows, w, c_out) or shuffle != 1):
        raise ValueError(f"residual must be [{n}, {rows}, {w}, {c_out}] with a plain store, got {tuple(residual.shape)}")

    if n * rows * w >= 2**31:
        raise ValueError(f"{n * rows * w} output pixels per launch; split the batch below 2^31")
    if x.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        raise ValueError("x and out share memory: the conv reads neighbours of the pixels it writes")
    cfg = pick_config(c_in, c_out, w_packed.dtype) if config is None else config
    missing = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"} - set(cfg)
    if missing:
        raise ValueError(f"config lacks {sorted(missing)}")
    flat = bool(cfg.get("FLAT_K", 0))
    if flat and (c_in % cfg["BLOCK_K"] or shift is not None):
        raise ValueError(f"FLAT_K needs C_in ({c_in}) a multiple of BLOCK_K ({cfg['BLOCK_K']}) and no shift")
    meta = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    grid = (triton.cdiv(n * rows * w, meta["BLOCK_M"]), triton.cdiv(c_out, meta["BLOCK_N"]))
    res = residual if residual is not None else out
    _conv_nhwc_kernel[grid](
        x, w_packed, bias, shift if shift is not None else bias, res, out,
        n * rows * w, h, w, c_in, c_out, rows, row0, float(out_scale), float(clamp_max),
        *x.stride(), *res.stride(), *out.stride(),
        KSIZE=ksize, HAS_SHIFT=shift is not None, RELU=relu, HAS_RES=residual is not None,
        SHUFFLE=shuffle, FINAL=final, QUANTIZE=quantize, FP32_DOT=w_packed.dtype == torch.float32, FLAT_K=flat,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **meta,
    )
    return out
