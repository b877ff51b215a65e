#!/usr/bin/env bash
# The GPU session's one command: install this checkout without network, then prove and measure everything
# (benchmarks/gpu_run.py: parity tests, kernel micro-benchmarks, end-to-end latency and memory, autotune).
# Usage: bash benchmarks/gpu.sh OUTDIR   (then commit OUTDIR's summary.json and results)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-results}"
mkdir -p "$out"
unset TRITON_INTERPRET
pip install --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || echo "install failed (see $out/install.log); running from the checkout"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
python benchmarks/gpu_run.py "$out"
