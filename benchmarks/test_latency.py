"""End-to-end latency: the reference (eager, channels_last, torch.compile), fastsr's backends, and the
batch-norm baseline as trained (BN live) and folded by the engine. Every case first checks that its output
agrees with the reference, so ``--benchmark-disable`` (CI's quick mode) still tests every path.

CPU: 128x128 inputs (EDSR x4: 32x32), fp32. GPU: 480x270 -> 1080p at x4 and 640x360 at x2, batch 1, plus
a batch-8 throughput case; fp16 for the engine, timed with CUDA events after warm-up.
"""

from __future__ import annotations

import pytest
import torch

import fastsr
from fastsr.models import MDSR, create

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

# (preset, scale for MDSR, input H x W, batch) per device.
CPU_CASES = [("edsr-baseline-x2", None, (128, 128), 1), ("edsr-baseline-x4", None, (128, 128), 1),
             ("mdsr-baseline", 4, (128, 128), 1), ("edsr-x4", None, (32, 32), 1)]
GPU_CASES = [("edsr-baseline-x4", None, (270, 480), 1), ("edsr-baseline-x2", None, (360, 640), 1),
             ("mdsr-baseline", 4, (270, 480), 1), ("edsr-x4", None, (270, 480), 1),
             ("edsr-baseline-x4", None, (270, 480), 8)]
CASES = GPU_CASES if CUDA else CPU_CASES

IMPLS = ["reference", "reference channels_last", "torch.compile(reference)", "fastsr torch"]
if CUDA:  # the fair GPU baseline: the reference in fp16 on cuDNN's channels_last path
    IMPLS += ["reference fp16 channels_last", "fastsr auto", "fastsr triton", "fastsr triton + CUDA graphs"]
# torch.compile takes minutes per model on 2 CPU cores: only the smallest case there.
COMPILE_CASES = {"edsr-baseline-x2"} if not CUDA else {c[0] for c in GPU_CASES}

_models: dict[str, torch.nn.Module] = {}


def reference(preset: str) -> torch.nn.Module:
    if preset not in _models:
        torch.manual_seed(0)
        model = create(preset).eval().to(DEVICE)
        for m in model.modules():  # BN baseline "as trained": non-trivial running statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        _models[preset] = model
    return _models[preset]


# fp32 on the GPU: cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32; 10-bit mantissas),
# and the NHWC and compiled paths pick other algorithms than the NCHW reference, so they differ from it by up to
# 0.068 of 255 (edsr-baseline-x2 at 360x640 on an H200, the largest seen); on the CPU only the summation order.
FP32_ATOL = 0.25 if CUDA else 2e-3


def build(impl: str, preset: str):
    """(callable(x) -> y, input dtype / memory format adjuster, tolerance on a 0-255 output)."""
    model = reference(preset)
    if impl == "reference":
        return model, lambda x: x, 0.0
    if impl == "reference channels_last":
        net = create(preset).eval().to(DEVICE).to(memory_format=torch.channels_last)
        net.load_state_dict(model.state_dict())
        return net, lambda x: x.contiguous(memory_format=torch.channels_last), FP32_ATOL
    if impl == "reference fp16 channels_last":
        net = create(preset).eval().to(DEVICE).half().to(memory_format=torch.channels_last)
        net.load_state_dict(model.state_dict())
        return net, lambda x: x.half().contiguous(memory_format=torch.channels_last), 1.5
    if impl == "torch.compile(reference)":
        return torch.compile(model), lambda x: x, FP32_ATOL
    graphs = impl.endswith("CUDA graphs")
    backend = impl.split()[1]
    precision = "fp16" if CUDA else "fp32"
    # fp16 on GPU: 11-bit mantissas through 33+ layers; fp32 on CPU: summation order only.
    net = fastsr.optimize(model, backend=backend, precision=precision, cuda_graphs=graphs)
    return net, lambda x: x, 1.5 if CUDA else 2e-3


def timed(benchmark, fn, *args):
    if CUDA:
        return benchmark.pedantic(lambda: (fn(*args), torch.cuda.synchronize())[0], rounds=20, iterations=1, warmup_rounds=3)
    return benchmark.pedantic(fn, args=args, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("preset,scale,size,batch", CASES, ids=lambda v: str(v))
def test_latency(benchmark, preset, scale, size, batch, impl):
    if impl.startswith("torch.compile") and preset not in COMPILE_CASES:
        pytest.skip("torch.compile is only timed on the smallest CPU case (compiling takes minutes here)")
    net, prep, atol = build(impl, preset)
    args = (scale,) if isinstance(reference(preset), MDSR) else ()
    x = torch.rand(batch, 3, *size, device=DEVICE) * 255
    benchmark.group = f"{preset}{'' if scale is None else f' x{scale}'}, {batch}x3x{size[0]}x{size[1]}, {DEVICE}"
    benchmark.extra_info["baseline"] = impl == "reference"
    benchmark.name = impl
    with torch.inference_mode():
        expected = reference(preset)(x, *args)
        out = timed(benchmark, net, prep(x), *args)
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=0.01 if CUDA and "fastsr" in impl else 0)


BN_PRESETS = ["edsr-bn-baseline-x2"] if not CUDA else ["edsr-bn-baseline-x4"]


@pytest.mark.parametrize("impl", ["BN baseline as trained", "BN baseline folded by fastsr"])
@pytest.mark.parametrize("preset", BN_PRESETS)
def test_bn_baseline_latency(benchmark, preset, impl):
    model = reference(preset)
    net = model if impl.endswith("trained") else fastsr.optimize(model, precision="fp32" if not CUDA else None)
    size = (270, 480) if CUDA else (128, 128)
    x = torch.rand(1, 3, *size, device=DEVICE) * 255
    benchmark.group = f"{preset} (batch norm), 1x3x{size[0]}x{size[1]}, {DEVICE}"
    benchmark.extra_info["baseline"] = impl.endswith("trained")
    benchmark.name = impl
    with torch.inference_mode():
        expected = model(x)
        out = timed(benchmark, net, x)
    torch.testing.assert_close(out.float(), expected, atol=1.5 if CUDA else 2e-3, rtol=0.01 if CUDA else 0)
