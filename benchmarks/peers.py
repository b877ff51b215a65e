"""What a CPU user would run instead of fastsr, built from the same network: ONNX Runtime, OpenVINO (f32 and
bf16) and OpenCV dnn, each fed the ONNX file that ``fastsr.export_onnx`` writes (the folded plan: fewer and
simpler nodes than the reference's own export, so the peers get the best graph we can give them), plus
fastsr's own CPU precisions. Every runner takes and returns NCHW float32 numpy / torch in [0, 255].

Each peer uses the benchmark's thread count (``torch.get_num_threads()``), all graph optimisations, and a
static input shape where the engine supports it (OpenVINO compiles faster kernels for a static shape).
Also: the machine's dense GEMM rate (``gemm_rate``), the yardstick of the efficiency columns.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import fastsr
from fastsr.export import export_onnx
from fastsr.system import cpu_bf16_isa

Runner = Callable[[np.ndarray], np.ndarray]

# Peer name -> (python module it needs, precision class). The precision class decides the tolerance and
# which fastsr precision it is compared with.
PEERS = {
    "onnxruntime": ("onnxruntime", "fp32"),
    "openvino f32": ("openvino", "fp32"),
    "openvino bf16": ("openvino", "bf16"),
    "opencv dnn": ("cv2", "fp32"),
}
FASTSR = {"fastsr torch fp32": "fp32", "fastsr torch bf16": "bf16"}


def missing(impl: str) -> str | None:
    """Why ``impl`` cannot run here (None if it can)."""
    precision = PEERS[impl][1] if impl in PEERS else FASTSR.get(impl)
    for module in (PEERS[impl][0], "onnx") if impl in PEERS else ():  # onnx: the peers read fastsr's export
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install \"fastsr[bench]\")"
    if precision == "bf16" and cpu_bf16_isa() is None:
        return "this CPU has no native bf16 (neither AVX512-BF16 nor AMX-BF16): the bf16 cases need it"
    return None


def precision_of(impl: str) -> str:
    return PEERS[impl][1] if impl in PEERS else FASTSR[impl]


def threads() -> int:
    return torch.get_num_threads()


def onnx_file(model: torch.nn.Module, scale: int, folder: Path) -> Path:
    path = folder / f"{model.config.arch}-x{scale}-{id(model)}.onnx"
    if not path.exists():
        export_onnx(model, path, scale=scale)
    return path


def build(impl: str, model: torch.nn.Module, scale: int, shape: tuple[int, ...] | None, folder: Path) -> Runner:
    """A runner of ``impl`` for inputs of ``shape`` (N, C, H, W; None: any shape, where the peer must then
    handle dynamic shapes): numpy float32 in, numpy float32 out."""
    if impl in FASTSR:
        engine = fastsr.optimize(model, backend="torch", precision=FASTSR[impl])
        args = (scale,) if engine.multi_scale else ()

        def run_fastsr(x: np.ndarray) -> np.ndarray:
            return engine(torch.from_numpy(x), *args).numpy()

        return run_fastsr
    path = str(onnx_file(model, scale, folder))
    n = threads()
    if impl == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x})[0]
    if impl.startswith("openvino"):
        import openvino as ov

        core = ov.Core()
        net = core.read_model(path)
        if shape is not None:
            net.reshape({"image": list(shape)})
        compiled = core.compile_model(net, "CPU", {
            "INFERENCE_PRECISION_HINT": impl.split()[-1],
            "INFERENCE_NUM_THREADS": n,
            "PERFORMANCE_HINT": "LATENCY",
        })
        request = compiled.create_infer_request()

        def run_ov(x: np.ndarray) -> np.ndarray:
            return request.infer({0: x})[compiled.output(0)]

        return run_ov
    if impl == "opencv dnn":
        import cv2

        cv2.setNumThreads(n)
        net = cv2.dnn.readNetFromONNX(path)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

        def run_cv(x: np.ndarray) -> np.ndarray:
            net.setInput(x)
            return net.forward()

        return run_cv
    raise ValueError(f"unknown implementation {impl!r}")


def gemm_rate(dtype: torch.dtype, size: int = 2048, seconds: float = 0.5) -> float:
    """This machine's dense matrix-multiply rate in FLOP/s (``torch.mm`` of two ``size`` squares, best of
    the repetitions that fit in ``seconds`` after a warm-up): the practical peak a conv can approach."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() > end:
            break
    return 2 * size**3 / best
