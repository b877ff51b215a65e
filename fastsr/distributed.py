"""Upscaling datasets on a Ray cluster: :func:`upscale_dataset` and ``fastsr upscale ... --ray [ADDRESS]``.

Needs the ``ray`` extra (``pip install 'fastsr[ray]'``: Ray Data, with pyarrow); ``import fastsr`` and this
module import Ray only when a function here runs.

The pipeline is Ray Data's: the inputs (files, folders and globs as the CLI takes them, or URIs that pyarrow's
filesystems open: ``s3://``, ``gs://``, ``file://``) become a dataset of file names; read tasks fetch each
file's bytes; an actor pool of ``num_workers`` workers, each holding one :class:`fastsr.Upscaler` (the model
loaded once per worker, on one GPU or on CPU threads), decodes them with the CLI's rules
(:func:`fastsr.imageio.decode_image`, the bytes twin of ``read_image``), upscales them with bounded memory
(tiles from the worker's budget), and writes each result atomically (:func:`fastsr.imageio.write_image`: a
hidden temporary, then a rename). The outputs are named and encoded as ``fastsr upscale ... -o DIR`` names
and encodes them, and hold the same pixels.

Exactly-once, in effect
-----------------------
An output is complete when its final name exists: files are only ever renamed into place, whole. So:

* **Resume.** A re-run reads each input again to name its output as the CLI does, finds the complete ones
  and skips them (counted as ``skipped``); the model runs only for the rest. Hidden temporaries a killed run
  left in the output folder (``.NAME.<16 hex>.tmp``) are removed at the start and at the end of a run, and
  are never taken for results.
* **Retries.** A worker that dies or raises is restarted by Ray and its batch retried (``MAX_TASK_RETRIES``
  times). Outputs the dead attempt had already renamed into place are found by the retry and counted as
  done, not written again: without ``overwrite`` the rename is a hard link that cannot replace a file; with
  ``overwrite``, a file that is no longer the one the run started with (inode, size, mtime) was written by
  this run and is left alone. A batch that still fails is reported per image, and the others go on.
* **Collisions.** Two inputs that would write the same output (``a.png`` and ``a.gif`` both become
  ``a.png``; the same file listed twice) are resolved as in the CLI: the first in input order writes it,
  the later ones fail with "another input is already written to ...", whichever worker gets them first.

One run per output folder at a time: the clean-up of temporaries assumes no other writer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import posixpath
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .imageio import DEFAULT_MAX_PIXELS
from .inputs import OutputPlan, Source, expand_inputs, failure_reason, image_output_for

__all__ = ["upscale_dataset", "Summary", "Failure", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'fastsr[ray]'"
# Batches a worker may fail (raise, or die with its process) before their images are reported as failed.
MAX_TASK_RETRIES = 3
# Logical CPUs one read task reserves: reading is I/O. The actors get what is left, so that with any
# pool size the read tasks always have room to run (on 2 CPUs, two 1-CPU actors and a 1-CPU read task
# would each wait for the other forever).
READ_CPUS = 0.25
# How long to wait for a TCP connection to a cluster's address before saying it is unreachable.
CONNECT_TIMEOUT_S = 5.0
# How long Ray Data may wait for the workers to start (a cluster that cannot place them fails, not hangs).
WAIT_FOR_WORKERS_S = 600
_ADDRESS = re.compile(r"^(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
# fastsr._files' temporary names: "." + (a prefix of) the final name + "." + 16 hex digits + ".tmp".
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$", re.DOTALL)


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Failure:
    """An input that was not upscaled: ``input`` as given (a path or URI) and ``reason`` as the CLI prints it."""

    input: str
    reason: str


@dataclass
class Summary:
    """What :func:`upscale_dataset` did: ``done`` images upscaled and written by this run, ``skipped`` whose
    complete output already existed, and ``failures`` (input and reason each)."""

    done: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(f"upscaling on Ray needs Ray Data, which is not installed: {INSTALL_HINT} "
                          f"(ray[data]>=2.40,<3) ({e})") from None
    return ray


# ------------------------------------------------------------------------------------ the inputs (driver)


@dataclass
class _Item:
    index: int  # the input order: the first of two inputs that collide writes the output
    name: str  # the path or URI as shown in messages
    key: str  # what the reader opens: a local path, or a path on filesystems[fs]
    fs: int  # -1: the local filesystem


def _plan_inputs(specs: Sequence[str]) -> tuple[list[_Item], list[Any], list[str]]:
    """Files, folders, globs and URIs (:func:`fastsr.inputs.expand_inputs`) -> items, pyarrow filesystems,
    errors."""
    sources, errors = expand_inputs(specs, uris=True)
    items: list[_Item] = []
    filesystems: list[Any] = []
    where: dict[int, int] = {}  # id(filesystem) -> its index: one filesystem per URI, shipped once
    for index, s in enumerate(sources):
        if s.filesystem is None:
            items.append(_Item(index, s.name, os.path.abspath(s.path), -1))
            continue
        if id(s.filesystem) not in where:
            where[id(s.filesystem)] = len(filesystems)
            filesystems.append(s.filesystem)
        items.append(_Item(index, s.name, str(s.path), where[id(s.filesystem)]))
    return items, filesystems, errors


def _collisions(items: list[_Item]) -> dict[int, list[tuple[str, str, int]]]:
    """For each item whose output name could be an earlier item's (the same stem: the extension depends on
    the decoded format), the earlier items, in input order, as (name, key, fs)."""
    by_stem: dict[str, list[_Item]] = {}
    for item in items:
        by_stem.setdefault(posixpath.splitext(posixpath.basename(item.key.replace(os.sep, "/")))[0], []).append(item)
    out: dict[int, list[tuple[str, str, int]]] = {}
    for group in by_stem.values():
        for i, item in enumerate(group[1:], 1):
            out[item.index] = [(g.name, g.key, g.fs) for g in group[:i]]
    return out


def _inputs_in(folder: Path, items: list[_Item], filesystems: list[Any]) -> list[Path]:
    """The local inputs that an output in ``folder`` could be (an output never replaces an input): only those
    in the folder (by their absolute or resolved path), so the plan shipped to the workers stays small."""
    from pyarrow import fs as pafs

    places = {folder, folder.resolve()}
    found = []
    for item in items:
        if item.fs < 0 or isinstance(filesystems[item.fs], pafs.LocalFileSystem):
            path = Path(os.path.abspath(item.key))
            if path.parent in places or path.resolve().parent in places:
                found.append(path)
    return found


def _remove_stale_temps(folder: Path) -> int:
    """Remove the hidden temporaries (``.NAME.<16 hex>.tmp``) that a killed writer left in ``folder``."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if _TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _existing_outputs(folder: Path) -> dict[str, tuple[int, int, int]]:
    """The files already in the output folder: name -> (inode, size, mtime in ns)."""
    found = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if _TEMP_NAME.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat()
                found[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


# -------------------------------------------------------------------------------- the cluster (driver)


def parse_address(address: str | None) -> str | None:
    """A Ray cluster address as ``upscale_dataset(ray_address=...)`` and ``--ray ADDRESS`` take it: None for
    None, "" and "local" (start a local instance), else "auto" or HOST:PORT / ray://HOST:PORT; ValueError for
    the rest."""
    if address is None:
        return None
    if not isinstance(address, str):
        raise TypeError(f"ray_address must be a str or None, got {type(address).__name__}")
    address = address.strip()
    if address in ("", "local"):
        return None
    if address == "auto" or _ADDRESS.match(address):
        return address
    raise ValueError(f"not a Ray cluster address: {address!r}; use HOST:PORT (the head node's `ray start --head` "
                     "port, 6379 by default), ray://HOST:PORT or auto")


def check_reachable(address: str) -> None:
    """ConnectionError naming ``address`` unless a TCP connection to it opens within CONNECT_TIMEOUT_S (Ray's
    own connect retries for minutes)."""
    if address == "auto":
        return
    host, port = _ADDRESS.match(address).groups()  # type: ignore[union-attr]
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConnectionError(f"cannot reach a Ray cluster at {address}: {reason} (start one there with "
                              "`ray start --head`, or leave the address out for a local instance)") from None


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Ray's own reporting off unless ``verbose`` (the summary reports every image that failed): the driver's
    "ray" logger at ERROR (Ray Data's at CRITICAL) and the C++ core of a driver started here at FATAL; with
    ``log_to_driver`` off (:func:`connect`) the workers' output stays in their log files. The raylet's
    notices (a worker died, a task is retried), which Ray's driver prints on stdout, have no switch:
    ``fastsr upscale --ray`` points stdout at the null device for the run."""
    if verbose:
        yield
        return
    levels = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
    backend = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    os.environ["RAY_BACKEND_LOG_LEVEL"] = backend or "fatal"
    try:
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if backend is None:
            os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """The Python handlers of SIGINT and SIGTERM as they were before Ray started: its C++ core installs a
    crash handler for SIGTERM (which dumps and aborts), and the CLI's handler cleans up and exits with 143."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if sig}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(sig, handler)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on the null device while Ray starts: its C++ start-up lines, and the processes it
    starts (which log to files), print nothing on the terminal. Python errors still raise."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def connect(ray, address: str | None, verbose: bool) -> Iterator[None]:
    """Ray for the run: the instance this process already uses, the cluster at ``address``, or a local
    instance started here; shut down (left) at the end only if it was started (joined) here."""
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto") and address.removeprefix("ray://") != current:
            raise ValueError(f"this process already uses the Ray cluster at {current}, not {address}; "
                             "leave ray_address out to use it, or call ray.shutdown() first")
        yield
        return
    options: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    with _signal_handlers_kept(), contextlib.nullcontext() if verbose else _stderr_silenced():
        if address is None:
            ray.init(address="local", include_dashboard=False, **options)
        else:
            try:
                ray.init(address=address, **options)
            except ConnectionError as e:
                raise ConnectionError(f"cannot join the Ray cluster at {address}: {e}") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _data_context(ray, verbose: bool) -> Iterator[Any]:
    """Ray Data's current context, set for this run and restored after it: progress bars and execution
    banners only when ``verbose``; per-image failures reported, not raised; failed batches retried. (A
    dataset keeps a copy of the context it was created with.)"""
    import warnings

    with warnings.catch_warnings():  # the first call builds the context, which sets Ray's deprecated aliases
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ray.data.DataContext.get_current()
    settings = {
        "enable_progress_bars": verbose,
        "enable_operator_progress_bars": verbose,
        "print_on_execution_start": verbose,
        "enable_auto_log_stats": False,
        "max_errored_blocks": -1,  # a batch that fails every retry: its images are reported, the rest go on
        "actor_task_retry_on_errors": True,  # a worker that raises (not only one that dies) is retried
        "wait_for_min_actors_s": WAIT_FOR_WORKERS_S,
    }
    saved = {name: getattr(ctx, name) for name in settings if hasattr(ctx, name)}
    try:
        for name in saved:
            setattr(ctx, name, settings[name])
        yield ctx
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


# ----------------------------------------------------------------------------------- the work (on Ray)


def _read_bytes(key: str, fs: int, filesystems: Sequence[Any]) -> bytes:
    if fs < 0:
        from .imageio import open_regular_file

        with open_regular_file(Path(key)) as f:  # a FIFO or a device is refused, never read
            return f.read()
    with filesystems[fs].open_input_file(key) as f:
        return f.read()


def _read_batch(batch: dict, filesystems: Sequence[Any]) -> dict:
    """Ray Data read task: each file's bytes, or why it could not be read (one bad file fails alone)."""
    import numpy as np

    data, errors = [], []
    for name, key, fs in zip(batch["name"], batch["key"], batch["fs"]):
        try:
            data.append(_read_bytes(str(key), int(fs), filesystems))
            errors.append("")
        except Exception as e:  # noqa: BLE001 - reported for this file
            data.append(b"")
            errors.append(failure_reason(e, str(name)))
    return {"index": batch["index"], "name": batch["name"], "key": batch["key"], "data": np.array(data, dtype=object),
            "error": np.array(errors, dtype=object)}


class _Worker:
    """One Ray actor: an Upscaler built once, then batches of files decoded, upscaled and written."""

    def __init__(self, plan) -> None:
        import ray

        if isinstance(plan, ray.ObjectRef):
            plan = ray.get(plan)
        import torch

        from .upscaler import Upscaler

        threads = plan["threads"]
        if threads:
            with contextlib.suppress(AttributeError, OSError):
                threads = min(threads, len(os.sched_getaffinity(0)))
            torch.set_num_threads(max(1, threads))
        self.plan = plan
        self.upscaler = Upscaler(plan["model"], device=plan["device"], precision=plan["precision"])
        self.upscaler.check_scale(plan["scale"])

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        status, outputs, messages = [], [], []
        for index, name, key, data, error in zip(batch["index"], batch["name"], batch["key"], batch["data"],
                                                 batch["error"]):
            name = str(name)
            try:
                if error:
                    result = ("failed", "", str(error))
                else:
                    result = self._one(int(index), name, str(key), bytes(data))
            except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
                result = ("failed", "", failure_reason(e, name))
            status.append(result[0])
            outputs.append(result[1])
            messages.append(result[2])
        return {"index": np.asarray(batch["index"], dtype=np.int64), "status": np.array(status, dtype=object),
                "output": np.array(outputs, dtype=object), "message": np.array(messages, dtype=object)}

    def _name(self, name: str, key: str, data: bytes):
        """The image and its output (path, format), as ``fastsr upscale -o DIR`` names it."""
        from .imageio import decode_image

        im = decode_image(data, name, max_pixels=self.plan["max_pixels"])
        src = Source(Path(posixpath.basename(key.replace(os.sep, "/"))))
        out, fmt = image_output_for(src, im, scale=self.plan["scale"], output=self.plan["output_dir"])
        return im, out, fmt

    def _one(self, index: int, name: str, key: str, data: bytes) -> tuple[str, str, str]:
        from .imageio import write_image

        plan = self.plan
        im, out, fmt = self._name(name, key, data)
        plan["outputs"].check(out, earlier=filter(None, map(self._output_of, plan["collisions"].get(index, ()))))
        overwrite = plan["overwrite"]
        try:
            st = os.stat(out)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not overwrite:
                return "exists", str(out), ""
            if plan["existing"].get(out.name) != (st.st_ino, st.st_size, st.st_mtime_ns):
                return "rewritten", str(out), ""  # replaced by an earlier attempt of this run
        result = self.upscaler(im, plan["scale"], tile=plan["tile"], halo=plan["halo"], ensemble=plan["ensemble"],
                               max_pixels=plan["max_pixels"])
        try:
            write_image(result, out, format=fmt, overwrite=overwrite, icc_profile=im.info.get("icc_profile"))
        except FileExistsError:  # another attempt (or writer) renamed it into place meanwhile
            return "exists", str(out), ""
        return "done", str(out), ""

    def _output_of(self, earlier: tuple[str, str, int]) -> Path | None:
        """Where an earlier input (name, key, fs) would be written; None if it fails to decode."""
        name, key, fs = earlier
        try:
            return self._name(name, key, _read_bytes(key, fs, self.plan["filesystems"]))[1]
        except Exception:  # noqa: BLE001 - an earlier input that fails claims nothing
            return None


# The actor class the pool runs (tests put a subclass here that fails on purpose).
_WORKER = _Worker


# ------------------------------------------------------------------------------------------ the entry point


def _check_options(scale, precision, num_workers, gpus_per_worker, batch_size, tile, halo, max_pixels,
                   threads_per_worker) -> None:
    from .engine import PRECISIONS

    for what, value, minimum in (("scale", scale, 1), ("batch_size", batch_size, 1), ("num_workers", num_workers, 1),
                                 ("tile", tile, 1), ("halo", halo, 0), ("max_pixels", max_pixels, 1),
                                 ("threads_per_worker", threads_per_worker, 1)):
        if value is None and what not in ("scale", "batch_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int{'' if what in ('scale', 'batch_size') else ' or None'}, "
                            f"got {type(value).__name__} {value!r}")
        if value < minimum:
            raise ValueError(f"{what} must be >= {minimum}, got {value}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) \
            or not 0 <= gpus_per_worker <= 1:
        raise ValueError(f"gpus_per_worker must be 0 (CPU workers) or in (0, 1] (a GPU, or a share of one), "
                         f"got {gpus_per_worker!r}")
    if gpus_per_worker == 0 and precision == "fp16":
        raise ValueError("precision 'fp16' needs GPU workers (gpus_per_worker=1); on CPUs use 'fp32' or 'bf16'")


def upscale_dataset(inputs: str | os.PathLike | Sequence[str | os.PathLike], output_dir: str | os.PathLike,
                    scale: int, *, model: Any = None, precision: str | None = None, num_workers: int | None = None,
                    gpus_per_worker: float = 0, batch_size: int = 8, tile: int | None = None,
                    ensemble: bool = False, overwrite: bool = False, ray_address: str | None = None,
                    halo: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    threads_per_worker: int | None = None, verbose: bool = False,
                    progress: bool | None = None) -> Summary:
    """Upscale every image of ``inputs`` by ``scale`` into ``output_dir`` on a Ray cluster; see the module
    docstring for the pipeline and its exactly-once semantics.

    ``inputs``: files, folders (their images, not recursive) and globs, as ``fastsr upscale`` takes them, and
    URIs pyarrow opens (``s3://bucket/photos/``, ``gs://...``, ``file://...``). ``output_dir``: a folder
    (created), on a filesystem every node sees at the same path; outputs are named ``<stem><ext>`` as the CLI
    names them with ``-o``. ``model``, ``precision``, ``tile``, ``halo``, ``ensemble``, ``max_pixels``: as
    :class:`fastsr.Upscaler` takes them (the model is loaded here, checked, and shipped to each worker).

    ``num_workers``: the actor pool (default: one per GPU with ``gpus_per_worker``, else one per node).
    ``gpus_per_worker``: 0 for CPU workers (``threads_per_worker`` torch threads each, default the cluster's
    CPUs shared out), 1 for a GPU each (or a fraction to share one). ``batch_size``: images per Ray task (the
    unit of retry). ``overwrite``: replace existing outputs instead of skipping them. ``ray_address``: None
    starts a local Ray instance for the call (or uses the one this process already runs), or
    ``HOST:PORT`` / ``ray://HOST:PORT`` / ``"auto"`` joins a running cluster. ``verbose``: Ray's logs and
    progress bars; otherwise a tqdm bar of images (``progress``: default when stderr is a terminal), and only
    the notices that Ray's driver prints on stdout when a worker dies or a batch is retried (the CLI discards
    them).

    Returns a :class:`Summary`. Bad arguments (a missing input, an output folder that is a file, an
    unreachable address, a scale the model lacks) raise ValueError / TypeError / FileNotFoundError /
    ConnectionError before any work; without Ray, ImportError ("pip install 'fastsr[ray]'").
    """
    _check_options(scale, precision, num_workers, gpus_per_worker, batch_size, tile, halo, max_pixels,
                   threads_per_worker)
    if not isinstance(ensemble, bool):
        raise TypeError(f"ensemble must be a bool, got {ensemble!r}")
    address = parse_address(ray_address)
    ray = require_ray()
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not specs:
        raise ValueError("no inputs given")
    items, filesystems, errors = _plan_inputs(specs)
    if errors:
        raise ValueError("; ".join(errors))
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the output folder {out_dir} is a file")
    from .sources import resolve_model

    net = resolve_model(model, caller="upscale_dataset()")  # checked once, here: a bad checkpoint or scale fails before any work
    net.config.require_scale(scale)
    if address is not None:
        check_reachable(address)

    out_abs = Path(os.path.abspath(out_dir))
    options = {"scale": scale, "precision": precision, "tile": tile, "halo": halo, "ensemble": ensemble,
               "max_pixels": max_pixels, "overwrite": overwrite}
    state = {"writing": False}
    try:
        with quiet(verbose), connect(ray, address, verbose):
            results, existing = _run(ray, items, filesystems, net, out_abs, options, state, num_workers=num_workers,
                                     gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                                     threads_per_worker=threads_per_worker, verbose=verbose, progress=progress)
    finally:
        if state["writing"]:  # after Ray stopped: the temporaries of attempts that died mid-write or were cut off
            _remove_stale_temps(out_abs)
    return _summarize(items, results, existing)


def _run(ray, items: list[_Item], filesystems: list[Any], net, out_abs: Path, options: dict, state: dict, *, num_workers,
         gpus_per_worker, batch_size: int, threads_per_worker, verbose: bool, progress: bool | None):
    """The Ray Data run, on a connected cluster: per-image (status, output, message) by input index, and the
    outputs that existed before it."""
    import sys

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0)
    if cpus < READ_CPUS + 0.05:
        raise ValueError(f"the Ray cluster has {cpus:g} CPUs; it needs at least one")
    if gpus_per_worker:
        workers = num_workers or max(1, int(gpus // gpus_per_worker))
        if workers * gpus_per_worker > gpus:
            raise ValueError(f"{workers} worker(s) x {gpus_per_worker:g} GPU need {workers * gpus_per_worker:g} "
                             f"GPUs; the Ray cluster has {gpus:g}")
        threads = threads_per_worker
        actor_cpus = min(1.0, max(0.05, (cpus - READ_CPUS) / workers))
    else:
        workers = num_workers or max(1, nodes)
        threads = threads_per_worker or max(1, int(cpus // workers))
        # Every worker's share leaves READ_CPUS free: the read tasks always fit beside the whole pool.
        actor_cpus = min(float(threads), max(0.05, (cpus - READ_CPUS) / workers))
    workers = min(workers, math.ceil(len(items) / batch_size))  # no worker without a batch

    state["writing"] = True
    out_abs.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out_abs)
    existing = _existing_outputs(out_abs)
    plan = {
        **options, "model": net, "device": "cuda" if gpus_per_worker else "cpu", "threads": threads,
        "output_dir": str(out_abs), "existing": existing if options["overwrite"] else {},
        "filesystems": filesystems, "collisions": _collisions(items),
        "outputs": OutputPlan(_inputs_in(out_abs, items, filesystems), overwrite=options["overwrite"], resume=True),
    }
    plan_ref = ray.put(plan)  # held here until the run ends: restarted workers read it again
    show = (sys.stderr.isatty() if progress is None else progress) and not verbose
    results: dict[int, tuple[str, str, str]] = {}
    try:
        with _data_context(ray, verbose) as ctx:
            rows = [{"index": item.index, "name": item.name, "key": item.key, "fs": item.fs} for item in items]
            ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))
            ds = ds.map_batches(_read_batch, batch_size=batch_size, batch_format="numpy", num_cpus=READ_CPUS,
                                fn_kwargs={"filesystems": filesystems})
            ds = _map_workers(ray, ds, ctx, plan_ref, batch_size, workers, actor_cpus, gpus_per_worker)
            bar = _progress_bar(len(items), show)
            try:
                for row in ds.iter_rows():
                    results[int(row["index"])] = (str(row["status"]), str(row["output"]), str(row["message"]))
                    bar.update(1)
            finally:
                bar.close()
    except Exception as e:  # noqa: BLE001 - a systemic failure (workers that cannot start): one message
        raise RuntimeError(f"the Ray run stopped: {_root_cause(e)} (outputs written so far are complete and "
                           "kept; run again to resume)") from e
    return results, existing


def _summarize(items: list[_Item], results: dict[int, tuple[str, str, str]], existing) -> Summary:
    """Per-image statuses -> counts and failures; an output that exists but was not there at the start was
    written by this run (by an attempt that failed after writing it)."""
    summary = Summary()
    for item in items:
        status, out, message = results.get(item.index, ("lost", "", ""))
        if status == "done" or status == "rewritten":
            summary.done += 1
        elif status == "exists":
            if Path(out).name in existing:
                summary.skipped += 1
            else:
                summary.done += 1  # written by an earlier attempt of this run (a retried batch)
        elif status == "lost":
            summary.failures.append(Failure(item.name, f"{item.name}: its batch failed {MAX_TASK_RETRIES + 1} times "
                                                       "(a worker raised or died; --verbose shows Ray's errors)"))
        else:
            summary.failures.append(Failure(item.name, message))
    return summary


def _map_workers(ray, ds, ctx, plan_ref, batch_size: int, workers: int, actor_cpus: float, gpus: float):
    """The actor-pool stage. A batch is retried MAX_TASK_RETRIES times (Ray Data's default retries forever,
    which a file that kills its worker every time would turn into a hang); Ray versions without per-stage
    retry options get Ray Data's defaults, and then only a worker's death is retried."""
    import warnings

    options = {"batch_size": batch_size, "batch_format": "numpy", "fn_constructor_args": (plan_ref,),
               "compute": ray.data.ActorPoolStrategy(size=workers), "num_cpus": actor_cpus,
               "num_gpus": gpus or None}
    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote args for Ray 2.64, and has no other way to bound the retries yet.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        try:
            return ds.map_batches(_WORKER, **options, max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
        except TypeError:
            ctx.actor_task_retry_on_errors = False
            return ds.map_batches(_WORKER, **options)


def _progress_bar(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=not show, leave=False)


def _root_cause(e: BaseException) -> str:
    """The innermost exception's first line (Ray wraps a worker's error in several layers)."""
    from ._errors import first_line

    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "cause", None) or e.__cause__
        if not isinstance(inner, BaseException):
            break
        e = inner
    return first_line(e)
