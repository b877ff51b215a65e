"""CUDA graphs for a runner called again and again with one input shape (tiles, video frames, batches).

:class:`GraphedRunner` wraps a runner (``runner(x, quantize=...)``): on CUDA, the first call for an input
shape, dtype and output mode runs the runner once on a side stream (warm-up: kernels compiled, buffers
sized), then captures its whole launch sequence into a ``torch.cuda.CUDAGraph`` with static input and
output tensors; later calls copy the input in, replay the graph and return a copy of the output (the
static output is reused by the next replay). At most ``max_shapes`` graphs are kept, least recently used
first out: each graph holds its own activation memory.

On the CPU, and for any input the graph cannot take, the wrapper calls the runner directly: it is inert.
A capture that fails (an op that synchronises with the host, say) is logged once and that shape runs
uncaptured from then on, so enabling graphs can cost speed but never a result.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

DEFAULT_MAX_SHAPES = 4  # tiles of an image are mostly one shape, plus the edge tiles' few others


class GraphedRunner:
    """``runner`` with its launches captured and replayed per input shape on CUDA (see the module docstring)."""

    def __init__(self, runner: Callable[..., torch.Tensor], device: torch.device, max_shapes: int = DEFAULT_MAX_SHAPES):
        if isinstance(max_shapes, bool) or not isinstance(max_shapes, int) or max_shapes < 1:
            raise ValueError(f"max_shapes must be an int >= 1, got {max_shapes!r}")
        self.runner = runner
        self.device = device
        self.max_shapes = max_shapes
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._failed: set[tuple] = set()
        self.captures = 0  # graphs captured so far (a test's and a benchmark's view of what happened)
        self.replays = 0

    def __getattr__(self, name: str):  # band_rows, out_dtype, ...: the wrapped runner's
        return getattr(self.__dict__["runner"], name)

    @property
    def active(self) -> bool:
        return self.device.type == "cuda"

    def __call__(self, x: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
        if not self.active or x.device != self.device or torch.cuda.is_current_stream_capturing():
            return self.runner(x, quantize=quantize)
        key = (tuple(x.shape), x.dtype, bool(quantize))
        if key in self._failed:
            return self.runner(x, quantize=quantize)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(x, quantize, key)
            if entry is None:
                return self.runner(x, quantize=quantize)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        self.replays += 1
        return static_out.clone(memory_format=torch.preserve_format)

    def _capture(self, x: torch.Tensor, quantize: bool, key: tuple):
        static_in = x.detach().clone()
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.runner(static_in, quantize=quantize)  # warm-up: compile kernels, settle allocations
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.runner(static_in, quantize=quantize)
        except Exception as e:  # noqa: BLE001 - fall back to the uncaptured path for this shape
            log.warning("CUDA graph capture failed for input %s (%s); running it uncaptured", key, e)
            self._failed.add(key)
            return None
        while len(self._graphs) >= self.max_shapes:
            self._graphs.popitem(last=False)  # the least recently used graph and its memory go
        self._graphs[key] = (graph, static_in, static_out)
        self.captures += 1
        return self._graphs[key]
