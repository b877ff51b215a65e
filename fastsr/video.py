"""Video files: :func:`upscale_video` (``fastsr.upscale_video``) runs every frame through one Upscaler.

Needs PyAV (the ``video`` extra; ``import fastsr`` does not import it). Kept: the other streams, copied with
their timestamps (or, where the container cannot hold one, audio re-encoded to AAC / Opus and the rest dropped,
each with a note); every frame's pts and the frame count (.mkv / .webm store milliseconds); rotation, colour
matrix, range, primaries, transfer, sample aspect ratio. Frames become RGB with the stream's matrix and range
(an unstated matrix read as players do: BT.709 from 1280 wide or 577 high, else BT.601, and tagged so);
>8-bit input goes through the model at 16 bits. Codecs: libx264 (default; CRF 18), libx265 (20), libvpx-vp9
(.webm default; 24), ffv1 (.mkv; the model's RGB output, bit-exact); an odd output side is coded 4:4:4.

Resumable: segments split at input keyframes (at least ``segment_frames`` frames, default 2 s) are renamed
into a hidden work folder beside the output (``.NAME.fastsr-work/``, with ``manifest.json``) when done. Run
again after a kill (SIGKILL too), the same request resumes; another request's folder is refused
(``overwrite=True`` discards it). The output is joined in the work folder, then renamed into place. Workers
can share a job: :func:`plan_video`, :func:`upscale_segment`, then :func:`join_segments` (:func:`load_job`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import VideoError, first_line
from ._files import atomic_write
from .imageio import DEFAULT_MAX_PIXELS, check_pixel_limit, not_regular_reason
from .video_segments import SWS_MATRIX, VideoJob, join_segments, model_identity, to_rgb, upscale_segments

__all__ = ["CODECS", "CONTAINERS", "VideoError", "VideoJob", "VideoResult", "join_segments", "load_job",
           "output_suffix", "plan_video", "read_frames", "upscale_segment", "upscale_video", "work_dir_for"]

_log = logging.getLogger("fastsr.video")
_VERSION = 1
MANIFEST = "manifest.json"
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
# codec: (default CRF, highest CRF, the containers that hold it)
CODECS: dict[str, tuple[int | None, int | None, tuple[str, ...]]] = {
    "libx264": (18, 51, ("mp4", "mov", "matroska")), "libx265": (20, 51, ("mp4", "mov", "matroska")),
    "libvpx-vp9": (24, 63, ("mp4", "matroska", "webm")), "ffv1": (None, None, ("matroska",))}
_DEFAULT_CODEC = {"mp4": "libx264", "mov": "libx264", "matroska": "libx264", "webm": "libvpx-vp9"}
_AUDIO_FALLBACK = {"mp4": "aac", "mov": "aac", "matroska": "libopus", "webm": "libopus"}


@dataclass(frozen=True)
class VideoResult:
    """What :func:`upscale_video` did; ``notes`` (for the user) say what was re-encoded, dropped or chosen."""

    path: Path
    frames: int
    segments: int
    resumed_segments: int
    notes: tuple[str, ...]


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be in [{minimum}, {maximum if maximum is not None else 'inf'}], got {value}")
    return value


def _check_request(src: Any, dst: Any, codec: str | None, crf: int | None, overwrite: bool):
    """Paths, container, codec and CRF, checked before anything is loaded or written."""
    src, dst = Path(src), Path(dst)
    reason = not_regular_reason(src)
    if reason is not None:
        if reason.startswith("not found"):
            raise FileNotFoundError(f"input not found: {src}")
        raise VideoError(f"cannot read video {src}: {reason}")
    if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise ValueError(f"the output path is the input path ({src}); choose another output file")
    container = CONTAINERS.get(dst.suffix.lower())
    if container is None:
        raise ValueError(f"unsupported video container {dst.suffix or '(none)'!r} for {dst}; "
                         f"use {', '.join(CONTAINERS)}")
    codec = _DEFAULT_CODEC[container] if codec is None else codec
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    default_crf, max_crf, holders = CODECS[codec]
    if container not in holders:
        fits = ", ".join(c for c, (_, _, h) in CODECS.items() if container in h)
        raise ValueError(f"{dst.suffix} cannot hold {codec} video; for {dst.suffix} use {fits}"
                         + (" (ffv1 goes into .mkv)" if codec == "ffv1" else ""))
    if crf is not None and max_crf is None:
        raise ValueError(f"crf does not apply to {codec} (lossless); leave it None")
    crf = default_crf if crf is None else _check_int("crf", crf, 0, max_crf)
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"output folder not found: {dst.parent}")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    return src, dst, container, codec, crf


def _upscaler(model: Any, device: Any, precision: str | None):
    from .upscaler import Upscaler

    if not isinstance(model, Upscaler):
        return Upscaler(model, device=device, precision=precision)
    if device is not None or precision is not None:
        raise ValueError("model is an Upscaler, which has its device and precision: leave them None")
    return model


def output_suffix(src: str | os.PathLike, codec: str | None = None) -> str:
    """A result's container: the input's where it is writable (and holds ``codec``), else .mkv (holds all)."""
    container = CONTAINERS.get(Path(src).suffix.lower())
    ok = container is not None and (codec not in CODECS or container in CODECS[codec][2])
    return Path(src).suffix if ok else ".mkv"


def work_dir_for(dst: str | os.PathLike) -> Path:
    """The hidden work folder of output ``dst``: ``.NAME.fastsr-work`` beside it."""
    return Path(dst).with_name(f".{Path(dst).name}.fastsr-work")


def _fingerprint(src: Path) -> dict[str, Any]:
    with open(src, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    st = src.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head}


# ----------------------------------------------------------------------------------------------- probe


def _open_input(src: Path):
    import av

    try:
        c = av.open(str(src), metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"{src} is not a video file FFmpeg can read ({first_line(e)})") from None
    if c.format.name == "image2" or c.format.name.endswith("_pipe"):
        c.close()
        raise VideoError(f"{src} is an image ({c.format.name.removesuffix('_pipe')}), not a video; "
                         "upscale images with fastsr.upscale")
    return c


def _video_stream(c, src: Path):
    from av.stream import Disposition

    videos = [s for s in c.streams.video if not s.disposition & Disposition.attached_pic]
    if not videos:
        kinds = ", ".join(sorted({s.type for s in c.streams}))
        raise VideoError(f"{src} has no video stream" + (f" (only {kinds})" if kinds else ""))
    return videos[0]


def _first_frame(c, stream, src: Path):
    import av

    try:
        for packet in c.demux(stream):
            for frame in packet.decode():
                return frame
    except av.error.FFmpegError as e:
        raise VideoError(f"{src}: the video stream is corrupt at frame 0: {first_line(e)}") from None
    raise VideoError(f"{src} has a video stream with no frames")


def _segments(src: Path, index: int, min_frames: int) -> list[list[Any]]:
    """``[start_pts, frames]`` per segment, a new one at the first keyframe after ``min_frames`` frames,
    from the video packets (demuxed, not decoded)."""
    import av

    packets: list[tuple[int, bool]] = []
    with av.open(str(src), metadata_errors="replace") as c:
        try:
            for p in c.demux(c.streams[index]):
                if p.size and p.pts is None:
                    raise VideoError(f"{src}: the video packets have no timestamps; remux the raw stream into .mkv")
                if p.size:
                    packets.append((p.pts, p.is_keyframe))
        except av.error.FFmpegError as e:
            raise VideoError(f"{src}: the file is corrupt after frame {len(packets)}: {first_line(e)}") from None
    if not packets:
        raise VideoError(f"{src} has a video stream with no frames")
    segments: list[list[Any]] = [[None, 0]]
    for pts, key in sorted(packets):
        if key and segments[-1][1] >= min_frames:
            segments.append([pts, 0])
        segments[-1][1] += 1
    return segments


def _bits(fmt) -> int:
    return max(c.bits for c in fmt.components)


def _check_pixels(src: Path, w: int, h: int, max_pixels: int | None) -> None:
    try:
        check_pixel_limit(h, w, max_pixels, "a video frame")
    except ValueError as e:
        raise VideoError(f"{src}: {e}") from None


def _colours(frame, codec: str, src: Path, notes: list[str]):
    """The input's colours as read (unstated ones as players read them) and as the output is tagged."""
    matrix, rng, w, h = frame.colorspace, frame.color_range, frame.width, frame.height
    if frame.format.is_rgb:
        matrix, rng = 0, 2
    else:
        if matrix in (2, 3):  # unspecified, reserved
            hd = w >= 1280 or h > 576
            matrix = 1 if hd else 6
            notes.append(f"the input does not state its colour matrix: read as {'BT.709' if hd else 'BT.601'} "
                         f"(as players do at {w}x{h}), and the output is tagged so")
        if matrix not in SWS_MATRIX:
            raise VideoError(f"{src}: colour matrix {matrix} (AVColorSpace) is not supported")
        rng = rng or (2 if frame.format.name.startswith("yuvj") else 1)
    colour = {"matrix": matrix, "range": rng, "primaries": frame.color_primaries, "trc": frame.color_trc}
    out = dict(colour, matrix=0, range=2) if codec == "ffv1" else dict(colour)
    if codec != "ffv1" and matrix == 0:
        out.update(matrix=1, range=1)
        notes.append("RGB input: encoded as YUV with the BT.709 matrix (limited range)")
    return colour, out


def _pixel_format(codec: str, fmt, out_w: int, out_h: int, notes: list[str]) -> str:
    import av

    bits = _bits(fmt)
    if codec == "ffv1":
        pix = "rgb48le" if bits > 8 else "bgr0"
        notes.append(f"ffv1: the model's RGB output is stored losslessly ({pix})")
        return pix
    sub = "444" if fmt.is_rgb else "420" if len(fmt.components) < 3 or fmt.chroma_width(4) == 1 else \
        {(1, 1): "420", (1, 2): "422"}.get((fmt.chroma_width(2), fmt.chroma_height(2)), "444")
    if (sub == "420" and (out_w % 2 or out_h % 2)) or (sub == "422" and out_w % 2):
        notes.append(f"the output {out_w}x{out_h} has an odd side, which yuv{sub}p cannot hold: encoded as "
                     "yuv444p (full chroma; some hardware players decode only 4:2:0)")
        sub = "444"
    pix = f"yuv{sub}p"
    if bits > 8 and pix + "10le" in {f.name for f in av.Codec(codec, "w").video_formats}:
        notes.append(f"{bits}-bit input: upscaled at 16 bits per channel, encoded as {pix}10le")
        return pix + "10le"
    if bits > 8:
        notes.append(f"{codec} here encodes 8 bits only: the {bits}-bit input is encoded as {pix}")
    return pix


def _supported(container: str) -> set[str]:
    import av

    with av.open(io.BytesIO(), "w", format=container) as c:
        return set(c.supported_codecs)


def _plan_streams(c, video, container: str, ext: str, notes: list[str]) -> list[dict[str, Any]]:
    """What becomes of each other stream: copy, attach, encode:<audio codec> or drop (with a note)."""
    from av.stream import Disposition

    supported, plans = _supported(container), []
    for s in c.streams:
        if s.index == video.index:
            continue
        ctx = s.codec_context
        name = ctx.name if ctx is not None else "unknown"
        shown = ctx.codec.canonical_name if ctx is not None else s.metadata.get("filename", name)
        what, action = f"{s.type} stream #{s.index} ({shown})", "drop"
        if s.type == "video":
            cover = " (cover art)" if s.disposition & Disposition.attached_pic else ""
            notes.append(f"{what}{cover} dropped: only the first video stream is upscaled")
        elif s.type == "attachment":
            action = "attach" if container == "matroska" else "drop"
            if action == "drop":
                notes.append(f"{what} dropped: only .mkv holds attachments")
        elif s.type in ("audio", "subtitle", "data") and name in supported:
            action = "copy"
        elif s.type == "audio":
            action = f"encode:{_AUDIO_FALLBACK[container]}"
            notes.append(f"{what} re-encoded to {action[7:].removeprefix('lib')} at 192 kb/s: "
                         f"{ext} cannot hold {shown}")
        else:
            keep = "; .mkv can hold it" if container != "matroska" and name in _supported("matroska") else ""
            notes.append(f"{what} dropped: {ext} cannot hold {shown}{keep}")
        plans.append({"index": s.index, "type": s.type, "codec": name, "action": action})
    return plans


def _plan(src: Path, dst: Path, container: str, codec: str, crf: int | None, scale: int, identity: dict,
          max_pixels: int | None, segment_frames: int | None) -> VideoJob:
    notes: list[str] = []
    with _open_input(src) as c:
        vs = _video_stream(c, src)
        if vs.codec_context.width and vs.codec_context.height:  # before decoding anything
            _check_pixels(src, vs.codec_context.width, vs.codec_context.height, max_pixels)
        first = _first_frame(c, vs, src)
        w, h, fmt = first.width, first.height, first.format
        _check_pixels(src, w, h, max_pixels)
        colour, out_colour = _colours(first, codec, src, notes)
        pix_fmt = _pixel_format(codec, fmt, w * scale, h * scale, notes)
        sides = {sd.type.name: bytes(sd) for sd in first.side_data}
        display = list(memoryview(sides["DISPLAYMATRIX"]).cast("i")) if "DISPLAYMATRIX" in sides else None
        hdr = {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} & set(sides)
        for present, note in ((hdr, "HDR mastering / light metadata is not kept"),
                              (first.interlaced_frame, "interlaced: frames upscaled as progressive"),
                              (any(comp.is_alpha for comp in fmt.components), "its alpha channel is dropped")):
            notes += [f"the input: {note}"] if present else []
        tb, rate, sar = vs.time_base, vs.average_rate or vs.guessed_rate, vs.codec_context.sample_aspect_ratio
        if container in ("matroska", "webm") and (tb * 1000).denominator != 1:
            notes.append(f"{dst.suffix} stores milliseconds: timestamps in the input's time base {tb} may be rounded")
        streams = _plan_streams(c, vs, container, dst.suffix, notes)
        index = vs.index
    min_frames = segment_frames or (max(24, math.ceil(2 * rate)) if rate else 48)
    ratio = lambda f: (f.numerator, f.denominator) if f else None  # noqa: E731
    return VideoJob(src=str(src), dst=str(dst), work=str(work_dir_for(dst)), container=container,
                    identity=identity, stream_index=index, width=w, height=h, scale=scale, time_base=ratio(tb),
                    rate=ratio(rate), sar=ratio(sar), codec=codec, crf=crf, pix_fmt=pix_fmt, deep=_bits(fmt) > 8,
                    colour=colour, out_colour=out_colour, display_matrix=display,
                    segments=_segments(src, index, min_frames), streams=streams, notes=notes)


def read_frames(src: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(pts, RGB frame) of the video stream of ``src``, converted exactly as :func:`upscale_video` converts
    its input: the stream's matrix and range, HxWx3 uint8, or uint16 for >8-bit input."""
    src = Path(src)
    with _open_input(src) as c:
        how = None
        for frame in c.decode(_video_stream(c, src)):
            if how is None:
                how = types.SimpleNamespace(colour=_colours(frame, "", src, [])[0], deep=_bits(frame.format) > 8)
            yield frame.pts, to_rgb(frame, how)


# ------------------------------------------------------------------------------------------ jobs, run


def load_job(work_dir: str | os.PathLike) -> VideoJob:
    """The job of a work folder (VideoError when it holds no usable manifest)."""
    try:
        data = json.loads((Path(work_dir) / MANIFEST).read_text(encoding="utf-8"))
        if data.get("version") != _VERSION:
            raise ValueError(f"manifest version {data.get('version')!r}, this fastsr writes {_VERSION}")
        return VideoJob.from_dict(data["job"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VideoError(f"{work_dir} holds no usable fastsr manifest ({first_line(e)}); remove the folder "
                         "or pass overwrite=True") from None


def plan_video(src: str | os.PathLike, dst: str | os.PathLike, scale: int, *, model: Any = None,
               device: Any = None, precision: str | None = None, codec: str | None = None, crf: int | None = None,
               overwrite: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               segment_frames: int | None = None) -> VideoJob:
    """The job of this request: the work folder's when it matches (a resume), else planned and written
    (after every check: a failing request creates nothing). A work folder of another request raises
    VideoError; ``overwrite=True`` discards it. Arguments as for :func:`upscale_video`."""
    src, dst, container, codec, crf = _check_request(src, dst, codec, crf, overwrite)
    if segment_frames is not None:
        _check_int("segment_frames", segment_frames, 1)
    upscaler = _upscaler(model, device, precision)
    upscaler.check_scale(scale)
    identity = {"input": _fingerprint(src), "scale": scale, "model": model_identity(upscaler),
                "precision": upscaler.precision, "codec": codec, "crf": crf, "container": container,
                "segment_frames": segment_frames}
    work = work_dir_for(dst)
    if work.exists() and (overwrite or not (work / MANIFEST).exists() and not any(work.glob("segment-*"))):
        shutil.rmtree(work)  # discarded, or killed before its manifest was written
    if work.exists():
        job = load_job(work)
        named = {"input": "the input file changed", "model": "other model weights"}
        diff = [named.get(k, f"{k} {job.identity.get(k)!r} -> {v!r}") for k, v in identity.items()
                if job.identity.get(k) != v]
        if diff:
            raise VideoError(f"{work} holds an unfinished job for another request ({'; '.join(diff)}): not "
                             "resumed. Pass overwrite=True to discard it and start again, or remove the folder")
        job.src = str(src)  # the same file, perhaps moved
        return job
    job = _plan(src, dst, container, codec, crf, scale, identity, max_pixels, segment_frames)
    work.mkdir()
    with atomic_write(work / MANIFEST) as f:
        f.write(json.dumps({"version": _VERSION, "job": dataclasses.asdict(job)}, indent=1).encode())
    return job


def upscale_segment(work_dir: str | os.PathLike, index: int, *, model: Any = None, device: Any = None,
                    precision: str | None = None, tile: int | None = None, batch: int | None = None) -> Path:
    """Upscale segment ``index`` of the job in ``work_dir`` into its file (a worker's share); its path.
    The input, model weights and precision must be those the job was planned with."""
    job = load_job(work_dir)
    _check_int("index", index, 0, len(job.segments) - 1)
    if _fingerprint(Path(job.src)) != job.identity["input"]:
        raise VideoError(f"{job.src} changed since {work_dir} was planned")
    upscaler = _upscaler(model, device, precision)
    if (model_identity(upscaler), upscaler.precision) != (job.identity["model"], job.identity["precision"]):
        raise VideoError(f"{work_dir} was planned with other model weights or precision")
    upscale_segments(job, upscaler, [index], tile=tile, batch=_check_int("batch", 4 if batch is None else batch, 1))
    return job.segment_path(index)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so the run stops as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """Where SIGTERM has its default action, stop the run cleanly first (the unfinished segment's temporary
    file removed, finished ones kept), then die by SIGTERM. Another handler (fastsr's CLI has one) is kept."""
    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM")
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _locked(work: Path) -> Iterator[None]:
    """One run at a time on a work folder (an advisory lock, dropped by the kernel when a process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VideoError(f"{work} is in use by another fastsr run") from None
        for f in work.iterdir():  # temporaries of a killed run
            if f.name.endswith(".tmp"):
                f.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


def upscale_video(src: str | os.PathLike, dst: str | os.PathLike, scale: int, *, model: Any = None,
                  device: Any = None, precision: str | None = None, tile: int | None = None,
                  batch: int | None = None, codec: str | None = None, crf: int | None = None,
                  overwrite: bool = False, progress: bool | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, segment_frames: int | None = None,
                  ray_address: str | None = None, num_workers: int | None = None,
                  gpus_per_worker: float = 0) -> VideoResult:
    """Upscale the video ``src`` by ``scale`` into ``dst`` (.mp4, .m4v, .mov, .mkv or .webm).

    ``model``: what :class:`fastsr.Upscaler` takes (None: the bundled weights), or an Upscaler (``device`` /
    ``precision`` then None). ``tile``, ``max_pixels`` (per input frame): as for images. ``batch``: frames an
    engine call (4). ``progress``: a bar of frames (None: when stderr is a terminal). ``segment_frames``: the
    fewest frames of a resumable segment (None: 2 seconds' worth). Raised before anything is written:
    FileNotFoundError (no input), FileExistsError (``dst`` exists, no ``overwrite``), ValueError (``dst`` is
    ``src``; unknown container or codec; a codec the container cannot hold; a bad crf), :class:`VideoError`
    (not a video, no video stream, no frames, a frame over ``max_pixels``, another request's work folder).
    A stream corrupt mid-way raises VideoError naming the frame and its time; finished segments are kept.
    The result's notes are also logged (``fastsr.video`` logger). ``ray_address`` (not None; "": a local Ray):
    the segments are upscaled on Ray workers (:func:`fastsr.video_ray.run_segments`)."""
    batch = _check_int("batch", 4 if batch is None else batch, 1)
    _check_request(src, dst, codec, crf, overwrite)  # the cheap checks, before the model loads
    upscaler = _upscaler(model, "cuda" if gpus_per_worker and device is None else device, precision)
    with _sigterm_stops():
        job = plan_video(src, dst, scale, model=upscaler, codec=codec, crf=crf, overwrite=overwrite,
                         max_pixels=max_pixels, segment_frames=segment_frames)
        with _locked(Path(job.work)):
            resumed = len(job.done())
            show = sys.stderr.isatty() if progress is None else bool(progress)
            try:
                if ray_address is not None:
                    from .video_ray import run_segments
                    run_segments(job, upscale_segment, upscaler.model, precision=upscaler.precision, tile=tile,
                                 batch=batch, ray_address=ray_address, num_workers=num_workers,
                                 gpus_per_worker=gpus_per_worker, progress=show)
                else:
                    upscale_segments(job, upscaler, tile=tile, batch=batch, progress=show)
            except BaseException:
                if not job.done():  # nothing to resume from
                    shutil.rmtree(job.work, ignore_errors=True)
                raise
            join_segments(job, overwrite=overwrite)
    notes = [*job.notes, *([f"resumed: {resumed} of {len(job.segments)} segments were done before"] if resumed else [])]
    for note in notes:
        _log.info("%s: %s", job.dst, note)
    return VideoResult(Path(job.dst), job.total_frames, len(job.segments), resumed, tuple(notes))
