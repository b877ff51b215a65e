"""Compile the fused conv and residual-block kernels for a Hopper GPU (sm_90) without one: Triton's front end, its GPU passes and
ptxas, as a real launch would, for the paths and configs the engine uses. Run as a script, without
TRITON_INTERPRET (the interpreter neither specialises arguments nor lowers anything).

Each conv variant compiles under up to three launch specialisations (Triton specialises integer arguments
equal to 1 and pointers / integers divisible by 16):

* ``ones``: the degenerate launch, batch 1 with a 1-pixel-wide image and unit channel strides;
* ``aligned``: a contiguous NHWC launch of a normal image (16-byte aligned pointers, unit channel strides,
  the other strides multiples of 16 where the channel counts are). Only here can loads become ``cp.async``
  copies and the K loop be software-pipelined, so this is the form a GPU really runs; for the flattened K loop
  the script also checks that it *is* pipelined (async copies in the TTGIR), the variant's reason to exist;
* ``generic``: nothing specialised (strided views).

    python tests/compile_kernels.py   -> one line per variant, "ok" or the error; exit status 1 on any error
"""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from fastsr.kernels.conv import _conv_nhwc_kernel, candidate_configs, pick_config  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.uint8: "u8"}
# Integer arguments a launch may pass as 1 (batch 1 with W = 1, a one-row band, row 0 offset of 1, unit
# channel strides): Triton turns such arguments into compile-time constants.
CAN_BE_ONE = ("M", "H", "W", "H_OUT", "ROW0", "stride_xc", "stride_rc", "stride_oc")

# (name, C_in, C_out, K, flags, output dtype or None for the compute dtype)
VARIANTS = [
    ("head", 3, 64, 3, dict(HAS_SHIFT=True), None),
    ("conv-relu", 64, 64, 3, dict(RELU=True), None),
    ("conv-residual", 64, 64, 3, dict(HAS_RES=True), None),
    ("mdsr-5x5", 64, 64, 5, dict(RELU=True), None),
    ("shuffle-x2", 64, 256, 3, dict(SHUFFLE=2), None),
    ("shuffle-x3", 64, 576, 3, dict(SHUFFLE=3), None),
    ("wide-256", 256, 256, 3, dict(RELU=True), None),
    ("final-uint8", 64, 3, 3, dict(FINAL=True, QUANTIZE=True), torch.uint8),
    ("final-fp32", 64, 3, 3, dict(FINAL=True), torch.float32),
    # OpenCV's EDSR files: one conv 256 -> 3 * 16 with the x4 shuffle and the final epilogue in one launch.
    ("final-shuffle-x4-uint8", 256, 48, 3, dict(SHUFFLE=4, FINAL=True, QUANTIZE=True), torch.uint8),
    # The flattened K loop (autotune candidates "...-flat", with their own stage counts).
    ("flat-conv-relu", 64, 64, 3, dict(RELU=True, FLAT_K=True), None),
    ("flat-conv-residual", 64, 64, 3, dict(HAS_RES=True, FLAT_K=True), None),
    ("flat-wide-256", 256, 256, 3, dict(RELU=True, FLAT_K=True), None),
]

# The launch specialisations per variant (default: "ones" only; each compile takes seconds).
MODES = {
    "conv-residual": ("ones", "aligned", "generic"),
    "flat-conv-residual": ("ones", "aligned", "generic"),
    "flat-conv-relu": ("aligned",),
    "flat-wide-256": ("aligned",),
    "shuffle-x2": ("ones", "aligned", "generic"),
    "final-uint8": ("ones", "aligned"),
}


def compile_variant(dtype, c_in, c_out, k, flags, out_dtype, mode: str) -> None:
    if flags.get("FLAT_K"):
        cfg = candidate_configs(c_in, c_out, dtype)["triton-flat"]
    else:
        cfg = pick_config(c_in, c_out, dtype)
    const = dict(KSIZE=k, HAS_SHIFT=False, RELU=False, HAS_RES=False, SHUFFLE=1, FINAL=False, QUANTIZE=False,
                 FP32_DOT=dtype == torch.float32, FLAT_K=False, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
                 BLOCK_K=cfg["BLOCK_K"])
    const.update(flags)
    if mode == "ones":
        const.update({name: 1 for name in CAN_BE_ONE})
    elif mode == "aligned":
        const.update(stride_xc=1, stride_rc=1, stride_oc=1)
    names = _conv_nhwc_kernel.arg_names
    pointer = {"x_ptr": dtype, "w_ptr": dtype, "bias_ptr": torch.float32, "shift_ptr": torch.float32,
               "res_ptr": dtype, "out_ptr": out_dtype or dtype}
    signature = {}
    for name in names:
        if name in const:
            signature[name] = "constexpr"
        elif name in pointer:
            signature[name] = "*" + TYPES[pointer[name]]
        elif name in ("out_scale", "clamp_max"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    attrs = {}
    if mode == "aligned":
        shuffle = flags.get("SHUFFLE", 1)
        divisible = [*pointer, "C_OUT"] + (["C_IN", "stride_xn", "stride_xh", "stride_xw"] if c_in % 16 == 0 else [])
        divisible += ["stride_rn", "stride_rh", "stride_rw"] if c_out % 16 == 0 else []
        divisible += ["stride_on", "stride_oh", "stride_ow"] if (c_out // shuffle**2) % 16 == 0 else []
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible if n not in const}
    src = ASTSource(_conv_nhwc_kernel, signature, {(names.index(n),): v for n, v in const.items()}, attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})
    if mode == "aligned" and flags.get("FLAT_K") and "async_copy_global_to_local" not in kernel.asm["ttgir"]:
        raise RuntimeError("the flattened K loop was not software-pipelined (no async copies)")


def compile_resblock(dtype, f: int, ones: bool) -> None:
    """The fused residual block (kernels/resblock.py) with its GPU config."""
    from fastsr.kernels.resblock import _resblock_nhwc_kernel, get_configs

    cfg = get_configs()[0]
    const = dict(F=f, HALO=cfg["HALO"], BLOCK_K=min(cfg["BLOCK_K"], f), FP32_DOT=dtype == torch.float32)
    if ones:  # a 1-row / 1-column image, batch 1 (one window row), unit channel strides
        const.update({name: 1 for name in ("H", "TILES_H", "stride_xc", "stride_oc")})
    names = _resblock_nhwc_kernel.arg_names
    pointer = {"x_ptr": dtype, "w1_ptr": dtype, "w2_ptr": dtype, "b1_ptr": torch.float32, "b2_ptr": torch.float32,
               "out_ptr": dtype, "scratch_ptr": dtype}
    signature = {n: "constexpr" if n in const else ("*" + TYPES[pointer[n]] if n in pointer else "i32") for n in names}
    src = ASTSource(_resblock_nhwc_kernel, signature, {(names.index(n),): v for n, v in const.items()})
    triton.compile(src, target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})


def main() -> int:
    failed = 0
    for dtype in (torch.float16, torch.bfloat16):  # the launcher refuses fp32 on a GPU
        for ones in (True, False) if dtype == torch.float16 else (False,):
            label = f"{TYPES[dtype]} fused-resblock F=64{' (size args = 1)' if ones else ''}"
            try:
                compile_resblock(dtype, 64, ones)
                print(f"ok   {label}")
            except Exception as e:  # report every failure, not just the first
                failed += 1
                print(f"FAIL {label}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for name, c_in, c_out, k, flags, out_dtype in VARIANTS:
            if dtype == torch.float32 and name.startswith("flat"):
                continue  # not a candidate in fp32 (no shared memory left for more stages)
            if dtype != torch.float16 and name not in ("conv-residual", "final-uint8", "flat-conv-residual"):
                continue  # every path in fp16; the main ones in bf16 and fp32 (each compile takes seconds)
            for mode in MODES.get(name, ("ones",)):
                label = f"{TYPES[dtype]} {name} ({mode})"
                try:
                    compile_variant(dtype, c_in, c_out, k, flags, out_dtype, mode)
                    print(f"ok   {label}")
                except Exception as e:  # report every failure, not just the first
                    failed += 1
                    print(f"FAIL {label}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
