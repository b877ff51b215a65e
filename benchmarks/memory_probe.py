"""Peak activation memory of one forward pass, measured in a fresh process (run as a script).

``python benchmarks/memory_probe.py IMPL PRESET SIZE`` prints a JSON line with the process's resident-set
growth from just before the forward pass to its peak: the memory the pass needed beyond the loaded model.
IMPL is ``reference`` or ``engine`` (fastsr's torch backend). The peak is VmHWM after resetting it through
``/proc/self/clear_refs`` (Linux): ``ru_maxrss`` would also count the parent's pages at fork time.
"""

from __future__ import annotations

import json
import sys

import torch

import fastsr
from fastsr.models import MDSR, create


def status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))  # reported in kB


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def main(impl: str, preset: str, size: int) -> dict:
    torch.manual_seed(0)
    model = create(preset).eval()
    scale = model.config.scales[-1]
    net = fastsr.optimize(model) if impl == "engine" else model
    x = torch.rand(1, 3, size, size) * 255
    with torch.inference_mode():
        net(torch.rand(1, 3, 8, 8) * 255, *([scale] if isinstance(model, MDSR) else []))  # warm-up: lazy init
    reset_peak()
    before = status_bytes("VmRSS:")
    with torch.inference_mode():
        y = net(x, scale) if isinstance(model, MDSR) else net(x)
    peak = status_bytes("VmHWM:")
    return {"impl": impl, "preset": preset, "size": size, "peak_bytes": peak - before,
            "output_bytes": y.numel() * y.element_size()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
