"""Ray's cost per image (issue 12): a folder of N 256x256 images upscaled by the plain single-process CLI
(``fastsr upscale DIR -o OUT``, in this process) and by :func:`fastsr.distributed.upscale_dataset` with 1 and
2 CPU workers on a local Ray instance (started once, untimed), with the bundled default model at x4.

Every case first checks that its outputs are the CLI's, byte for byte, so CI's quick mode
(``--benchmark-disable``: 4 images of 64x64, nothing timed) still runs every path.

Timing (full mode): each case runs on ``N_SMALL`` and on ``N`` images (fresh output folders). The slope,
``(t(N) - t(N_SMALL)) / (N - N_SMALL)``, is the marginal cost of an image; the intercept is the fixed cost of
a call (Ray: connecting, starting the workers, loading the model in each; CLI: loading the model). Ray's
overhead per image is the Ray case's slope minus the CLI's, and ``overhead_ratio`` is that over the CLI's
slope (the model's time per image, with decoding and encoding). On a 2-core machine two workers split the
same cores, so no speed-up is expected: the figures measure overhead. With a GPU, the Ray cases run one
worker per GPU (``gpus_per_worker=1``), and k workers would be extrapolated as k times one worker's rate.

Results: the summary table, ``benchmarks/results/latest-<cpu|gpu>.json`` (conftest) and
``benchmarks/results/distributed-<cpu|gpu>.json`` (this file's cases only).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsr.cli import main
from fastsr.example import example_image

CUDA = torch.cuda.is_available()
SCALE = 4
FULL = {"side": 256, "n_small": 4, "n": 36}
QUICK = {"side": 64, "n_small": 4, "n": 4}
GPUS = torch.cuda.device_count() if CUDA else 0
# (name, num_workers); CPU workers share this machine's cores, GPU workers get a GPU each.
CASES = [("cli", 0), ("ray, 1 worker", 1)] + ([("ray, 2 workers", 2)] if not CUDA or GPUS >= 2 else [])
_TIMES: dict[str, dict[int, float]] = {}


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def sizes(request):
    return QUICK if request.config.getoption("benchmark_disable", False) else FULL


@pytest.fixture(scope="module")
def folders(tmp_path_factory, sizes):
    """Two folders of test-card images (each with its own seeded noise): N_SMALL and N images."""
    root = tmp_path_factory.mktemp("dataset")
    base = example_image(sizes["side"], sizes["side"]).astype(np.int16)
    rng = np.random.default_rng(0)
    out = {}
    for n in sorted({sizes["n_small"], sizes["n"]}):
        d = root / f"n{n}"
        d.mkdir()
        for i in range(n):
            noisy = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(d / f"img{i:03d}.png")
        out[n] = d
    return out


def run(case: str, workers: int, src: Path, out: Path) -> float:
    start = time.perf_counter()
    if workers == 0:
        argv = ["upscale", str(src), "-s", str(SCALE), "-o", str(out)]
        assert main(argv) == 0
    else:
        from fastsr.distributed import upscale_dataset

        summary = upscale_dataset(src, out, SCALE, num_workers=workers, gpus_per_worker=1 if CUDA else 0,
                                  progress=False)
        assert (summary.done, summary.failed) == (len(list(src.iterdir())), 0), summary
    return time.perf_counter() - start


@pytest.mark.parametrize("case,workers", CASES, ids=[c[0] for c in CASES])
def test_images_per_second(case, workers, ray_instance, folders, sizes, tmp_path, record, request):
    quick = request.config.getoption("benchmark_disable", False)
    times = _TIMES.setdefault(case, {})
    for n in sorted({sizes["n_small"], sizes["n"]}):
        out = tmp_path / f"out{n}"
        times[n] = run(case, workers, folders[n], out)
        reference = folders[n].parent / f"cli-out{n}"
        if workers == 0:
            out.rename(reference)
        elif reference.is_dir():  # the same files as the CLI's
            for p in sorted(reference.iterdir()):
                assert (out / p.name).read_bytes() == p.read_bytes(), p.name
    if quick:
        return
    n0, n = sizes["n_small"], sizes["n"]
    slope = (times[n] - times[n0]) / (n - n0)
    fixed = times[n0] - n0 * slope
    device = "cuda" if CUDA else f"CPU, {os.cpu_count()} cores"
    group = f"upscale {n} images {sizes['side']}x{sizes['side']} x{SCALE}, default model, {device}"
    row = {"group": group, "name": case, "median_s": times[n] / n, "images_per_s": n / times[n],
           "marginal_s_per_image": slope, "fixed_s": fixed, "workers": workers, "baseline": workers == 0}
    cli = _TIMES.get("cli", {})
    if workers and n in cli and n0 in cli:
        cli_slope = (cli[n] - cli[n0]) / (n - n0)
        row["overhead_s_per_image"] = slope - cli_slope
        row["overhead_ratio"] = (slope - cli_slope) / cli_slope  # Ray's cost per image over the model's
        row["cli_marginal_s_per_image"] = cli_slope
    record(**row)
    _write_results(row)


def _write_results(row: dict) -> None:
    from conftest import RESULTS_DIR, machine

    path = RESULTS_DIR / f"distributed-{'gpu' if CUDA else 'cpu'}.json"
    data = {"machine": machine(), "results": []}
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("machine", {}).get("date") == data["machine"]["date"]:
            data["results"] = [r for r in previous.get("results", []) if r["name"] != row["name"]]
    data["results"].append(row)
    RESULTS_DIR.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
