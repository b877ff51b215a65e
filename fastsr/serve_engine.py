"""The engine behind ``fastsr serve`` (no web framework here): the models loaded once, one worker thread that
runs them, a bounded queue in front of it, and the reading of an upload's bytes.

* :func:`load_upscalers`: each model spec (anything :func:`fastsr.sources.resolve_model` takes, or a ready
  :class:`~fastsr.Upscaler`) -> one :class:`~fastsr.Upscaler`, prepared once, under a unique name.
* :class:`Engine`: :meth:`Engine.submit` puts a :class:`Job` (the bytes of an image file, a model, a scale)
  on a queue of ``queue_size`` places and returns a ``concurrent.futures.Future`` of its :class:`Reply`; a
  full queue raises :class:`QueueFull` at once. One thread takes the jobs in order and, for each, decodes the
  image (pixel limit checked from the header, before decoding), upscales it and encodes the result in the
  format ``fastsr upscale`` would write (the input's, else PNG), in memory. Having taken a job, the worker
  also takes the jobs already queued, up to ``max_batch`` in all, and decodes them; those of one model and
  scale, without ensemble, whose images are 8-bit RGB or RGBA of one size and mode go through one upscaler
  call as an NxHxWxC numpy batch (each image's result is the one it gets alone, so every reply is still
  ``fastsr upscale``'s file byte for byte; a batch holds at most ``max_pixels`` input pixels). The others run
  one at a time. Each job of a batch gets the progress; a cancelled or failed one does not stop the others.
* :class:`BodyReader`: an upload (raw image bytes, or the ``file`` field of a multipart form) read chunk by
  chunk, refused past a byte limit; multipart is parsed as it streams, in memory (nothing goes to disk).

Errors are :class:`ServeError` with an HTTP status: 400 (not an image, a scale the model lacks, an unknown
model), 413 (too many bytes or pixels), 415 (a content type that is no image), 500 (anything unexpected:
logged, and the worker goes on with the next job).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["BodyReader", "Engine", "Job", "QueueFull", "Reply", "ServeError", "load_upscalers", "model_names"]

log = logging.getLogger("fastsr.serve")


class ServeError(Exception):
    """A request that fails with HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class QueueFull(ServeError):
    """The queue has no free place: 503, with ``Retry-After`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(503, f"the server is busy (queue full); retry in {retry_after} s",
                         {"Retry-After": str(retry_after)})


class Cancelled(Exception):
    """The client went away: the job stops at its next tile."""


@dataclass
class Reply:
    """An upscaled image file: its bytes, media type, Pillow format and a file name (``image_x<scale>.<ext>``)."""

    body: bytes
    media_type: str
    format: str
    filename: str
    model: str
    scale: int
    timings: dict[str, float]  # milliseconds: queue, decode, upscale, encode


@dataclass
class Job:
    """One upscale: the bytes of an image file, the model's name, the scale, the self-ensemble. ``on_progress
    (tiles_done, tiles_total)`` is called from the worker thread."""

    data: bytes
    model: str
    scale: int
    ensemble: bool = False
    on_progress: Callable[[int, int], None] | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)


def model_names(specs: Any) -> dict[str, Any]:
    """``None`` / one spec / a list of specs / a ``{name: spec}`` mapping -> ``{name: spec}``: a path's file
    stem, a preset's name, ``default`` for the bundled weights, the architecture for a module; made unique."""
    from .upscaler import Upscaler

    if isinstance(specs, Mapping):
        return {str(k): v for k, v in specs.items()}
    if specs is None or not isinstance(specs, (list, tuple)):
        specs = [specs]
    named: dict[str, Any] = {}
    for spec in specs:
        if spec is None:
            base = "default"
        elif isinstance(spec, (str, Path)):
            base = Path(spec).stem or str(spec)
        elif isinstance(spec, Upscaler):
            base = spec.model.config.arch
        else:
            base = getattr(getattr(spec, "config", None), "arch", None) or "model"
        name, n = base, 1
        while name in named:
            n += 1
            name = f"{base}-{n}"
        named[name] = spec
    return named


def load_upscalers(specs: Any, *, device: Any = None, precision: str | None = None) -> dict[str, Any]:
    """``{name: Upscaler}`` for :func:`model_names` of ``specs``: each model resolved and prepared once (an
    :class:`~fastsr.Upscaler` given is used as it is)."""
    from .upscaler import Upscaler

    named = model_names(specs)
    if not named:
        raise ValueError("no models to serve")
    return {name: spec if isinstance(spec, Upscaler) else Upscaler(spec, device=device, precision=precision)
            for name, spec in named.items()}


class Engine:
    """The warm models and the one thread that runs them, behind a queue of ``queue_size`` places."""

    def __init__(self, upscalers: Mapping[str, Any], *, queue_size: int = 8, max_pixels: int | None = None,
                 tile: int | None = None, max_batch: int = 4) -> None:
        if not upscalers:
            raise ValueError("no models to serve")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self.max_batch = max_batch
        self.upscalers = dict(upscalers)
        self.default_model = next(iter(self.upscalers))
        self.max_pixels = max_pixels
        self.tile = tile
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._seconds = 1.0  # a running mean of the seconds a job takes, for Retry-After
        self.busy = False

    # -- what the API shows
    def models(self) -> list[dict[str, Any]]:
        return [{"name": name, "arch": up.model.config.arch, "scales": list(up.scales),
                 "default_scale": self.default_scale(name), "default": name == self.default_model,
                 "device": str(up.device), "precision": up.precision}
                for name, up in self.upscalers.items()]

    def default_scale(self, model: str) -> int:
        scales = self.upscalers[model].scales
        return 4 if 4 in scales else max(scales)

    def resolve(self, model: str | None, scale: int | None) -> tuple[str, int]:
        """The model's name (None: the default) and the scale (None: 4 where it has it, else its largest);
        ServeError 400 for an unknown model or a scale it lacks."""
        name = self.default_model if model in (None, "") else model
        if name not in self.upscalers:
            raise ServeError(400, f"unknown model {name!r}; this server has: {', '.join(self.upscalers)}")
        scale = self.default_scale(name) if scale is None else scale
        try:
            self.upscalers[name].check_scale(scale)
        except (TypeError, ValueError) as e:
            raise ServeError(400, str(e)) from None
        return name, scale

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def retry_after(self) -> int:
        return max(1, min(3600, math.ceil(self._seconds * (self.queued + 1))))

    def check_room(self) -> None:
        """QueueFull now if there is no free place (checked again by :meth:`submit`)."""
        if self._queue.full():
            raise QueueFull(self.retry_after())

    # -- the work
    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queue ``job``; :class:`QueueFull` if no place is free. The future gives a :class:`Reply` or raises
        :class:`ServeError` (or :class:`Cancelled`)."""
        self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(self.retry_after()) from None
        return job.future

    def close(self) -> None:
        """Stop the worker after the job it runs (queued jobs are cancelled)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait().future.cancel()
            except queue.Empty:
                break

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._work, name="fastsr-serve-engine", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(jobs) < self.max_batch:  # and whatever else is queued already, for batches
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job in jobs if not job.cancelled.is_set() and job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            self.busy = True
            start = time.perf_counter()
            try:
                self._process(jobs)
            except BaseException as e:  # noqa: BLE001 - every failure is the jobs', never the worker's
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(self._as_error(e))
            finally:
                self.busy = False
                seconds = (time.perf_counter() - start) / len(jobs)
                self._seconds = 0.7 * self._seconds + 0.3 * seconds

    @staticmethod
    def _as_error(e: BaseException) -> BaseException:
        from .imageio import PixelLimitError

        if isinstance(e, (ServeError, Cancelled)):
            return e
        if isinstance(e, PixelLimitError):
            return ServeError(413, str(e))
        if isinstance(e, (ValueError, TypeError)):
            return ServeError(400, str(e))
        log.error("fastsr serve: a job failed", exc_info=e)
        return ServeError(500, f"internal error ({type(e).__name__}); the server's log has the details")

    def _process(self, jobs: list[Job]) -> None:
        """Decode ``jobs`` (running), then upscale them in batches of one key, then encode each one's result.
        Every failure is that job's (or that batch's), never the worker's."""
        from .imageio import decode_image

        batches: dict[Any, list[_Taken]] = {}
        for job in jobs:
            t0 = time.perf_counter()
            try:
                im = decode_image(job.data, "upload", max_pixels=self.max_pixels)
            except BaseException as e:  # noqa: BLE001
                job.future.set_exception(self._as_error(e))
                continue
            taken = _Taken(job, im, {"queue": t0 - job.queued_at, "decode": time.perf_counter() - t0})
            # Batched: plain 8-bit RGB / RGBA (numpy takes those as they are), no ensemble; ICC only goes
            # into the encoding, which stays per job.
            key = ((job.model, job.scale, im.size, im.mode) if im.mode in ("RGB", "RGBA") and not job.ensemble
                   else id(taken))
            batches.setdefault(key, []).append(taken)
        for batch in batches.values():
            chunk: list[_Taken] = []
            for taken in batch:  # at most max_pixels input pixels in one call (memory as for one image)
                w, h = taken.im.size
                if chunk and self.max_pixels is not None and (len(chunk) + 1) * w * h > self.max_pixels:
                    self._upscale(chunk)
                    chunk = []
                chunk.append(taken)
            self._upscale(chunk)

    def _upscale(self, batch: list[_Taken]) -> None:
        """One upscaler call for ``batch`` (one image as it is, more as a numpy batch), then the replies."""
        import numpy as np
        from PIL import Image

        first = batch[0].job
        upscaler = self.upscalers[first.model]

        def on_tile(done: int, total: int) -> None:
            live = [t for t in batch if t.error is None and not t.job.cancelled.is_set()]
            if not live:
                raise Cancelled
            for t in live:
                if t.job.on_progress is not None:
                    try:
                        t.job.on_progress(done, total)
                    except BaseException as e:  # noqa: BLE001 - that job's failure, not the batch's
                        t.error = e

        t1 = time.perf_counter()
        try:
            if len(batch) == 1:
                results = [upscaler(batch[0].im, first.scale, tile=self.tile, ensemble=first.ensemble,
                                    max_pixels=self.max_pixels, on_tile=on_tile)]
            else:
                stacked = np.stack([np.asarray(t.im) for t in batch])
                results = [Image.fromarray(a) for a in upscaler.upscale_batch(
                    stacked, first.scale, tile=self.tile, max_pixels=self.max_pixels, on_tile=on_tile)]
        except BaseException as e:  # noqa: BLE001
            for t in batch:
                t.job.future.set_exception(self._as_error(t.error or e))
            return
        upscale = time.perf_counter() - t1
        for t, result in zip(batch, results):
            if t.error is not None or t.job.cancelled.is_set():
                t.job.future.set_exception(self._as_error(t.error or Cancelled()))
                continue
            try:
                reply = self._reply(t, result, upscale)
            except BaseException as e:  # noqa: BLE001
                t.job.future.set_exception(self._as_error(e))
            else:
                t.job.future.set_result(reply)

    @staticmethod
    def _reply(taken: _Taken, result: Any, upscale: float) -> Reply:
        from PIL import Image

        from .imageio import encode_image
        from .inputs import Source, image_output_for

        job, im = taken.job, taken.im
        t2 = time.perf_counter()
        # The CLI's rule for the format; the name is "image", never the client's file name.
        out, fmt = image_output_for(Source(PurePosixPath("image")), im, scale=job.scale)
        body = encode_image(result, fmt, icc_profile=im.info.get("icc_profile"))
        ms = {**taken.ms, "upscale": upscale, "encode": time.perf_counter() - t2}
        return Reply(body, Image.MIME.get(fmt, "application/octet-stream"), fmt, out.name, job.model, job.scale,
                     {k: round(v * 1000, 1) for k, v in ms.items()})


@dataclass(eq=False)
class _Taken:
    """A job the worker took and decoded: its image, its timings so far, and a failure of its own."""

    job: Job
    im: Any
    ms: dict[str, float]
    error: BaseException | None = None


# ------------------------------------------------------------------------------------------------ uploads

_RAW_TYPES = ("application/octet-stream",)


class BodyReader:
    """The image bytes of one upload, fed chunk by chunk (:meth:`feed`), then :meth:`result`.

    ``content_type``: ``image/*`` or ``application/octet-stream`` (the body is the file), or
    ``multipart/form-data`` (the file is the field ``file``); anything else is ServeError 415. More than
    ``limit`` bytes in all is ServeError 413, raised by the :meth:`feed` that passes it.
    """

    def __init__(self, content_type: str | None, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._data = bytearray()
        self._parser = None
        media = (content_type or "").split(";")[0].strip().lower()
        if media == "multipart/form-data":
            self._parser = self._multipart(content_type or "")
        elif not (media.startswith("image/") or media in _RAW_TYPES):
            shown = f"{media!r}" if media else "none"
            raise ServeError(415, f"unsupported content type {shown}: send the image file's bytes with an image/* "
                                  "(or application/octet-stream) content type, or as the field 'file' of a "
                                  "multipart/form-data form")

    def _multipart(self, content_type: str):
        try:
            from python_multipart.multipart import MultipartParser, parse_options_header
        except ImportError:  # python-multipart < 0.0.13
            from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise ServeError(400, "multipart/form-data without a boundary")
        state: dict[str, Any] = {"field": b"", "value": b"", "name": None, "found": False}

        def header_field(data: bytes, start: int, end: int) -> None:
            state["field"] += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            state["value"] += data[start:end]

        def header_end() -> None:
            if state["field"].lower() == b"content-disposition":
                state["name"] = parse_options_header(state["value"])[1].get(b"name")
            state["field"], state["value"] = b"", b""

        def part_begin() -> None:
            state["name"] = None

        def part_data(data: bytes, start: int, end: int) -> None:
            if state["name"] == b"file":
                self._data += data[start:end]

        def part_end() -> None:
            if state["name"] == b"file":
                state["found"] = True

        self._form = state
        return MultipartParser(boundary, {"on_header_field": header_field, "on_header_value": header_value,
                                          "on_header_end": header_end, "on_part_begin": part_begin,
                                          "on_part_data": part_data, "on_part_end": part_end})

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise self.too_large(self.limit)
        if self._parser is None:
            self._data += chunk
            return
        try:
            self._parser.write(chunk)
        except Exception as e:  # noqa: BLE001 - the parser's errors are the form's
            raise ServeError(400, f"malformed multipart form: {e}") from None

    @staticmethod
    def too_large(limit: int) -> ServeError:
        return ServeError(413, f"the upload is over the limit of {limit:,} bytes (--max-body-bytes)")

    def result(self) -> bytes:
        if self._parser is not None:
            try:
                self._parser.finalize()
            except Exception as e:  # noqa: BLE001
                raise ServeError(400, f"malformed multipart form: {e}") from None
            if not self._form["found"]:
                raise ServeError(400, "the multipart form has no field 'file' (the image file)")
        if not self._data:
            raise ServeError(400, "not an image: the upload is empty")
        return bytes(self._data)
