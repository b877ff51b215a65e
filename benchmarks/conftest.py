"""Shared benchmark plumbing: results are written as JSON under benchmarks/results/ with the machine and
library versions, and the terminal summary prints each case's speed relative to the reference."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import pytest
import torch

RESULTS_DIR = Path(__file__).parent / "results"
_RECORDS: list[dict] = []


def machine() -> dict:
    from fastsr.system import package_version

    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({cpu_name()}), {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "fastsr": package_version("fastsr"),
        "python": platform.python_version(),
        # The CPU peers of benchmarks/test_cpu_peers.py.
        "onnxruntime": package_version("onnxruntime"),
        "openvino": package_version("openvino"),
        "opencv": (package_version("opencv-contrib-python-headless") or package_version("opencv-python-headless")
                   or package_version("opencv-python")),
        "cpu bf16": _cpu_bf16(),
    }


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _cpu_bf16() -> str | None:
    from fastsr.system import cpu_bf16_isa

    return cpu_bf16_isa()


@pytest.fixture
def record():
    """record(group=..., name=..., **values): keep a result for the JSON file and the summary."""
    def add(**values):
        _RECORDS.append(values)
    return add


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bench = getattr(config, "_benchmarksession", None)
    rows = list(_RECORDS)
    if bench is not None and not bench.disabled:
        for b in bench.benchmarks:
            if b.stats is None or not b.stats.rounds:
                continue
            rows.append({"group": b.group, "name": b.name, "median_s": b.stats.median,
                         "p20_s": _quantile(b.stats.data, 0.2), "p80_s": _quantile(b.stats.data, 0.8),
                         **(b.extra_info or {})})
    if not rows:
        return
    tr = terminalreporter
    tr.section("fastsr benchmark summary")
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    for group, items in by_group.items():
        tr.write_line(group)
        base = next((i for i in items if i.get("baseline")), None)
        for i in items:
            line = f"  {i['name']:<40}"
            if "median_s" in i:
                line += f" median {i['median_s'] * 1e3:9.2f} ms"
                if base and "median_s" in base:
                    line += f"  ({base['median_s'] / i['median_s']:.2f}x the speed of {base['name']})"
            if "gflops" in i:
                line += f"  {i['gflops']:8.1f} GFLOP/s"
                if "gemm_fraction" in i:
                    line += f" ({i['gemm_fraction']:.0%} of {i.get('precision', '')} GEMM)"
            if "skipped" in i:
                line += f" skipped: {i['skipped']}"
            if "peak_bytes" in i:
                line += f" peak {i['peak_bytes'] / 2**20:8.1f} MiB"
                if base and "peak_bytes" in base:
                    line += f"  ({i['peak_bytes'] / base['peak_bytes']:.2f} of {base['name']})"
            tr.write_line(line)
    if bench is None or bench.disabled:
        tr.write_line("timing disabled (quick mode): results not written")
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    out = RESULTS_DIR / f"latest-{kind}.json"
    out.write_text(json.dumps({"machine": machine(), "results": rows}, indent=2) + "\n")
    tr.write_line(f"results written to {out}")


def _quantile(data, q):
    s = sorted(data)
    return s[min(len(s) - 1, int(q * len(s)))]
