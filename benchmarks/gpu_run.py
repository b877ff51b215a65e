"""Everything a GPU session should prove and measure, in one run: ``bash benchmarks/gpu.sh OUTDIR``.

The steps, in order, each a subprocess with its own time limit (570 s in all: 9.5 minutes of a 15-minute
GPU allowance, leaving time for the machine's start and the install):

1. ``parity``  -- the GPU parity tests (``pytest -m gpu tests``): Triton kernels and engine against the
   reference, fp32 / fp16 / bf16, banded x4 at 1080p, int64 offsets;
2. ``kernels`` -- the kernel micro-benchmarks (fastsr's conv vs cuDNN on the body convs' shapes);
3. ``latency`` -- end-to-end latency (reference eager / channels_last fp16 vs fastsr) and
   GPU peak memory;
4. ``compile`` -- torch.compile of the reference (its own step: compile times vary the most);
5. ``autotune`` -- the per-op backend choice and its tuning cost, where the engine has one;
6. ``video`` -- video frames/s at 1280x720 x2 (fastsr.upscale_video vs the model alone vs a cv2 loop) and
   upscale_video's host memory on a 600- vs a 60-frame clip.

Fail-soft: a step that fails or runs out of time is recorded with its status, and the next one still runs.
OUTDIR receives ``summary.json`` (device, versions, date, each step's command, status, seconds and the
files it wrote), one log per step, and the JSON results of the benchmark steps. ``--dry-run`` (no GPU
needed; CI runs it) checks the plan instead: every test file exists and pytest collects tests from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    what: str
    targets: list[str]  # pytest paths, relative to the repository root
    args: list[str]  # further pytest arguments ({out} is replaced by OUTDIR)
    timeout_s: int
    results: list[str] = field(default_factory=list)  # files the step writes (copied into OUTDIR)


# Time limits: 570 s in all (the first five 480 s, then the video step's 90 s), so a run fits a 15-minute
# allowance with the machine's start and the install. torch.compile has its own step: its compile times are the
# least predictable, and a timeout there must not lose the other figures. The video step comes last and writes
# benchmarks/results/video-gpu.json after each of its tests, so a timeout keeps what it measured.
PLAN = [
    Step("parity", "GPU parity tests: kernels and engine against the reference", ["tests"],
         ["-m", "gpu", "-q", "-x", "--junitxml={out}/parity.xml"], 120),
    Step("kernels", "kernel micro-benchmarks: fastsr conv vs cuDNN", ["benchmarks/test_kernels_gpu.py"],
         ["-q", "--benchmark-json={out}/kernels-benchmark.json"], 60, ["benchmarks/results/latest-gpu.json"]),
    Step("latency", "end-to-end latency (without torch.compile) and GPU peak memory",
         ["benchmarks/test_latency.py", "benchmarks/test_memory.py"],
         ["-q", "-k", "not compile", "--benchmark-json={out}/latency-benchmark.json"], 135,
         ["benchmarks/results/latest-gpu.json"]),
    Step("compile", "end-to-end latency of torch.compile(reference)", ["benchmarks/test_latency.py"],
         ["-q", "-k", "compile", "--benchmark-json={out}/compile-benchmark.json"], 105,
         ["benchmarks/results/latest-gpu.json"]),
    Step("autotune", "per-op backend choice (Triton configs vs cuDNN) and its tuning cost",
         ["benchmarks/test_autotune_gpu.py"], ["-q", "--benchmark-json={out}/autotune-benchmark.json"], 60),
    Step("video", "video frames/s at 1280x720 x2 (upscale_video, model alone, cv2 loop) and its flat memory",
         ["benchmarks/test_video.py"], ["-q", "--benchmark-json={out}/video-benchmark.json"], 90,
         ["benchmarks/results/video-gpu.json", "benchmarks/results/latest-gpu.json"]),
]


def machine() -> dict:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": version("torch"), "triton": version("triton"),
            "fastsr": version("fastsr"), "device": None, "cuda": None}
    try:
        import torch

        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except Exception as e:  # noqa: BLE001 - the summary records what it could not find
        info["device_error"] = f"{type(e).__name__}: {e}"
    return info


def command(step: Step, out: Path, collect_only: bool) -> list[str]:
    args = [a.replace("{out}", str(out)) for a in step.args]
    if collect_only:  # the dry run: collection only, and no files written
        args = [a for a in args if not a.startswith(("--junitxml", "--benchmark-json"))] + ["--collect-only"]
        args = [a for a in args if a != "-x"]
    return [sys.executable, "-m", "pytest", *step.targets, *args, "-p", "no:cacheprovider"]


def run_step(step: Step, out: Path, dry_run: bool) -> dict:
    record = {"name": step.name, "what": step.what, "timeout_s": step.timeout_s}
    missing = [t for t in step.targets if not (ROOT / t).exists()]
    if missing:
        record.update(status="missing", detail=f"not in this checkout: {', '.join(missing)}", seconds=0.0)
        return record
    cmd = command(step, out, dry_run)
    record["command"] = " ".join(cmd[1:])
    log = out / f"{step.name}.log"
    start = time.perf_counter()
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=step.timeout_s,
                                  check=False)
        code = proc.returncode
        # pytest: 0 passed, 1 some failed, 5 nothing collected (e.g. every test deselected).
        record["status"] = {0: "passed", 1: "failed", 5: "no tests"}.get(code, f"error (exit {code})")
        record["exit_code"] = code
    except subprocess.TimeoutExpired:
        record["status"] = "timed out"
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["log"] = log.name
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    record["last_line"] = tail[0][:300] if tail else ""
    if dry_run:
        text = log.read_text(errors="replace")
        record["collected"] = sum(1 for line in text.splitlines() if "::" in line)
    else:
        written = []
        for rel in step.results:
            src = ROOT / rel
            if src.exists() and src.stat().st_mtime >= time.time() - record["seconds"] - 5:  # written by this step
                shutil.copy2(src, out / f"{step.name}-{src.name}")  # each step rewrites it: keep one per step
                written.append(f"{step.name}-{src.name}")
        written += [p.name for p in out.glob(f"{step.name}*.json")] + [p.name for p in out.glob(f"{step.name}*.xml")]
        record["files"] = sorted(set(written))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", help="folder for summary.json, logs and results (created)")
    parser.add_argument("--dry-run", action="store_true", help="check the plan (collect only); no GPU needed")
    parser.add_argument("--only", help="comma-separated step names to run (default: all, in order)")
    args = parser.parse_args(argv)
    out = Path(args.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = PLAN
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {s.name for s in PLAN}
        if unknown:
            parser.error(f"unknown step(s) {sorted(unknown)}; steps: {', '.join(s.name for s in PLAN)}")
        steps = [s for s in PLAN if s.name in wanted]
    summary = {"machine": machine(), "dry_run": args.dry_run, "plan_timeout_s": sum(s.timeout_s for s in PLAN),
               "steps": []}
    if not args.dry_run and not summary["machine"]["device"]:
        summary["warning"] = "no CUDA device: the GPU tests and benchmarks skip; this run proves nothing about a GPU"
    env_note = os.environ.get("TRITON_INTERPRET")
    if env_note and not args.dry_run:
        summary["warning"] = "TRITON_INTERPRET is set: kernels run in the interpreter, not on the GPU"
    for step in steps:
        record = run_step(step, out, args.dry_run)
        summary["steps"].append(record)
        print(f"{step.name:<9} {record['status']:<12} {record.get('seconds', 0):7.1f} s  {record.get('last_line', '')}",
              flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")  # after each step: a kill keeps it
    ok = all(r["status"] in ("passed",) for r in summary["steps"])
    print(f"summary: {out / 'summary.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
