"""The GPU session's one command (benchmarks/gpu.sh -> benchmarks/gpu_run.py) cannot rot unseen: its dry run
collects every step's tests on this CPU-only machine, and the plan fits the 8-minute budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_plan_dry_run_collects_every_step(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_run.py"), "--dry-run", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["parity", "kernels", "latency", "compile", "autotune"], proc.stdout
    assert summary["plan_timeout_s"] <= 480  # 8 minutes of a 15-minute GPU allowance
    for name in ("parity", "kernels", "latency", "compile"):
        assert steps[name]["status"] == "passed", (name, steps[name])
        assert steps[name]["collected"] > 0, (name, steps[name])
    # The autotune benchmark exists once the engine chooses backends per op; until then the plan says so.
    autotune = steps["autotune"]
    exists = (ROOT / "benchmarks" / "test_autotune_gpu.py").exists()
    assert autotune["status"] == ("passed" if exists else "missing"), autotune
    assert summary["machine"]["torch"] and summary["dry_run"] is True


def test_gpu_script_installs_offline_and_runs_the_plan():
    script = (ROOT / "benchmarks" / "gpu.sh").read_text()
    # The GPU image has no network, its bare `pip` is another interpreter's, and without --use-pep517 that pip
    # falls back to `setup.py develop`, which tries to download build dependencies (all three seen on an H200).
    assert "python -m pip install --no-deps --no-build-isolation --use-pep517 -e ." in script
    assert "python benchmarks/gpu_run.py" in script and "unset TRITON_INTERPRET" in script
