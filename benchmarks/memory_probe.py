"""Peak activation memory of one forward pass, measured in a fresh process (run as a script).

``python benchmarks/memory_probe.py IMPL PRESET SIZE`` prints a JSON line with the process's resident-set
growth from just before the forward pass to its peak: the memory the pass needed beyond the loaded model.
IMPL is ``reference``, ``engine`` (fastsr's torch backend in fp32), or an implementation of ``peers.py``
(``fastsr torch bf16``, ``onnxruntime``, ``openvino f32``, ...). Every IMPL is built and warmed up on an
8x8 input first (lazy initialisation, weight packing), so only the forward's own memory is counted. The peak
is VmHWM after resetting it through ``/proc/self/clear_refs`` (Linux): ``ru_maxrss`` would also count the
parent's pages at fork time.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import fastsr
from fastsr.models import MDSR, create


def status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))  # reported in kB


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def runner(impl: str, model: torch.nn.Module, scale: int, folder: Path):
    """numpy NCHW float32 -> output, for any input size."""
    if impl in ("reference", "engine"):
        net = fastsr.optimize(model, precision="fp32") if impl == "engine" else model
        args = (scale,) if isinstance(model, MDSR) else ()

        def run(x: np.ndarray):
            with torch.inference_mode():
                return net(torch.from_numpy(x), *args)

        return run
    from peers import build  # beside this script

    return build(impl, model, scale, None, folder)


def main(impl: str, preset: str, size: int) -> dict:
    torch.manual_seed(0)
    model = create(preset).eval()
    scale = model.config.scales[-1]
    x = (torch.rand(1, 3, size, size) * 255).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        run = runner(impl, model, scale, Path(tmp))
        run((torch.rand(1, 3, 8, 8) * 255).numpy())  # warm-up: lazy init
        reset_peak()
        before = status_bytes("VmRSS:")
        y = run(x)
        peak = status_bytes("VmHWM:")
    return {"impl": impl, "preset": preset, "size": size, "peak_bytes": peak - before,
            "output_bytes": int(np.asarray(y).nbytes)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
