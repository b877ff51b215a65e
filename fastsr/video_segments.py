"""The work of :func:`fastsr.upscale_video` on a planned job (:class:`VideoJob`, a work folder's manifest).

Segments are the frames with pts in ``[start, next start)``, each start an input keyframe.
:func:`upscale_segments` overlaps a decoder thread (seek, decode, :func:`to_rgb`), the model in the calling
thread (``batch`` frames an engine call) and an encoder thread (each segment an MP4 in the input's time base,
every frame keeping its pts, renamed into place when complete), joined by bounded queues.
:func:`join_segments` remuxes the segments' packets (pts kept, dts made increasing across the joins) with the
input's other streams into the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import VideoError, first_line
from ._files import forget_temp, move_into_place, open_temp_beside

# AVColorSpace -> swscale's matrix names (PyAV's Colorspace); 0 (RGB) needs none.
SWS_MATRIX = {1: "itu709", 4: "fcc", 5: "itu601", 6: "itu601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_RANGE = {1: "MPEG", 2: "JPEG"}
_COLOURS = ("matrix", "range", "primaries", "trc")


def _flags():
    """swscale: accurate rounding and full-resolution chroma both ways (its defaults take shortcuts)."""
    from av.video.reformatter import Interpolation as I

    return I.BICUBIC | I.ACCURATE_RND | I.FULL_CHR_H_INT | I.FULL_CHR_H_INP


@dataclass
class VideoJob:
    """A work folder's manifest. ``segments``: ``[start_pts, frames]`` each (the first start None);
    ``streams``: ``{"index", "type", "codec", "action"}`` each, action ``copy``, ``attach``, ``drop`` or
    ``encode:<codec>``; colours: AVColorSpace / Range / Primaries / Trc numbers of the input as read
    (``colour``) and of the output (``out_colour``)."""

    src: str
    dst: str
    work: str
    container: str
    identity: dict[str, Any]
    stream_index: int
    width: int
    height: int
    scale: int
    time_base: tuple[int, int]
    rate: tuple[int, int] | None
    sar: tuple[int, int] | None
    codec: str
    crf: int | None
    pix_fmt: str
    deep: bool
    colour: dict[str, int]
    out_colour: dict[str, int]
    display_matrix: list[int] | None
    segments: list[list[Any]]
    streams: list[dict[str, Any]]
    notes: list[str]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoJob:
        return cls(**{k: tuple(v) if k in ("time_base", "rate", "sar") and v else v for k, v in d.items()})

    @property
    def tb(self) -> Fraction:
        return Fraction(*self.time_base)

    @property
    def total_frames(self) -> int:
        return sum(n for _, n in self.segments)

    def segment_path(self, i: int) -> Path:
        return Path(self.work) / f"segment-{i:05d}.mp4"

    def segment_end(self, i: int) -> int | None:
        return self.segments[i + 1][0] if i + 1 < len(self.segments) else None

    def frames_before(self, i: int) -> int:
        return sum(n for _, n in self.segments[:i])

    def done(self) -> list[int]:
        return [i for i in range(len(self.segments)) if self.segment_path(i).is_file()]

    def pending(self) -> list[int]:
        return [i for i in range(len(self.segments)) if not self.segment_path(i).is_file()]


def model_identity(upscaler) -> str:
    """SHA-256 of the model's config and weights: what makes two runs' frames the same."""
    import torch

    h = hashlib.sha256(repr(upscaler.model.config).encode())
    for name, t in sorted(upscaler.model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def to_rgb(frame, job: VideoJob) -> np.ndarray:
    """A decoded frame as HxWx3 RGB (uint8; uint16 if ``job.deep``) with the job's colour matrix and range."""
    c = job.colour
    yuv = {} if frame.format.is_rgb else {"src_colorspace": SWS_MATRIX[c["matrix"]],
                                          "src_color_range": _RANGE[c["range"]]}
    return frame.reformat(format="rgb48le" if job.deep else "rgb24", interpolation=_flags(), **yuv).to_ndarray()


def from_rgb(rgb: np.ndarray, job: VideoJob):
    """An upscaled RGB frame as a frame of ``job.pix_fmt`` tagged with the output colours."""
    import av

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
    out = job.out_colour
    yuv = {} if av.VideoFormat(job.pix_fmt).is_rgb else {"dst_colorspace": SWS_MATRIX[out["matrix"]],
                                                         "dst_color_range": _RANGE[out["range"]]}
    frame = frame.reformat(format=job.pix_fmt, interpolation=_flags(), **yuv)
    frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc = (out[k] for k in _COLOURS)
    return frame


def _upscale_batch(upscaler, frames: list[np.ndarray], scale: int, tile: int | None) -> np.ndarray:
    """N frames (HxWx3 uint8 / uint16) in one engine call (:meth:`fastsr.Upscaler.upscale_batch`), each as
    ``upscaler(frame, scale, tile=tile)``."""
    return upscaler.upscale_batch(np.stack(frames), scale, tile=tile, max_pixels=None)


@dataclass(frozen=True)
class _Mark:
    """In the queues: a segment's end; a decoding error (after the frames before it); with neither, the end."""

    index: int | None = None
    error: Exception | None = None


_END = _Mark()


class _Stopped(BaseException):
    """Raised in a stage when another stage failed or the run was interrupted."""


class _Pipe:
    """The stages' shared stop flag and first error; queue waits that give up when it is set."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def put(self, q: queue.Queue, item: Any) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(queue.Full):
                return q.put(item, timeout=0.1)
        raise _Stopped

    def get(self, q: queue.Queue) -> Any:
        while not self.stop.is_set():
            with contextlib.suppress(queue.Empty):
                return q.get(timeout=0.1)
        raise _Stopped

    def run(self, fn, *args) -> None:
        try:
            fn(*args)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread, which raises it
            self.error = self.error or e
            self.stop.set()

    def thread(self, fn, *args) -> threading.Thread:
        (t := threading.Thread(target=self.run, args=(fn, *args), daemon=True, name=f"fastsr-{fn.__name__}")).start()
        return t


def _corrupt(job: VideoJob, index: int, t: float | None, detail: str) -> VideoError:
    where = f"frame {index}" + (f" (t = {t:.3f} s)" if t is not None else "")
    return VideoError(f"{job.src}: the video stream is corrupt at {where}: {detail}")


def _decode(job: VideoJob, indices: list[int], pipe: _Pipe, q: queue.Queue) -> None:
    try:
        for _, group in itertools.groupby(enumerate(indices), key=lambda p: p[1] - p[0]):
            run = [i for _, i in group]  # consecutive segments: one seek
            if not _decode_run(job, run, pipe, q, seek=True):
                _decode_run(job, run, pipe, q, seek=False)  # the seek landed past the keyframe: from the start
    except Exception as e:  # noqa: BLE001 - passed down after the frames before it
        return pipe.put(q, _Mark(error=e))
    pipe.put(q, _END)


def _decode_run(job: VideoJob, run: list[int], pipe: _Pipe, q: queue.Queue, seek: bool) -> bool:
    """Decode segments ``run`` (consecutive) into ``q``; False if a seek missed the first segment's start."""
    import av

    start, tb = job.segments[run[0]][0], job.tb
    k, count, base = 0, 0, job.frames_before(run[0])  # position in run, its frames so far, frames before it

    def finish() -> None:
        if count == 0:
            raise _corrupt(job, base, None, f"no frame decoded in segment {run[k]}")
        pipe.put(q, _Mark(run[k]))

    with av.open(job.src) as c:
        stream = c.streams[job.stream_index]
        stream.thread_type = "SLICE"  # frame threads would report an error frames after the broken one
        if seek and start is not None:
            c.seek(start, stream=stream, backward=True, any_frame=False)
        first = True
        for packet in c.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                t = float(packet.pts * tb) if packet.pts is not None else None
                raise _corrupt(job, base + count, t, first_line(e)) from None
            for f in frames:
                if f.pts is None:
                    raise VideoError(f"{job.src}: a frame has no timestamp (remux the raw stream into .mkv first)")
                if start is not None and f.pts < start:
                    continue
                if first and start is not None and f.pts != start:
                    if seek:
                        return False
                    raise VideoError(f"{job.src}: no frame at the keyframe pts {start} of segment {run[0]}")
                first = False
                while job.segment_end(run[k]) is not None and f.pts >= job.segment_end(run[k]):
                    finish()
                    k, count, base = k + 1, 0, base + job.segments[run[k]][1]
                    if k == len(run):
                        return True
                index = base + count
                if f.is_corrupt:
                    raise _corrupt(job, index, float(f.pts * tb), "the decoder flagged the frame as corrupt")
                if (f.width, f.height) != (job.width, job.height):
                    raise VideoError(f"{job.src}: the frame size changes at frame {index} ({job.width}x{job.height} "
                                     f"-> {f.width}x{f.height}); a video must keep one frame size")
                pipe.put(q, (run[k], f.pts, to_rgb(f, job)))
                count += 1
    finish()
    if k + 1 < len(run):
        raise _corrupt(job, base + job.segments[run[k]][1], None, "the stream ends before its last segments")
    return True


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class _SegmentFile:
    """One segment's MP4 under a temporary name, renamed when finished (or removed when aborted)."""

    def __init__(self, job: VideoJob, index: int) -> None:
        import av

        self.job, self.path = job, job.segment_path(index)
        f, self.tmp = open_temp_beside(self.path)
        f.close()
        try:
            self.out = av.open(str(self.tmp), "w", format="mp4",
                               options={"video_track_timescale": str(job.time_base[1])})
            crf = {} if job.crf is None else {"crf": str(job.crf)}
            options = {"libx264": crf, "libx265": {**crf, "x265-params": "log-level=error"},
                       "libvpx-vp9": {**crf, "b": "0", "row-mt": "1"}, "ffv1": {"level": "3", "slicecrc": "1"}}
            s = self.out.add_stream(job.codec, options=options[job.codec])  # vp9: CRF needs b=0
            s.width, s.height, s.pix_fmt = job.width * job.scale, job.height * job.scale, job.pix_fmt
            cc = s.codec_context
            s.time_base = cc.time_base = job.tb
            for attr, value in (("framerate", job.rate), ("sample_aspect_ratio", job.sar)):
                if value:
                    setattr(cc, attr, Fraction(*value))
            out = job.out_colour
            cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = (out[k] for k in _COLOURS)
            cc.gop_size = 1 if job.codec == "ffv1" else cc.gop_size  # ffv1: intra-only
            self.stream = s
        except BaseException:
            forget_temp(self.tmp)
            raise

    def write(self, rgb: np.ndarray, pts: int) -> None:
        frame = from_rgb(rgb, self.job)
        frame.pts, frame.time_base = pts, self.job.tb
        self.out.mux(self.stream.encode(frame))

    def finish(self) -> None:
        try:
            self.out.mux(self.stream.encode(None))
            self.out.close()
            _fsync(self.tmp)
            os.replace(self.tmp, self.path)
        finally:
            forget_temp(self.tmp)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.out.close()
        forget_temp(self.tmp)


def _encode(job: VideoJob, pipe: _Pipe, q: queue.Queue) -> None:
    seg: _SegmentFile | None = None
    try:
        while (item := pipe.get(q)) is not _END:
            if isinstance(item, _Mark):
                seg.finish()  # type: ignore[union-attr]  # a segment's end follows its frames
                seg = None
                continue
            seg = seg or _SegmentFile(job, item[0])
            seg.write(item[2], item[1])
    finally:
        if seg is not None:
            seg.abort()


def upscale_segments(job: VideoJob, upscaler, indices: list[int] | None = None, *, tile: int | None = None,
                     batch: int = 4, progress: bool = False) -> int:
    """Upscale segments ``indices`` of ``job`` (default: the ones not done) into their files; the number of
    frames upscaled. Decoding, the model and encoding overlap; an error in any stage, Ctrl-C or SIGTERM stops
    all three and removes the unfinished segment's temporary file (finished segments stay)."""
    from tqdm import tqdm

    indices = job.pending() if indices is None else sorted(set(indices))
    if not indices:
        return 0
    pipe, q_in, q_out = _Pipe(), queue.Queue(maxsize=2 * batch), queue.Queue(maxsize=2 * batch)
    todo = sum(job.segments[i][1] for i in indices)
    bar = tqdm(total=job.total_frames, initial=job.total_frames - todo, unit="frame", disable=not progress,
               desc=Path(job.dst).name, dynamic_ncols=True)
    threads = [pipe.thread(_decode, job, indices, pipe, q_in), pipe.thread(_encode, job, pipe, q_out)]
    done, failure, pending = 0, None, []  # pending: the items waiting for a batch, in order
    try:
        while True:
            item = pipe.get(q_in)
            if isinstance(item, _Mark) and item.error is not None:
                failure, item = item.error, _END  # finish what came before it
            pending.append(item)
            frames = [p for p in pending if not isinstance(p, _Mark)]
            # A full batch, the end, or a segment's end with no frame before it waiting (finish it now).
            if len(frames) == batch or item is _END or not frames:
                if frames:
                    outs = iter(_upscale_batch(upscaler, [p[2] for p in frames], job.scale, tile))
                    pending = [p if isinstance(p, _Mark) else (p[0], p[1], next(outs)) for p in pending]
                    done += len(frames)
                    bar.update(len(frames))
                for p in pending:
                    pipe.put(q_out, p)
                pending = []
            if item is _END:
                break
        threads[1].join()
    except _Stopped:
        pass
    finally:
        pipe.stop.set()
        for t in threads:
            t.join()
        bar.close()
    finished = len(job.done())
    if pipe.error is None and isinstance(failure, VideoError) and finished:
        failure = VideoError(f"{failure}; the {finished} finished segment(s) are kept in {job.work} for a resume")
    if pipe.error is not None or failure is not None:
        raise pipe.error or failure  # type: ignore[misc]
    return done


# --------------------------------------------------------------------------------------------- join

_ORDER = itertools.count()  # a tie-break for packets at the same time: never compare two packets

# Tags of the input's encoding, stale once the video is re-encoded.
_STALE = ("encoder", "handler_name", "vendor_id", "duration", "bps", "number_of_", "_statistics", "major_brand",
          "minor_version", "compatible_brands", "rotate")


def _fresh(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.lower().startswith(_STALE)}


def _video_packets(job: VideoJob, extradata: bytes | None):
    """The segments' video packets in order; dts raised where a join would repeat it (pts untouched)."""
    import av

    last = None
    for i in range(len(job.segments)):
        with av.open(str(job.segment_path(i))) as c:
            s = c.streams.video[0]
            if s.codec_context.extradata != extradata:
                raise VideoError(f"{job.segment_path(i)} has other codec headers than segment 0 (another "
                                 "encoder build?); run again with overwrite=True")
            for p in c.demux(s):
                if p.size == 0:
                    continue
                if last is not None and p.dts is not None and p.dts <= last:
                    p.dts = last + 1
                if p.dts is not None and p.pts is not None and p.dts > p.pts:
                    raise VideoError(f"cannot join {job.segment_path(i)}: its decoding delay overlaps the previous "
                                     "segment; run again with overwrite=True")
                last = p.dts
                yield float((p.dts if p.dts is not None else p.pts) * p.time_base), next(_ORDER), None, p


def _input_packets(container, streams):
    last = 0.0
    for p in container.demux(*streams):
        ts = p.dts if p.dts is not None else p.pts
        last = float(ts * p.time_base) if ts is not None else last
        yield last, next(_ORDER), p.stream.index, p


def _audio_encoder(out, codec: str, src):
    import av

    rates = av.Codec(codec, "w").audio_rates
    s = out.add_stream(codec, rate=src.rate if not rates or src.rate in rates else 48000, layout=src.layout.name)
    s.bit_rate = 192_000
    return s


def join_segments(job: VideoJob, *, overwrite: bool = False) -> Path:
    """Join the finished segments of ``job`` and the input's other streams into ``job.dst`` (atomically);
    removes the work folder. VideoError when a segment is missing, FileExistsError when ``job.dst`` exists
    and not ``overwrite``."""
    import av

    if job.pending():
        raise VideoError(f"cannot join {job.work}: segment(s) {job.pending()[:5]} not done yet")
    tmp = Path(job.work) / "joined.tmp"
    tmp.unlink(missing_ok=True)
    options = {"movflags": "+faststart"} if job.container in ("mp4", "mov") else {}
    try:
        with (av.open(job.src, metadata_errors="replace") as inp, av.open(str(job.segment_path(0))) as seg0,
              av.open(str(tmp), "w", format=job.container, options=options) as out):
            out.metadata.update(_fresh(inp.metadata))
            vin, tpl = inp.streams[job.stream_index], seg0.streams.video[0]
            vout = out.add_stream_from_template(tpl, opaque=True)
            vout.metadata.update(_fresh(vin.metadata))
            vout.disposition = vin.disposition
            if job.codec == "libx265" and job.container in ("mp4", "mov"):
                vout.codec_tag = "hvc1"  # the tag Apple players require
            if job.display_matrix:
                vout.set_display_matrix(job.display_matrix)
            targets: dict[int, Any] = {}  # input stream index -> output stream
            encoders: dict[int, Any] = {}
            # mov_text in MP4 / MOV: the muxer writes its own empty samples for the gaps between subtitles.
            gaps = {p["index"] for p in job.streams if p["codec"] == "mov_text" and job.container in ("mp4", "mov")}
            for plan in job.streams:
                s, action = inp.streams[plan["index"]], plan["action"]
                if action == "copy":
                    targets[s.index] = out.add_stream_from_template(s, opaque=True)
                elif action.startswith("encode:"):
                    targets[s.index] = encoders[s.index] = _audio_encoder(out, action[7:], s)
                elif action == "attach":
                    out.add_attachment(s.metadata.get("filename", f"attachment{s.index}"), s.mimetype, s.data)
                if s.index in targets:
                    targets[s.index].metadata.update(s.metadata)
                    targets[s.index].disposition = s.disposition
            if hasattr(inp, "chapters") and inp.chapters():  # chapters(): not in every PyAV
                out.set_chapters(inp.chapters())
            copied = [inp.streams[i] for i in targets]
            merged = heapq.merge(_video_packets(job, tpl.codec_context.extradata),
                                 _input_packets(inp, copied) if copied else iter(()))
            for _, _, index, p in merged:  # index None: a video packet
                if index in encoders:
                    for frame in p.stream.decode(p if p.size else None):
                        out.mux(encoders[index].encode(frame))
                elif p.size and not (index in gaps and bytes(p) == b"\0\0"):
                    p.stream = vout if index is None else targets[index]
                    out.mux(p)
            for enc in encoders.values():
                out.mux(enc.encode(None))
        _fsync(tmp)
        move_into_place(tmp, Path(job.dst), overwrite=overwrite)
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot write {job.dst}: {first_line(e)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    shutil.rmtree(job.work, ignore_errors=True)
    return Path(job.dst)
