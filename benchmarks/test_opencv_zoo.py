"""CPU: OpenCV's own ``dnn_superres`` running its model-zoo ``EDSR_x4.pb`` against fastsr running the same file
(``fastsr.sources.opencv_pb.load_opencv_pb``), image in, image out, side by side in one process: the same 8-bit image
(a crop of Set5's ``baby`` LR image, or random pixels without the data), the same thread count
(``torch.get_num_threads()``, given to OpenCV with ``cv2.setNumThreads``), interleaved rounds.

Implementations: ``DnnSuperResImpl.upsample`` (BGR uint8 in and out; its own mean subtraction, TensorFlow
importer and 8-bit conversion) and ``fastsr.Upscaler`` (RGB uint8 in and out) in the CPU's default precision
(:func:`fastsr.system.default_cpu_precision`: bf16 where the CPU has native bf16) and in fp32. Each output is
first checked against OpenCV's: fp32 within one level with almost every value identical, bf16 within a few
levels, so the quick mode (``--benchmark-disable``: a 16x16 crop, nothing timed) still tests every path.

Skips when the file (``$FASTSR_DATA/models/opencv/EDSR_x4.pb``, default ``../shared/data``) or
``cv2.dnn_superres`` (opencv-contrib-python-headless) is absent.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the OpenCV side-by-side runs on CPU machines")

DATA_DIR = Path(os.environ.get("FASTSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PB = DATA_DIR / "models" / "opencv" / "EDSR_x4.pb"
SCALE = 4
SIDE, QUICK_SIDE = 64, 16  # LR input side: full EDSR at 64x64 is ~0.3 TFLOP per image (seconds on 2 cores)
ROUNDS = 5
OPENCV = "opencv dnn_superres"
# Against OpenCV's 8-bit output: fp32 differs where the two sums straddle a .5 (measured: 0.003-0.01% of
# the values, by 1); bf16 rounds the body's features to 8-bit mantissas (measured: 2-5% of the values, by 1).
FP32_MAX, FP32_FRACTION = 1, 1e-3
BF16_MAX, BF16_FRACTION = 4, 0.15


def _dnn_superres():
    try:
        import cv2
    except ImportError:
        return None
    return getattr(cv2, "dnn_superres", None)


def image(side: int) -> np.ndarray:
    """An RGB uint8 crop of Set5's baby LR image at x4 (random pixels where the data is absent)."""
    path = DATA_DIR / "Set5" / "LR_bicubic" / "X4" / "babyx4.png"
    if path.is_file():
        from PIL import Image

        full = np.asarray(Image.open(path).convert("RGB"))
        y, x = (full.shape[0] - side) // 2, (full.shape[1] - side) // 2
        return np.ascontiguousarray(full[y : y + side, x : x + side])
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def check(impl: str, precision: str, out: np.ndarray, expected: np.ndarray) -> None:
    assert out.shape == expected.shape and out.dtype == np.uint8, (impl, out.shape, out.dtype)
    diff = np.abs(out.astype(int) - expected.astype(int))
    most, fraction = (FP32_MAX, FP32_FRACTION) if precision == "fp32" else (BF16_MAX, BF16_FRACTION)
    assert diff.max() <= most and (diff > 0).mean() <= fraction, \
        f"{impl}: max {diff.max()} levels, {(diff > 0).mean():.4%} of the values differ from OpenCV's"


@pytest.mark.skipif(not PB.is_file(), reason=f"OpenCV's EDSR_x4.pb not found at {PB} (set FASTSR_DATA)")
@pytest.mark.skipif(_dnn_superres() is None, reason="cv2.dnn_superres is not available "
                    "(pip install 'opencv-contrib-python-headless<5')")
def test_opencv_zoo_edsr_x4(record, request):
    import cv2

    from fastsr.engine.plan import lower
    from fastsr.sources.opencv_pb import load_opencv_pb
    from fastsr.system import default_cpu_precision
    from fastsr.upscaler import Upscaler

    quick = request.config.getoption("benchmark_disable", False)
    side = QUICK_SIDE if quick else SIDE
    threads = torch.get_num_threads()
    cv2.setNumThreads(threads)
    rgb = image(side)
    bgr = np.ascontiguousarray(rgb[..., ::-1])

    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(PB))
    sr.setModel("edsr", SCALE)
    model = load_opencv_pb(PB)
    default = default_cpu_precision()[0]
    precisions = {f"fastsr {default} (default)": default}
    if default != "fp32":
        precisions["fastsr fp32"] = "fp32"
    runners = {OPENCV: lambda: np.ascontiguousarray(sr.upsample(bgr)[..., ::-1])}
    for name, precision in precisions.items():
        up = Upscaler(model, device="cpu", precision=precision)
        runners[name] = lambda up=up: up(rgb, SCALE)

    expected = runners[OPENCV]()  # also OpenCV's warm-up
    for name, precision in precisions.items():
        check(name, precision, runners[name](), expected)  # and fastsr's warm-up
    if quick:
        return
    group = f"OpenCV zoo EDSR_x4.pb, 1x3x{side}x{side} uint8, CPU {threads} threads"
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for r in range(ROUNDS):
        for name in order[r % len(order):] + order[: r % len(order)]:
            t = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t)
    flops = lower(model, SCALE).flops(1, side, side)
    for name, ts in times.items():
        median = statistics.median(ts)
        record(group=group, name=name, median_s=median, p20_s=float(np.quantile(ts, 0.2)),
               p80_s=float(np.quantile(ts, 0.8)), gflops=flops / median / 1e9,
               precision=precisions.get(name, "fp32"), baseline=name == OPENCV)
