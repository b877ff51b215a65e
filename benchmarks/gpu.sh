#!/usr/bin/env bash
# The GPU session's one command: install this checkout without network, then prove and measure everything
# (benchmarks/gpu_run.py: parity tests, kernel micro-benchmarks, end-to-end latency and memory, autotune).
# Usage: bash benchmarks/gpu.sh OUTDIR   (then commit OUTDIR's summary.json and results)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-results}"
mkdir -p "$out"
unset TRITON_INTERPRET
# `python -m pip`: a bare `pip` can belong to another interpreter than `python` (it did on the H200 image, and
# fastsr.kernels, which only an install maps onto kernels/, was then missing from every step).
python -m pip install --no-deps --no-build-isolation --use-pep517 -e . >"$out/install.log" 2>&1 || echo "install failed (see $out/install.log); running from the checkout"
python -c "import fastsr.kernels" 2>>"$out/install.log" || echo "fastsr.kernels is not importable after the install (see $out/install.log): the Triton steps will fail"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
python benchmarks/gpu_run.py "$out"
