"""fastsr.upscale_video on tiny clips made here with PyAV (48x32, 12-24 frames) and a tiny random model.

Reference frames are ``Upscaler(...)(rgb, scale)`` on the input decoded with ``fastsr.video.read_frames``
(the conversion upscale_video applies: the stream's own matrix and range).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsr
from fastsr.models.config import EDSRConfig
from fastsr.models.networks import build
from fastsr.video import (
    VideoError,
    join_segments,
    load_job,
    plan_video,
    read_frames,
    upscale_segment,
    upscale_video,
    work_dir_for,
)

av = pytest.importorskip("av", reason='fastsr.upscale_video needs PyAV (pip install "fastsr[video]")')

ROOT = Path(__file__).resolve().parents[1]
TB = Fraction(1, 1000)
MATRIX = {1: "itu709", 2: "itu601", 6: "itu601"}  # 2: unspecified, written as BT.601
RANGE = {1: "MPEG", 2: "JPEG"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: OpenMP spinning only slows them, and FFmpeg has threads too
    yield
    torch.set_num_threads(threads)


def _model(scale: int):
    torch.manual_seed(0)
    return build(EDSRConfig(n_resblocks=1, n_feats=8, scale=scale))


@pytest.fixture(scope="module")
def up2():
    return fastsr.Upscaler(_model(2), device="cpu")


@pytest.fixture(scope="module")
def up3():
    return fastsr.Upscaler(_model(3), device="cpu")


def make_clip(path: Path, *, w=48, h=32, n=16, codec="libx264", pix="yuv420p", vfr=True, gop=4, audio="aac",
              subs=None, rotation=None, matrix=1, crange=1, seed=0, extras=False) -> Path:
    """A clip of a moving blocky pattern with noise; VFR: every third frame lasts 70 ms instead of 40.
    ``extras``: an attachment, a chapter and a title (Matroska)."""
    rng = np.random.default_rng(seed)
    out = av.open(str(path), "w")
    v = out.add_stream(codec, rate=25, options={"g": str(gop), "keyint_min": str(gop)} if codec == "libx264" else {})
    v.width, v.height, v.pix_fmt = w, h, pix
    v.time_base = v.codec_context.time_base = TB
    cc = v.codec_context
    cc.gop_size = gop
    cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = matrix, crange, matrix, matrix
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = out.add_stream(audio, rate=48000, layout="mono") if audio else None
    s = out.add_mux_stream(subs, time_base=TB) if subs else None
    if extras:
        out.add_attachment("font.ttf", "font/ttf", b"not really a font")
        out.set_chapters([{"id": 1, "start": 0, "end": 300, "time_base": TB, "metadata": {"title": "One"}}])
        out.metadata["title"] = "A clip"
    base = np.kron(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)), np.ones((4, 4, 1)))[:h, :w]
    t = Fraction(0)
    for i in range(n):
        img = (np.roll(base, i, axis=1) + rng.normal(0, 8, (h, w, 3))).clip(0, 255)
        deep = "10" in pix
        f = av.VideoFrame.from_ndarray((img * 257).astype(np.uint16) if deep else img.astype(np.uint8),
                                       format="rgb48le" if deep else "rgb24")
        f = f.reformat(format=pix, dst_colorspace=MATRIX[matrix], dst_color_range=RANGE[crange])
        f.pts, f.time_base = int(t / TB), TB
        t += Fraction(7, 100) if vfr and i % 3 == 2 else Fraction(1, 25)
        out.mux(v.encode(f))
    out.mux(v.encode())
    if a is not None:
        for k in range(int(t * 48000) // 1024 + 1):
            x = 0.3 * np.sin(2 * np.pi * 440 * (np.arange(1024) + 1024 * k) / 48000)
            af = av.AudioFrame.from_ndarray(x.astype(np.float32)[None], format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, 1024 * k
            out.mux(a.encode(af))
        out.mux(a.encode())
    for start, text in ((0, "hello"), (300, "world")) if s is not None else ():
        data = text.encode()
        p = av.Packet(len(data).to_bytes(2, "big") + data if subs == "mov_text" else data)
        p.stream, p.pts, p.dts, p.duration, p.time_base = s, start, start, 200, TB
        out.mux(p)
    out.close()
    return path


def packets(path: Path, kind: str) -> list[tuple]:
    """(bytes, time) of every non-empty packet of the first ``kind`` stream (subtitle gaps left out)."""
    with av.open(str(path)) as c:
        s = next(x for x in c.streams if x.type == kind)
        return [(bytes(p), p.pts * p.time_base, (p.duration or 0) * p.time_base) for p in c.demux(s)
                if p.size and bytes(p) != b"\0\0"]


def frames(path: Path) -> list[tuple[Fraction, np.ndarray]]:
    with av.open(str(path)) as c:
        tb = c.streams.video[0].time_base
    return [(pts * tb, rgb) for pts, rgb in read_frames(path)]


def reference(path: Path, up, scale: int) -> list[tuple[Fraction, np.ndarray]]:
    return [(t, up(rgb, scale)) for t, rgb in frames(path)]


def psnr(a: list, b: list) -> float:
    mse = np.mean([np.mean((x[1].astype(np.float64) - y[1]) ** 2) for x, y in zip(a, b)])
    return float(10 * np.log10(255**2 / mse))


def through_yuv(src: Path, pix_fmt: str, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` converted to ``pix_fmt`` with the colours of ``src`` and back, as upscale_video converts."""
    import types

    from fastsr.video_segments import from_rgb, to_rgb

    with av.open(str(src)) as c:
        f = next(c.decode(video=0))
    colour = {"matrix": f.colorspace, "range": f.color_range, "primaries": f.color_primaries, "trc": f.color_trc}
    job = types.SimpleNamespace(pix_fmt=pix_fmt, colour=colour, out_colour=colour, deep=False)
    return to_rgb(from_rgb(rgb, job), job)


def video_info(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        first = next(c.decode(v))
        cc = v.codec_context
        return {"codec": cc.name, "size": (cc.width, cc.height), "format": cc.format.name, "rotation": first.rotation,
                "colour": (cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc),
                "streams": [s.type for s in c.streams]}


def assert_clean(dst: Path) -> None:
    """Nothing at ``dst``, no work folder and no temporary file beside it."""
    assert not dst.exists()
    assert not work_dir_for(dst).exists()
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(".")]


# -------------------------------------------------------------------------------------------- results


def test_ffv1_is_exact_and_keeps_vfr_audio_and_subtitles(tmp_path, up2):
    src = make_clip(tmp_path / "in.mkv", audio="libopus", subs="subrip", extras=True)
    dst = tmp_path / "out.mkv"
    result = upscale_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=4, batch=3, tile=16)
    ref, got = reference(src, up2, 2), frames(dst)
    assert len(got) == len(ref) == 16
    assert [t for t, _ in got] == [t for t, _ in ref]  # every pts, variable frame rate included
    for (_, r), (_, g) in zip(ref, got):
        np.testing.assert_array_equal(g, r)  # bit-exact: ffv1 stores the model's RGB (bgr0)
    assert packets(dst, "audio") == packets(src, "audio")  # stream copy: bytes and timestamps
    assert packets(dst, "subtitle") == packets(src, "subtitle")
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert b.chapters() == a.chapters() and b.metadata["title"] == "A clip"
        assert [(s.mimetype, s.data) for s in b.streams if s.type == "attachment"] == [("font/ttf", b"not really a font")]
    assert result.frames == 16 and result.segments == 4 and result.resumed_segments == 0
    assert any("losslessly (bgr0)" in n for n in result.notes)
    assert not work_dir_for(dst).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv"]


@pytest.mark.parametrize("rotation, matrix, crange", [(90, 1, 1), (None, 1, 2)], ids=["bt709-tv-rot90", "bt709-pc"])
def test_x264_mp4_keeps_timing_streams_rotation_and_colour(tmp_path, up2, rotation, matrix, crange):
    src = make_clip(tmp_path / "in.mp4", subs="mov_text", rotation=rotation, matrix=matrix, crange=crange)
    dst = tmp_path / "out.mp4"
    upscale_video(src, dst, 2, model=up2, segment_frames=4)
    ref, got = reference(src, up2, 2), frames(dst)
    assert [t for t, _ in got] == [t for t, _ in ref] and len(got) == 16
    # 4:2:0 itself costs this random network's chroma-rich output most: the reference through the same 4:2:0
    # round trip is at 26.3 dB. Measured for x264 at CRF 18: 26.1 dB against the reference, 37.4-38.1 dB
    # against the reference through 4:2:0 (x264's own loss).
    through_420 = [(t, through_yuv(src, "yuv420p", r)) for t, r in ref]
    assert psnr(got, through_420) > 33
    assert psnr(got, ref) > psnr(through_420, ref) - 1.5
    assert packets(dst, "audio") == packets(src, "audio")
    assert packets(dst, "subtitle") == packets(src, "subtitle")
    info, info_in = video_info(dst), video_info(src)
    assert info["codec"] == "h264" and info["size"] == (96, 64)
    assert info["rotation"] == info_in["rotation"] == (rotation or 0)
    assert info["colour"] == info_in["colour"] == (matrix, crange, matrix, matrix)
    assert info["streams"] == ["video", "audio", "subtitle"]


def test_read_frames_uses_the_streams_matrix(tmp_path):
    src = make_clip(tmp_path / "in.mkv", n=2, audio=None, matrix=1, crange=2)
    with av.open(str(src)) as c:
        f = next(c.decode(video=0))
    from fastsr.video_segments import _flags

    bt709 = f.reformat(format="rgb24", src_colorspace="itu709", src_color_range="JPEG", interpolation=_flags())
    bt601 = f.reformat(format="rgb24", src_colorspace="itu601", src_color_range="MPEG", interpolation=_flags())
    first = next(read_frames(src))[1]
    np.testing.assert_array_equal(first, bt709.to_ndarray())
    assert not np.array_equal(first, bt601.to_ndarray())


def test_an_unstated_matrix_is_read_as_players_do_and_stated_in_the_output(tmp_path, up2):
    src = make_clip(tmp_path / "in.mkv", n=4, audio=None, matrix=2)
    assert video_info(src)["colour"] == (2, 1, 2, 2)
    result = upscale_video(src, tmp_path / "out.mp4", 2, model=up2)
    assert any("does not state its colour matrix: read as BT.601 (as players do at 48x32)" in n for n in result.notes)
    assert video_info(tmp_path / "out.mp4")["colour"] == (6, 1, 2, 2)  # SMPTE 170M, limited range stated


def test_odd_size_x3_is_encoded_444(tmp_path, up3):
    src = make_clip(tmp_path / "in.mkv", w=33, h=17, n=6, codec="ffv1", audio=None)
    dst = tmp_path / "out.mp4"
    result = upscale_video(src, dst, 3, model=up3)
    assert any("99x51 has an odd side" in n and "yuv444p" in n for n in result.notes)
    info = video_info(dst)
    assert info["size"] == (99, 51) and info["format"] == "yuv444p"
    assert psnr(frames(dst), reference(src, up3, 3)) > 30  # 4:4:4: only x264's loss (measured 32.0 dB)


def test_10_bit_goes_through_16_bit_rgb(tmp_path, up2):
    src = make_clip(tmp_path / "in.mkv", n=6, pix="yuv420p10le", audio=None)
    dst = tmp_path / "out.mkv"
    result = upscale_video(src, dst, 2, model=up2, codec="ffv1")
    ref, got = reference(src, up2, 2), frames(dst)
    assert ref[0][1].dtype == np.uint16 and got[0][1].dtype == np.uint16
    for (_, r), (_, g) in zip(ref, got):
        np.testing.assert_array_equal(g, r)
    assert any("rgb48le" in n for n in result.notes)
    x264 = upscale_video(src, tmp_path / "out.mp4", 2, model=up2)
    assert video_info(tmp_path / "out.mp4")["format"] == "yuv420p10le"
    assert any("encoded as yuv420p10le" in n for n in x264.notes)


def test_webm_reencodes_aac_to_opus_and_drops_mov_text(tmp_path, up2):
    src = make_clip(tmp_path / "in.mp4", n=8, subs="mov_text")
    dst = tmp_path / "out.webm"
    result = upscale_video(src, dst, 2, model=up2)
    assert "audio stream #1 (aac) re-encoded to opus at 192 kb/s: .webm cannot hold aac" in result.notes
    assert "subtitle stream #2 (mov_text) dropped: .webm cannot hold mov_text" in result.notes
    info = video_info(dst)
    assert info["codec"] == "vp9" and info["streams"] == ["video", "audio"]
    with av.open(str(dst)) as c:
        assert c.streams.audio[0].codec_context.name == "opus"
        assert sum(f.samples for f in c.decode(audio=0)) > 0.9 * 48000 * float(frames(src)[-1][0])
    assert [t for t, _ in frames(dst)] == [t for t, _ in frames(src)]  # ms time base: exact here


# --------------------------------------------------------------------------------------------- resume


CHILD = """
import sys, time
import torch
torch.set_num_threads(1)
import fastsr.video_segments as vs
from fastsr.video import upscale_video
slow = vs._upscale_batch
def patched(*a, **k):
    time.sleep(0.25)
    return slow(*a, **k)
vs._upscale_batch = patched
upscale_video(sys.argv[1], sys.argv[2], 2, model=sys.argv[3], codec="ffv1", segment_frames=4, batch=2)
"""


def _run_until_segments(args: list[str], work: Path, count: int, sig: int) -> subprocess.CompletedProcess:
    """Run the child, send ``sig`` once ``count`` segment files exist in ``work``."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(work.glob("segment-*.mp4"))) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child made no segment in 60 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigterm_then_sigkill_then_resume_equals_uninterrupted(tmp_path, up2):
    src = make_clip(tmp_path / "in.mkv", n=24, audio="libopus")
    weights = tmp_path / "tiny.safetensors"
    fastsr.save(up2.model, weights)
    full = tmp_path / "full.mkv"
    upscale_video(src, full, 2, model=up2, codec="ffv1", segment_frames=4)
    dst = tmp_path / "out.mkv"
    work = work_dir_for(dst)
    args = [str(src), str(dst), str(weights)]

    term = _run_until_segments(args, work, 1, signal.SIGTERM)
    assert term.returncode == -signal.SIGTERM, term.stderr
    assert not dst.exists()
    names = sorted(p.name for p in work.iterdir())
    assert "manifest.json" in names and not [n for n in names if n.endswith(".tmp")]  # cleaned up on SIGTERM
    done = len(list(work.glob("segment-*.mp4")))
    assert 1 <= done < 6

    kill = _run_until_segments(args, work, done + 1, signal.SIGKILL)
    assert kill.returncode == -signal.SIGKILL
    assert not dst.exists() and len(list(work.glob("segment-*.mp4"))) > done

    result = upscale_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=4)
    assert result.resumed_segments > done and any(n.startswith("resumed: ") for n in result.notes)
    a, b = frames(full), frames(dst)
    assert len(a) == len(b) == 24 and all(x[0] == y[0] and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert packets(dst, "audio") == packets(src, "audio")
    assert not work.exists()


def test_interrupt_keeps_segments_refuses_other_requests_and_resumes(tmp_path, up2, monkeypatch):
    import fastsr.video_segments as vs

    src = make_clip(tmp_path / "in.mkv", n=16, audio=None)
    full = tmp_path / "full.mkv"
    upscale_video(src, full, 2, model=up2, codec="ffv1", segment_frames=4)
    dst = tmp_path / "out.mkv"
    calls, real = [], vs._upscale_batch

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 5:  # batch=2: segments 0 and 1 (4 frames each) are through the model
            deadline = time.monotonic() + 30
            while not (work_dir_for(dst) / "segment-00001.mp4").exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # the encoder thread finishes segment 1
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(vs, "_upscale_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=4, batch=2)
    monkeypatch.setattr(vs, "_upscale_batch", real)
    work = work_dir_for(dst)
    assert not dst.exists()
    assert sorted(p.name for p in work.iterdir()) == ["lock", "manifest.json", "segment-00000.mp4", "segment-00001.mp4"]

    with pytest.raises(VideoError, match=r"holds an unfinished job for another request \(codec 'ffv1' -> "
                                         r"'libx264'; crf None -> 18\): not resumed. Pass overwrite=True"):
        upscale_video(src, dst, 2, model=up2, codec="libx264", segment_frames=4)
    with pytest.raises(VideoError, match=r"another request \(segment_frames 4 -> 8\)"):
        upscale_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=8)

    result = upscale_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=4)
    assert result.resumed_segments == 2
    a, b = frames(full), frames(dst)
    assert len(a) == len(b) == 16 and all(x[0] == y[0] and np.array_equal(x[1], y[1]) for x, y in zip(a, b))

    again = upscale_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=4, overwrite=True)
    assert again.resumed_segments == 0


def test_segments_by_separate_workers_then_join(tmp_path, up2):
    src = make_clip(tmp_path / "in.mkv", n=16, audio="libopus")
    full = tmp_path / "full.mkv"
    upscale_video(src, full, 2, model=up2, codec="ffv1", segment_frames=4)
    dst = tmp_path / "out.mkv"
    job = plan_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=4)
    assert len(job.segments) == 4 and load_job(job.work) == job
    for i in (3, 1, 0, 2):  # any order, each on its own (seeks to the segment's keyframe)
        assert upscale_segment(job.work, i, model=up2) == job.segment_path(i)
    join_segments(job)
    a, b = frames(full), frames(dst)
    assert all(x[0] == y[0] and np.array_equal(x[1], y[1]) for x, y in zip(a, b)) and len(a) == len(b)
    assert packets(dst, "audio") == packets(src, "audio") and not work_dir_for(dst).exists()


# ------------------------------------------------------------------------------------------ bad input


def test_corrupt_stream_names_the_frame_and_keeps_finished_segments(tmp_path, up2):
    src = make_clip(tmp_path / "in.mkv", n=16, codec="ffv1", audio=None, vfr=False)
    with av.open(str(src)) as c:
        p = [p for p in c.demux(video=0) if p.size][13]
    data = bytearray(src.read_bytes())
    data[p.pos + 8 : p.pos + p.size - 4] = np.random.default_rng(1).bytes(p.size - 12)
    src.write_bytes(bytes(data))
    dst = tmp_path / "out.mkv"
    with pytest.raises(VideoError, match=r"the video stream is corrupt at frame 13 \(t = 0\.520 s\): "
                                         r"InvalidDataError.*; the 3 finished segment\(s\) are kept in"):
        upscale_video(src, dst, 2, model=up2, codec="ffv1", segment_frames=4)
    assert not dst.exists()
    assert sorted(p.name for p in work_dir_for(dst).glob("segment-*")) == [f"segment-0000{i}.mp4" for i in range(3)]


def _silence(path: Path, video: bool) -> Path:
    """0.1 s of Opus silence in Matroska; ``video``: with a video stream that has no frame."""
    out = av.open(str(path), "w")
    if video:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 48, 32, "yuv420p"
    a = out.add_stream("libopus", rate=48000, layout="mono")
    f = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp", layout="mono")
    f.sample_rate, f.pts = 48000, 0
    out.mux(a.encode(f))
    out.mux(a.encode())
    out.close()
    return path


def _bad(tmp_path: Path, kind: str) -> tuple[Path, Path, dict]:
    src, dst, kw = tmp_path / "in.mp4", tmp_path / "out.mp4", {}
    if kind == "png":
        from PIL import Image

        src = tmp_path / "in.png"
        Image.new("RGB", (8, 8)).save(src)
    elif kind == "random bytes":
        src.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "audio only":
        src = _silence(tmp_path / "in.mka", video=False)
    elif kind == "zero frames":
        src = _silence(tmp_path / "in.mkv", video=True)
    else:
        make_clip(src, n=2, audio=None)
        if kind == "over max_pixels":
            kw = {"max_pixels": 1000}
        elif kind == "unknown codec":
            kw = {"codec": "mpeg2video"}
        elif kind == "codec the container cannot hold":
            kw = {"codec": "ffv1"}
        elif kind == "output exists":
            dst.write_bytes(b"keep me")
        elif kind == "output is input":
            dst = src
    return src, dst, kw


BAD = {
    "png": (VideoError, r"in\.png is an image \(png\), not a video; upscale images with fastsr\.upscale"),
    "random bytes": (VideoError, r"in\.mp4 is not a video file FFmpeg can read \(InvalidDataError"),
    "audio only": (VideoError, r"in\.mka has no video stream \(only audio\)"),
    "zero frames": (VideoError, r"in\.mkv has a video stream with no frames"),
    "over max_pixels": (VideoError, r"in\.mp4: a video frame is 48x32 = 1,536 pixels, over the limit of 1,000"),
    "unknown codec": (ValueError, r"unknown codec 'mpeg2video'; choose one of libx264, libx265, libvpx-vp9, ffv1"),
    "codec the container cannot hold": (ValueError, (r"\.mp4 cannot hold ffv1 video; for \.mp4 use libx264, "
                                                     r"libx265, libvpx-vp9 \(ffv1 goes into \.mkv\)")),
    "output exists": (FileExistsError, r"out\.mp4 exists; pass overwrite=True to replace it"),
    "output is input": (ValueError, r"the output path is the input path \(.*in\.mp4\); choose another output"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, up2, kind):
    src, dst, kw = _bad(tmp_path, kind)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    error, message = BAD[kind]
    with pytest.raises(error, match=message):
        upscale_video(src, dst, 2, model=up2, **kw)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing changed
    if kind != "output exists" and kind != "output is input":
        assert_clean(dst)


def test_import_fastsr_does_not_import_av():
    code = "import sys, fastsr; fastsr.upscale_video; assert 'av' not in sys.modules, 'av imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
