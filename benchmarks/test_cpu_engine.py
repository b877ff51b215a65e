"""CPU: latency of the reference vs fastsr's torch backend, and peak activation memory (subprocess RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastsr
from fastsr.models import create

PROBE = Path(__file__).parent / "memory_probe.py"
GROUP = "edsr-baseline-x2, 1x3x128x128, fp32, CPU"


@pytest.fixture(scope="module")
def model_and_input():
    torch.manual_seed(0)
    return create("edsr-baseline-x2").eval(), torch.rand(1, 3, 128, 128) * 255


@pytest.mark.parametrize("impl", ["reference", "reference channels_last", "fastsr torch backend"])
def test_latency_edsr_baseline_x2_128(benchmark, model_and_input, impl):
    model, x = model_and_input
    if impl == "reference":
        net, inp = model, x
    elif impl == "reference channels_last":
        net, inp = create("edsr-baseline-x2").eval(), x.contiguous(memory_format=torch.channels_last)
        net.load_state_dict(model.state_dict())
        net = net.to(memory_format=torch.channels_last)
    else:
        net, inp = fastsr.optimize(model), x
    benchmark.group = GROUP
    benchmark.extra_info["baseline"] = impl == "reference"
    with torch.inference_mode():
        ref = model(x)
        out = benchmark.pedantic(net, args=(inp,), rounds=7, iterations=1, warmup_rounds=2)
    torch.testing.assert_close(out.float(), ref, atol=2e-3, rtol=0)


@pytest.mark.parametrize("preset", ["edsr-baseline-x2", "edsr-baseline-x4"])
def test_peak_activation_memory_512(preset, record):
    """The engine needs at most half the reference's activation memory on a 512x512 input (measured)."""
    peaks = {}
    for impl in ("reference", "engine"):
        out = subprocess.run([sys.executable, str(PROBE), impl, preset, "512"], capture_output=True, text=True, check=True)
        peaks[impl] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
        record(group=f"{preset}, 1x3x512x512, fp32, CPU, peak RSS growth during forward", name=impl,
               peak_bytes=peaks[impl], baseline=impl == "reference")
    assert peaks["engine"] <= 0.5 * peaks["reference"], peaks
