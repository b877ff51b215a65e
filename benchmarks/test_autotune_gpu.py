"""GPU: the auto backend's per-op choice (Triton tile configs vs cuDNN) -- what it chose, what tuning cost on
a cold cache, and the end-to-end latency of auto against the kernels alone (triton) and cuDNN alone (torch),
fp16, batch 1. Skipped without CUDA (benchmarks/gpu.sh runs it)."""

from __future__ import annotations

import time

import pytest
import torch

import fastsr
from fastsr.models import create

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CASES = [("edsr-baseline-x4", (270, 480)), ("edsr-baseline-x2", (360, 640)), ("edsr-x4", (270, 480))]


@pytest.mark.parametrize("preset,size", CASES, ids=lambda v: str(v))
def test_auto_choice_cost_and_latency(preset, size, tmp_path, monkeypatch, record):
    from triton.testing import do_bench

    monkeypatch.setenv("FASTSR_CACHE_DIR", str(tmp_path))  # a cold cache: the tuning cost is measured
    torch.manual_seed(0)
    model = create(preset).eval().cuda()
    x = torch.rand(1, 3, *size, device="cuda") * 255
    engines = {name: fastsr.optimize(model, backend=name, precision="fp16") for name in ("auto", "triton", "torch")}
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        first = engines["auto"](x)
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - start
    report = engines["auto"].autotune_report()
    group = f"{preset} fp16, 1x3x{size[0]}x{size[1]}: auto backend"
    with torch.no_grad():
        ref = engines["torch"](x)
        torch.testing.assert_close(first, ref, atol=1.5, rtol=0.01)
        for name, engine in engines.items():
            p50, p20, p80 = do_bench(lambda engine=engine: engine(x), quantiles=[0.5, 0.2, 0.8])
            extra = {}
            if name == "auto":
                extra = {"tuning_seconds": report["tuning_seconds"], "tuned_ops": report["tuned_ops"],
                         "first_call_s": first_call_s,
                         "choices": {k: v["choice"] for k, v in report["choices"].items()}}
            record(group=group, name=f"fastsr {name}", median_s=p50 * 1e-3, p20_s=p20 * 1e-3, p80_s=p80 * 1e-3,
                   baseline=name == "torch", **extra)
