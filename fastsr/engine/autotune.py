"""Per-op backend choice, measured once and cached on disk: the rule that makes the engine never slower
than its alternatives by construction.

For each conv op of a plan (its shape, dtype and fused epilogue: :class:`OpKey`) the engine offers
candidates -- callables that run the op, e.g. the Triton kernel in each of its tile configs, and cuDNN
channels_last with the same epilogue done by torch -- and :meth:`Autotuner.choose` times each once and
returns the fastest. Choices are cached in a JSON file under the user's cache directory, keyed by the
device's name and the torch, triton and fastsr versions, so a machine tunes each shape once. A corrupt,
unreadable or stale cache file (another format, other versions) is ignored and rewritten, never fatal;
a cached choice that is no longer among the candidates is re-tuned.

The tuning cost is bounded and reported: each candidate runs ``warmup + repeats`` times (defaults 1 + 3)
per op key, and :attr:`Autotuner.tuning_seconds` says how long tuning took in all.

Timing is injected (``timer(fn) -> seconds``): on CUDA, :func:`cuda_timer` (CUDA events, after a warm-up);
in tests, a fake.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
Timer = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class OpKey:
    """What decides a conv's speed: input size, channels, kernel, dtype and the fused epilogue."""

    n: int
    h: int
    w: int
    c_in: int
    c_out: int
    ksize: int
    dtype: str  # "fp16", "bf16", "fp32"
    epilogue: str = ""  # e.g. "relu", "res", "shuffle2", "final-u8"

    def text(self) -> str:
        return (f"{self.n}x{self.h}x{self.w} {self.c_in}->{self.c_out} k{self.ksize} {self.dtype}"
                + (f" {self.epilogue}" if self.epilogue else ""))


def default_cache_path() -> Path:
    """``$FASTSR_CACHE_DIR/autotune.json``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``, ``fastsr/``."""
    root = os.environ.get("FASTSR_CACHE_DIR")
    if root:
        return Path(root) / "autotune.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastsr" / "autotune.json"


def environment_key(device_name: str, versions: Mapping[str, str | None]) -> str:
    """The cache's key for one machine setup: device name and library versions (any change re-tunes)."""
    parts = [device_name] + [f"{name} {versions.get(name) or '-'}" for name in ("torch", "triton", "fastsr")]
    return " | ".join(parts)


def cuda_timer(warmup: int = 1, repeats: int = 3) -> Timer:
    """A timer for CUDA ops: ``warmup`` untimed runs, then the median of ``repeats`` runs timed with events."""
    import torch

    def timer(fn: Callable[[], object]) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return sorted(times)[len(times) // 2]

    return timer


class Autotuner:
    """Choose the fastest candidate per :class:`OpKey`; cache the choices on disk (see the module docstring).

    ``cache_path=None`` uses :func:`default_cache_path`; ``persist=False`` keeps choices in memory only.
    """

    def __init__(self, device_name: str, versions: Mapping[str, str | None], timer: Timer, *,
                 cache_path: str | os.PathLike | None = None, persist: bool = True) -> None:
        if not callable(timer):
            raise TypeError(f"timer must be callable, got {type(timer).__name__}")
        self.env = environment_key(device_name, versions)
        self.timer = timer
        self.path = Path(cache_path) if cache_path is not None else default_cache_path()
        self.persist = persist
        self.tuning_seconds = 0.0
        self.tuned = 0  # op keys timed in this process (not found in the cache)
        self._entries: dict[str, dict] = self._read() if persist else {}

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as e:  # corrupt or unreadable: start again
            log.warning("ignoring unreadable autotune cache %s (%s); it will be rewritten", self.path, e)
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("environment") != self.env:
            log.info("autotune cache %s is for another format or setup; re-tuning", self.path)
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("choice"), str)}

    def _write(self) -> None:
        if not self.persist:
            return
        payload = {"format": CACHE_FORMAT, "environment": self.env, "entries": self._entries}
        try:
            from .._files import atomic_write

            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.path) as f:
                f.write((json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())
        except OSError as e:  # a read-only home: the choices still hold for this process
            log.warning("cannot write the autotune cache %s: %s", self.path, e)

    def cached(self, key: OpKey) -> str | None:
        entry = self._entries.get(key.text())
        return entry["choice"] if entry else None

    def choose(self, key: OpKey, candidates: Mapping[str, Callable[[], object]]) -> str:
        """The name of the fastest of ``candidates`` for ``key`` (timed once, then cached)."""
        if not candidates:
            raise ValueError(f"no candidates to choose from for {key.text()}")
        known = self.cached(key)
        if known in candidates:
            return known
        start = time.perf_counter()
        times: dict[str, float] = {}
        for name, run in candidates.items():
            try:
                times[name] = float(self.timer(run))
            except Exception as e:  # noqa: BLE001 - a candidate that fails here (e.g. out of shared memory) is out
                log.info("autotune %s: candidate %s failed: %s", key.text(), name, e)
        self.tuning_seconds += time.perf_counter() - start
        self.tuned += 1
        if not times:
            raise RuntimeError(f"every candidate failed for {key.text()}: {', '.join(candidates)}")
        choice = min(times, key=lambda name: (times[name], list(candidates).index(name)))
        self._entries[key.text()] = {"choice": choice, "seconds": {k: round(v, 9) for k, v in times.items()}}
        self._write()
        return choice

    def report(self) -> dict:
        """Every choice known for this setup with its timings, and this process's tuning cost."""
        return {"environment": self.env, "tuned_ops": self.tuned, "tuning_seconds": round(self.tuning_seconds, 3),
                "choices": dict(self._entries)}

