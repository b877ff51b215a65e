"""The GPU session's one command (benchmarks/gpu.sh -> benchmarks/gpu_run.py) cannot rot unseen: its dry run
collects every step's tests on this CPU-only machine, and the plan fits its 9.5-minute budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_plan_dry_run_collects_every_step(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_run.py"), "--dry-run", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["parity", "kernels", "latency", "compile", "autotune", "video"], proc.stdout
    assert summary["plan_timeout_s"] <= 570  # 9.5 minutes of a 15-minute GPU allowance (start and install too)
    assert steps["video"]["timeout_s"] <= 90
    for name, step in steps.items():
        assert step["status"] == "passed", (name, step)
        assert step["collected"] > 0, (name, step)
    assert summary["machine"]["torch"] and summary["dry_run"] is True


# Stands in for `python` on gpu.sh's PATH: records each call (the TRITON_INTERPRET it sees, then its arguments,
# tab-separated) and succeeds, so the script runs end to end here without installing or running anything.
FAKE_PYTHON = r"""#!/usr/bin/env bash
printf '%s' "${TRITON_INTERPRET-unset}" >>"$FASTSR_CALLS"
printf '\t%s' "$@" >>"$FASTSR_CALLS"
printf '\n' >>"$FASTSR_CALLS"
"""


def test_gpu_script_installs_offline_then_runs_the_plan(tmp_path):
    """Run benchmarks/gpu.sh with a recording `python`: the calls it makes, in order, and what they mean."""
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    for name, text in (("python", FAKE_PYTHON), ("nvidia-smi", "#!/bin/sh\necho no GPU here\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls_file = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FASTSR_CALLS": str(calls_file),
           "TRITON_INTERPRET": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    calls = [line.split("\t") for line in calls_file.read_text().splitlines()]
    # Every step runs on the GPU, not in the Triton interpreter CI's environment may have set.
    assert [c[0] for c in calls] == ["unset"] * 3, calls
    install, check_import, plan = (c[1:] for c in calls)
    # The GPU image has no network, its bare `pip` is another interpreter's, and without --use-pep517 that pip
    # falls back to `setup.py develop`, which tries to download build dependencies (all three seen on an H200):
    # `python -m pip install --no-deps --no-build-isolation --use-pep517 -e .` (in any order; nothing else).
    assert install[:3] == ["-m", "pip", "install"], install
    flags, rest = sorted(a for a in install[3:] if a not in ("-e", ".")), [a for a in install[3:] if a in ("-e", ".")]
    assert flags == ["--no-build-isolation", "--no-deps", "--use-pep517"] and rest == ["-e", "."], install
    assert install[install.index("-e") + 1] == ".", install
    assert check_import == ["-c", "import fastsr.kernels"], check_import
    # The plan: the script that test_gpu_plan_dry_run_collects_every_step checks, into the given folder.
    assert plan == ["benchmarks/gpu_run.py", str(out)] and (ROOT / plan[0]).is_file(), plan
