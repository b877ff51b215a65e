"""Video (issue 21): frames per second of three ways to upscale a clip with the DEFAULT model (the bundled
MDSR-baseline weights) at x2, side by side in one run, and the peak memory of ``fastsr.upscale_video`` on a
long clip against a short one.

1. ``fastsr video``: ``fastsr.upscale_video(clip, out, 2, codec="libx264")`` (decoder, model and encoder
   overlapped, the AAC track stream-copied);
2. ``model alone``: the same frames decoded first (``fastsr.video.read_frames``, outside the timing), then
   ``Upscaler(None).upscale_batch(batch, 2)`` over them in batches of ``BATCH`` (the video path's calls):
   the time the model needs, so ``overhead_ratio`` (video time over model time, minus 1; goal <= 5 %,
   recorded, not asserted) is what decoding, colour conversion, encoding and muxing add;
3. ``cv2 loop``: what a user writes today: ``cv2.VideoCapture`` -> ``fastsr.upscale`` frame by frame ->
   ``cv2.VideoWriter`` (mp4v), which drops the sound.

The clip is made here with PyAV: smooth moving colour gradients plus a scrolling noise texture (so x264 has
real work), 25 fps, a keyframe every 2 s, an AAC stereo track. CPU: 640x360, ``CPU_FRAMES`` frames; GPU
(CUDA): 1280x720, ``GPU_FRAMES`` frames. Both ``fastsr video`` and ``model alone`` prepare one Upscaler per
run (``upscale_video(model=None)`` does); ``cv2 loop`` one per frame (``fastsr.upscale`` does). Timing: every
implementation first runs once on a 4-frame clip of the same size (warm-up: oneDNN / cuDNN / Triton for these
shapes), then ``CPU_ROUNDS`` / ``GPU_ROUNDS`` interleaved rounds (each: model alone and cv2 loop, in
alternating order, then fastsr video); medians over rounds, and the fastest round of each (``*_fastest_round``:
on a shared machine, the one least disturbed by other jobs).

Checked on every run (so CI's quick mode, ``--benchmark-disable``, tests every path): each output has the
input's frame count, fastsr's output keeps the audio track and the cv2 loop's has none (``audio_kept``), and
fastsr's x264 frames are within ``MIN_PSNR_DB`` (quick: ``QUICK_MIN_PSNR_DB``) of the model's own output on
the decoded frames. Quick mode (a 64x36, 6-frame clip and a tiny random model) also checks that with ffv1
fastsr's frames ARE the model's.

Memory: ``upscale_video`` on a 600-frame clip and on a 60-frame one at 160x90 (quick: 300 and 30 at 64x36),
each in a fresh process, and asserted flat (see ``test_video_memory_is_flat``).

Results: the summary table, the ``--benchmark-json`` file (fastsr video's rounds, every figure in its
``extra_info``) and ``benchmarks/results/video-<cpu|gpu>.json`` (this file's cases only, written after each
test, so a run cut short by a time limit keeps what it measured).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsr

av = pytest.importorskip("av", reason='fastsr.upscale_video needs PyAV (pip install "fastsr[video]")')
cv2 = pytest.importorskip("cv2", reason="the cv2 loop needs OpenCV (pip install opencv-python-headless)")

from fastsr.video import read_frames  # noqa: E402 - after the PyAV check

CUDA = torch.cuda.is_available()
SCALE = 2
BATCH = 4  # upscale_video's default batch: the model alone gets the same engine calls
FPS = 25
CPU_SIZE, CPU_FRAMES, CPU_ROUNDS = (640, 360), 8, 3  # 8 frames: two batches, ~2 s a frame here (2 cores, bf16)
GPU_SIZE, GPU_FRAMES, GPU_ROUNDS = (1280, 720), 64, 2  # sized (not yet run) for the GPU plan's 90 s step
QUICK_SIZE, QUICK_FRAMES = (64, 36), 6
WARM_FRAMES = 4
# x264 at CRF 18 against the model's own output on the same decoded frames: the 4:2:0 round trip and x264's
# loss. Measured: 39.4 dB (default model, 640x360); 28.6 dB (quick mode's tiny random model at 64x36:
# its output is chroma-rich noise, which 4:2:0 costs most; tests/test_video.py sees the same; the exact ffv1
# check is quick mode's strict one). Frames out of order or from another clip fall below: the noise texture
# moves by (2, 3) pixels a frame: 26.7 dB between neighbouring input frames at 640x360.
MIN_PSNR_DB, QUICK_MIN_PSNR_DB = 33.0, 25.0
# Memory: (short, long) clip lengths and the frame size, full and quick mode.
MEMORY_FRAMES, MEMORY_SIZE = (60, 600), (160, 90)  # here (2 cores): ~1 min tiny model, ~3 min default
QUICK_MEMORY_FRAMES, QUICK_MEMORY_SIZE = (30, 300), (64, 36)


# ------------------------------------------------------------------------------------------- helpers


def tiny_model():
    """The quick mode's model: EDSR, 1 residual block of 8 features, random weights (seeded)."""
    from fastsr.models.config import EDSRConfig
    from fastsr.models.networks import build

    torch.manual_seed(0)
    return build(EDSRConfig(n_resblocks=1, n_feats=8, scale=SCALE))


def make_clip(path: Path, w: int, h: int, n: int, *, seed: int = 0) -> Path:
    """An H.264 (x264, CRF 18) clip with an AAC stereo track: moving sinusoidal colour gradients (a
    different speed and direction per channel) plus a noise texture scrolling by (3, 2) pixels a frame."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 10, (h, w, 3)).astype(np.float32)
    x, y = np.linspace(0, 1, w, dtype=np.float32), np.linspace(0, 1, h, dtype=np.float32)[:, None]
    tb = Fraction(1, FPS)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS, options={"crf": "18", "g": str(2 * FPS), "keyint_min": str(2 * FPS)})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.colorspace = v.codec_context.color_primaries = v.codec_context.color_trc = 1  # BT.709
        v.codec_context.color_range = 1
        a = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(n):
            t = i / FPS
            r = 128 + 90 * np.sin(2 * np.pi * (1.5 * x + 0.3 * y + 0.4 * t))
            g = 128 + 90 * np.sin(2 * np.pi * (1.2 * y - 0.5 * x - 0.3 * t))
            b = 128 + 80 * np.sin(2 * np.pi * (x + y + 0.25 * t)) * np.cos(2 * np.pi * (0.5 * x - 0.2 * t))
            img = np.stack(np.broadcast_arrays(r, g, b), axis=-1) + np.roll(noise, (2 * i, 3 * i), axis=(0, 1))
            f = av.VideoFrame.from_ndarray(img.clip(0, 255).astype(np.uint8), format="rgb24")
            f = f.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
            f.pts, f.time_base = i, tb
            out.mux(v.encode(f))
        out.mux(v.encode())
        samples = int(n / FPS * 48000)
        for k in range(0, samples, 1024):
            s = np.arange(k, k + 1024) / 48000
            pcm = np.stack([0.2 * np.sin(2 * np.pi * 440 * s), 0.2 * np.sin(2 * np.pi * 660 * s)]).astype(np.float32)
            af = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, k
            out.mux(a.encode(af))
        out.mux(a.encode())
    return path


def probe(path: Path) -> dict:
    """Frame count (decoded), frame size and whether there is an audio stream."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        size, n = None, 0
        for frame in c.decode(v):
            size, n = (frame.width, frame.height), n + 1
        return {"frames": n, "size": size, "audio": len(c.streams.audio) > 0}


def psnr(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mse = np.mean([np.mean((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b)])
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def fastsr_video(src: Path, dst: Path, model) -> None:
    fastsr.upscale_video(src, dst, SCALE, model=model, codec="libx264", batch=BATCH, overwrite=True, progress=False)


def model_alone(frames: list[np.ndarray], model) -> list[np.ndarray]:
    up = model if isinstance(model, fastsr.Upscaler) else fastsr.Upscaler(model)
    out: list[np.ndarray] = []
    for i in range(0, len(frames), BATCH):
        out.extend(up.upscale_batch(np.stack(frames[i : i + BATCH]), SCALE, max_pixels=None))
    return out


def cv2_loop(src: Path, dst: Path, model) -> None:
    """The loop a user writes today (OpenCV in, fastsr.upscale per frame, OpenCV out; no sound)."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w * SCALE, h * SCALE))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = fastsr.upscale(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), SCALE, model=model)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        cap.release()
        writer.release()


def bench_conftest():
    """benchmarks/conftest.py as a module, by its path: a bare ``import conftest`` finds tests/conftest.py
    when one pytest run collects both folders."""
    spec = importlib.util.spec_from_file_location("fastsr_benchmarks_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quantile(data: list[float], q: float) -> float:
    """As the conftest's summary takes it: the element at q of the sorted data."""
    s = sorted(data)
    return s[min(len(s) - 1, int(q * len(s)))]


def write_results(row: dict) -> None:
    """Add ``row`` to benchmarks/results/video-<cpu|gpu>.json (replacing its earlier value today)."""
    conftest = bench_conftest()
    RESULTS_DIR, machine = conftest.RESULTS_DIR, conftest.machine

    path = RESULTS_DIR / f"video-{'gpu' if CUDA else 'cpu'}.json"
    data = {"machine": machine(), "results": []}
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("machine", {}).get("date") == data["machine"]["date"]:
            data["results"] = [r for r in previous.get("results", [])
                               if (r["group"], r["name"]) != (row["group"], row["name"])]
    data["results"].append(row)
    RESULTS_DIR.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def device_label() -> str:
    if CUDA:
        return torch.cuda.get_device_name(0)
    return f"CPU ({bench_conftest().cpu_name()}), {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------------------------- speed


def test_video_fps(benchmark, record, request, tmp_path):
    quick = request.config.getoption("benchmark_disable", False)
    (w, h), n = (QUICK_SIZE, QUICK_FRAMES) if quick else (GPU_SIZE, GPU_FRAMES) if CUDA else (CPU_SIZE, CPU_FRAMES)
    rounds = 1 if quick else GPU_ROUNDS if CUDA else CPU_ROUNDS
    model = tiny_model() if quick else None  # None: the bundled default weights
    load_before = os.getloadavg()
    clip = make_clip(tmp_path / "clip.mp4", w, h, n)
    decoded = [rgb for _, rgb in read_frames(clip)]
    outs = {"fastsr video": tmp_path / "fastsr.mp4", "cv2 loop": tmp_path / "cv2.mp4"}

    # Warm-up, untimed: every implementation once on a short clip of the same size.
    warm = make_clip(tmp_path / "warm.mp4", w, h, WARM_FRAMES, seed=1)
    fastsr_video(warm, tmp_path / "warm-fastsr.mp4", model)
    model_alone([rgb for _, rgb in read_frames(warm)], model)
    cv2_loop(warm, tmp_path / "warm-cv2.mp4", model)

    group = f"video {w}x{h} x{SCALE}, {n} frames, default model, {'cuda' if CUDA else 'cpu'}"
    benchmark.group, benchmark.name = group, "fastsr video"
    times: dict[str, list[float]] = {"model alone": [], "cv2 loop": []}
    upscaled: list[np.ndarray] = []

    def others() -> None:  # pedantic's setup: run before each timed fastsr video round, timed here
        order = ["model alone", "cv2 loop"]
        for impl in order if len(times["cv2 loop"]) % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            if impl == "model alone":
                upscaled[:] = model_alone(decoded, model)
            else:
                cv2_loop(clip, outs["cv2 loop"], model)
            times[impl].append(time.perf_counter() - t)

    benchmark.pedantic(fastsr_video, args=(clip, outs["fastsr video"], model), setup=others, rounds=rounds)

    # Correctness (every mode): frame counts, sizes, sound, and fastsr's frames against the model's own.
    info = {impl: probe(path) for impl, path in outs.items()}
    for impl, i in info.items():
        assert i["frames"] == n, f"{impl}: {i['frames']} frames written, the input has {n}"
        assert i["size"] == (w * SCALE, h * SCALE), f"{impl}: output size {i['size']}"
    assert len(upscaled) == n and upscaled[0].shape == (h * SCALE, w * SCALE, 3)
    assert info["fastsr video"]["audio"], "fastsr video dropped the audio track"
    assert not info["cv2 loop"]["audio"], "cv2.VideoWriter wrote an audio stream: this benchmark's premise changed"
    got = [rgb for _, rgb in read_frames(outs["fastsr video"])]
    quality = psnr(got, upscaled)
    assert quality >= (QUICK_MIN_PSNR_DB if quick else MIN_PSNR_DB), \
        f"fastsr video's x264 frames are {quality:.1f} dB from the model's output"
    cv2_quality = psnr([rgb for _, rgb in read_frames(outs["cv2 loop"])], upscaled)  # recorded only
    if quick:  # lossless: fastsr's frames are exactly the model's on the decoded frames
        exact = tmp_path / "fastsr.mkv"
        up = fastsr.Upscaler(model)
        fastsr.upscale_video(clip, exact, SCALE, model=up, codec="ffv1", batch=BATCH)
        lossless = [rgb for _, rgb in read_frames(exact)]
        assert len(lossless) == n
        for i, (a, b) in enumerate(zip(lossless, model_alone(decoded, up))):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {i}: ffv1 output differs from the model's")
        return

    # Figures: medians over the rounds; fps = frames / median seconds for the clip.
    times["fastsr video"] = list(benchmark.stats.stats.data)
    med = {impl: statistics.median(ts) for impl, ts in times.items()}
    fps = {impl: n / m for impl, m in med.items()}
    overhead = med["fastsr video"] / med["model alone"] - 1
    # The fastest round of each, too: on a shared machine the one least disturbed by other jobs.
    best = {impl: min(ts) for impl, ts in times.items()}
    overhead_best = best["fastsr video"] / best["model alone"] - 1
    common = {"frames": n, "size": [w, h], "scale": SCALE, "batch": BATCH, "rounds": rounds,
              "device": device_label(), "load_average_before": load_before, "load_average_after": os.getloadavg()}
    extra = {"fps": fps["fastsr video"], "model_alone_fps": fps["model alone"], "cv2_loop_fps": fps["cv2 loop"],
             "overhead_ratio": overhead, "overhead_ratio_fastest_rounds": overhead_best,
             "fps_fastest_round": {impl: n / b for impl, b in best.items()},
             "speedup_vs_cv2_loop": med["cv2 loop"] / med["fastsr video"],
             "audio_kept": True, "cv2_loop_audio_kept": False, "psnr_vs_model_db": quality,
             "cv2_loop_psnr_vs_model_db": cv2_quality, "model_alone_median_s": med["model alone"],
             "cv2_loop_median_s": med["cv2 loop"], "times_s": times, **common}
    benchmark.extra_info.update(extra)
    rows = {
        "model alone": {"baseline": True, "note": "decoded frames in memory, no encoding"},
        "fastsr video": {"overhead_ratio": overhead, "overhead_ratio_fastest_rounds": overhead_best,
                         "audio_kept": True, "psnr_vs_model_db": quality},
        "cv2 loop": {"audio_kept": False, "psnr_vs_model_db": cv2_quality,
                     "note": "cv2.VideoCapture -> fastsr.upscale per frame -> cv2.VideoWriter(mp4v)"},
    }
    for impl, more in rows.items():
        ts = times[impl]
        row = {"group": group, "name": impl, "median_s": med[impl], "fps": fps[impl], "min_s": best[impl],
               "fps_fastest_round": n / best[impl], "p20_s": quantile(ts, 0.2),
               "p80_s": quantile(ts, 0.8), "times_s": ts, **more, **common}
        if impl != "fastsr video":  # fastsr video's row comes from the benchmark fixture (conftest summary)
            record(**row)
        write_results(row)


# --------------------------------------------------------------------------------------------- memory

# Run in a fresh process: argv = clip, output, "tiny" | "default". Prints one JSON line.
# Peaks are VmHWM, the process's own high-water mark (a fresh one after exec). Neither getrusage(RUSAGE_CHILDREN)
# in the parent (the largest child so far: a second measurement could never read lower than the first) nor
# ru_maxrss in the child (it counts the parent's pages at fork: 1188 MiB for both clips here, pytest's) would do.
# `load_peak_bytes`: VmHWM after loading and warming up the model; VmHWM is then reset through
# /proc/self/clear_refs, so `growth_bytes` (VmHWM at the end minus VmRSS before) is what upscale_video needed.
_PROBE = r"""
import json, sys
import numpy as np, torch
import fastsr
from fastsr.models.config import EDSRConfig
from fastsr.models.networks import build

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

src, dst, which = sys.argv[1:4]
if which == "tiny":
    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2))
else:
    model = None
up = fastsr.Upscaler(model)
up.upscale_batch(np.zeros((4, 16, 16, 3), np.uint8), 2)  # warm-up: lazy initialisation outside the measurement
import av  # noqa: F401 - loaded before the measurement, as upscale_video loads it
load_peak = status("VmHWM:")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    reset = True
except OSError:
    reset = False
before = status("VmRSS:")
result = fastsr.upscale_video(src, dst, 2, model=up, codec="libx264", overwrite=True)
peak = status("VmHWM:")
print(json.dumps({"frames": result.frames, "segments": result.segments, "rss_before_bytes": before,
                  "load_peak_bytes": load_peak, "peak_bytes": peak, "growth_bytes": peak - before, "reset": reset}))
"""


def memory_run(clip: Path, out: Path, which: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(clip), str(out), which], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, f"memory probe failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("which", ["tiny", "default"])
def test_video_memory_is_flat(benchmark, record, request, tmp_path, which):
    """upscale_video's memory does not grow with the clip's length: every stage holds a bounded number of
    frames (queues of 2 x batch), segments are written as they finish, and the join streams packets.

    Bound: growth(long) <= 1.15 x growth(short) + slack, growth being the RSS high-water mark during
    upscale_video over the RSS before it, each clip in a fresh process (the default model's short one twice,
    the larger kept); 1.15 for the fixed part's run-to-run variation; slack = max(4 MiB, an allowance per
    extra frame) for what a longer clip may add without holding frames: more segments (each a fresh encoder:
    1 -> 9 segments at 600 frames) and the muxer's index. Two models, because the spread comes from the
    model's part (its activations for a batch, oneDNN scratch, the allocators' arenas across the decoder,
    model and encoder threads):

    * ``tiny`` (EDSR, 1 block of 8 features; CI's quick mode: 64x36, 30 vs 300 frames): a small spread, so a
      sharp bound: allowance half an input RGB frame (11.1 MiB at 160x90). Measured at 160x90 (four runs):
      60 frames 50.3-53.3 MiB, 600 frames 56.4-60.2 MiB, bound >= 68.9 MiB; holding an input RGB frame per
      frame (540 x 43 KB = 22 MiB) or anything larger fails. At 64x36: 30 frames 20.5-20.7, 300 frames
      24.5-24.8, bound 27.7 MiB (the 4 MiB floor); holding an output RGB frame per frame (270 x 28 KB =
      7.1 MiB) fails.
    * ``default`` (the bundled MDSR-baseline; full mode only): the figure a user sees, with a spread of
      tens of MiB: 60 frames 80.5-107.5 MiB (ten runs), 600 frames 88.0-122.6 MiB (six runs). Allowance half
      an output RGB frame (44.5 MiB at 160x90): bound >= 137 MiB, and holding an output RGB frame per frame
      (540 x 173 KB = 89 MiB) fails even from the lowest 600-frame run against the highest bound (168 MiB).

    On CUDA only ``default`` runs (the host memory beside the GPU; the GPU step's time limit). The figures
    are written before the assertion."""
    quick = request.config.getoption("benchmark_disable", False)
    if which == "default" and quick:
        pytest.skip("quick mode: the tiny model only (the default model takes minutes on a CPU)")
    if which == "tiny" and CUDA and not quick:
        pytest.skip("CUDA: the default model only (the tiny model's sharp bound is checked on CPU runs)")
    (short, long), (w, h) = (QUICK_MEMORY_FRAMES, QUICK_MEMORY_SIZE) if quick else (MEMORY_FRAMES, MEMORY_SIZE)
    group = f"video memory, upscale_video {w}x{h} x{SCALE}, {which} model, {'cuda' if CUDA else 'cpu'}: RSS growth"
    benchmark.group, benchmark.name = group, f"probe process, {long} frames (seconds)"
    clips = {k: make_clip(tmp_path / f"clip{k}.mp4", w, h, k, seed=k) for k in (short, long)}
    # The default model's short clip twice, the larger growth kept: its fixed part varies from run to run.
    repeats = 2 if which == "default" else 1
    shorts = [memory_run(clips[short], tmp_path / "out-short.mp4", which) for _ in range(repeats)]
    short_run = max(shorts, key=lambda r: r["growth_bytes"])
    long_run = benchmark.pedantic(memory_run, args=(clips[long], tmp_path / "out-long.mp4", which), rounds=1)
    for k, r, name in ((short, short_run, "short"), (long, long_run, "long")):
        assert r["frames"] == k, f"{k}-frame clip: upscale_video reports {r['frames']} frames"
        got = probe(tmp_path / f"out-{name}.mp4")
        assert got["frames"] == k and got["audio"], (k, got)
    allowance = w * h * 3 // 2 if which == "tiny" else (w * SCALE) * (h * SCALE) * 3 // 2
    slack = max(4 << 20, (long - short) * allowance)
    bound = 1.15 * short_run["growth_bytes"] + slack
    mib = 1 / 2**20
    extra = {"short_frames": short, "long_frames": long, "size": [w, h], "model": which,
             "allowance_bytes_per_frame": allowance,
             "short_growth_mib": short_run["growth_bytes"] * mib, "long_growth_mib": long_run["growth_bytes"] * mib,
             "short_peak_mib": short_run["peak_bytes"] * mib, "long_peak_mib": long_run["peak_bytes"] * mib,
             "short_load_peak_mib": short_run["load_peak_bytes"] * mib,
             "long_load_peak_mib": long_run["load_peak_bytes"] * mib, "bound_growth_mib": bound * mib,
             "short_growths_mib": [r["growth_bytes"] * mib for r in shorts],
             "segments": [short_run["segments"], long_run["segments"]],
             "hwm_reset": short_run["reset"] and long_run["reset"], "device": device_label()}
    benchmark.extra_info.update(extra)
    if not quick:
        for k, r in ((short, short_run), (long, long_run)):
            row = {"group": group, "name": f"fastsr video, {k} frames", "peak_bytes": r["growth_bytes"],
                   "rss_peak_bytes": r["peak_bytes"], "load_peak_bytes": r["load_peak_bytes"],
                   "rss_before_bytes": r["rss_before_bytes"], "frames": k, "segments": r["segments"],
                   "baseline": k == short, "bound_bytes": bound if k == long else None}
            record(**row)
            write_results(row)
    assert long_run["growth_bytes"] <= bound, (
        f"upscale_video's memory grows with the clip: {extra['long_growth_mib']:.1f} MiB for {long} frames vs "
        f"{extra['short_growth_mib']:.1f} MiB for {short} (bound {extra['bound_growth_mib']:.1f} MiB)")
