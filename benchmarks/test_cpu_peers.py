"""CPU, side by side in one process: the reference, fastsr (fp32 and bf16) and what a CPU user would run
instead (ONNX Runtime, OpenVINO f32 / bf16, OpenCV dnn; see ``peers.py``), with the same input, the same
thread count and the same output check.

Every implementation's output is first checked against the fp32 reference under its precision class's
tolerance (asserted). CI's quick mode (``--benchmark-disable``) runs only that check, on tiny inputs
(``QUICK_CASES``), and times nothing. Timing: the median of ``ROUNDS`` interleaved rounds (each round calls
every implementation once, in a rotated order), so a machine whose speed drifts (shared hosts, turbo)
treats all of them alike. Each result also gets its
effective GFLOP/s (the plan's conv FLOPs over the median) and that as a fraction of this machine's dense
GEMM rate at its precision, measured in the same run (group "machine").
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest
import torch
from peers import FASTSR, PEERS, build, gemm_rate, missing, precision_of

from fastsr.engine.plan import lower
from fastsr.models import MDSR, create

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU side-by-side runs on CPU machines")

# (preset, scale, input side): EDSR-baseline and MDSR-baseline at a small and a large input; full EDSR at
# 64x64, where 256-channel convs make Winograd and bf16 pay most.
CASES = [("edsr-baseline-x2", 2, 128), ("edsr-baseline-x4", 4, 128), ("mdsr-baseline", 4, 128),
         ("edsr-baseline-x2", 2, 512), ("edsr-baseline-x4", 4, 512), ("mdsr-baseline", 4, 512),
         ("edsr-x2", 2, 64), ("edsr-x4", 4, 64)]
# Quick mode (CI): the same output check on a 16x16 input, for a single-scale x2 network and MDSR at x4
# (the multi-scale call and the folded x4 tail): every implementation's build and run path. The full-size
# cases' checks alone take minutes on a 2-core machine, full EDSR's the most (tests/test_export.py checks
# the export of a residual-scaled x4 network against ONNX Runtime and OpenVINO).
QUICK_SIDE = 16
QUICK_CASES = [("edsr-baseline-x2", 2, QUICK_SIDE), ("mdsr-baseline", 4, QUICK_SIDE)]
IMPLS = ["reference", *FASTSR, *PEERS]
ROUNDS = 5
# Tolerances against the fp32 reference on its 0..255 output, by precision class.
# fp32: summation order, and Winograd's transforms where a peer uses them (relative error ~1e-5, through
# 33-69 convs); 0.05 is a twentieth of an 8-bit level.
FP32_ATOL = 0.05
# bf16: an 8-bit mantissa on the features through every layer (random weights: larger than trained ones).
BF16_MAX_ABS, BF16_MEAN_ABS = 8.0, 0.5

_gemm: dict[str, float] = {}


def gemm(precision: str) -> float:
    if precision not in _gemm:
        _gemm[precision] = gemm_rate(torch.float32 if precision == "fp32" else torch.bfloat16)
    return _gemm[precision]


def check(impl: str, out: np.ndarray, expected: torch.Tensor) -> None:
    got = torch.from_numpy(np.asarray(out, dtype=np.float32))
    assert got.shape == expected.shape, f"{impl}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if impl == "reference":
        return
    err = (got - expected).abs()
    if precision_of(impl) == "fp32":
        assert float(err.max()) <= FP32_ATOL, f"{impl}: max abs error {float(err.max()):.4g} > {FP32_ATOL}"
    else:
        assert float(err.max()) <= BF16_MAX_ABS and float(err.mean()) <= BF16_MEAN_ABS, \
            f"{impl}: bf16 error max {float(err.max()):.3g} / mean {float(err.mean()):.3g}"


def quick_mode(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_disable", False))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.name == "test_cpu_side_by_side":
        cases = QUICK_CASES if quick_mode(metafunc.config) else CASES
        metafunc.parametrize("preset,scale,side", cases, ids=str)


def test_cpu_side_by_side(preset, scale, side, record, request, tmp_path):
    quick = quick_mode(request.config)
    torch.manual_seed(0)
    model = create(preset).eval()
    args = (scale,) if isinstance(model, MDSR) else ()
    x = (torch.rand(1, 3, side, side) * 255).numpy()
    with torch.inference_mode():
        expected = model(torch.from_numpy(x), *args)

    def reference(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(a), *args).numpy()

    runners, skipped = {}, {}
    for impl in IMPLS:
        why = None if impl == "reference" else missing(impl)
        if why:
            skipped[impl] = why
            continue
        runners[impl] = reference if impl == "reference" else build(impl, model, scale, x.shape, tmp_path)
        check(impl, runners[impl](x), expected)  # also the warm-up
    group = f"{preset} x{scale}, 1x3x{side}x{side}, CPU {torch.get_num_threads()} threads"
    if quick:
        return
    times: dict[str, list[float]] = {impl: [] for impl in runners}
    order = list(runners)
    for r in range(ROUNDS):
        for impl in order[r % len(order):] + order[: r % len(order)]:
            t = time.perf_counter()
            runners[impl](x)
            times[impl].append(time.perf_counter() - t)
    flops = lower(model, scale).flops(1, side, side)
    for impl, ts in times.items():
        median = statistics.median(ts)
        precision = "fp32" if impl == "reference" else precision_of(impl)
        record(group=group, name=impl, median_s=median, p20_s=float(np.quantile(ts, 0.2)),
               p80_s=float(np.quantile(ts, 0.8)), gflops=flops / median / 1e9, precision=precision,
               gemm_fraction=flops / median / gemm(precision), baseline=impl == "reference")
    for impl, why in skipped.items():
        record(group=group, name=impl, skipped=why)


def test_machine_gemm_rate(record, request):
    """The dense GEMM rate the efficiency columns divide by (fp32, and bf16 where the CPU has it): a finite,
    positive FLOP/s. Quick mode measures a 64^2 product once, so the measurement runs in CI; no speed is
    asserted either way."""
    quick = quick_mode(request.config)
    size = 64 if quick else 2048
    group = f"machine: dense GEMM rate (torch.mm {size}^2)"
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and missing("fastsr torch bf16") is not None:
            continue
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        rate = gemm_rate(dtype, size=size, seconds=0.0) if quick else gemm(precision)
        assert math.isfinite(rate) and rate > 0, (precision, rate)
        record(group=group, name=precision, gflops=rate / 1e9)
