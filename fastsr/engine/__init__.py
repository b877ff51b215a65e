"""The inference engine: ``fastsr.optimize(model)`` turns a reference network into a faster, leaner module
with the same forward contract.

Backends:

* ``torch`` -- the folded plan with torch ops (oneDNN fused post-ops on CPU, bf16 where the CPU has native
  bf16, see :func:`fastsr.system.default_cpu_precision`); any device. The CPU default.
* ``triton`` -- the plan with fastsr's fused Triton conv kernels (``fastsr.kernels``); CUDA only. The CUDA
  default.
* ``interpret`` -- the same Triton kernels under ``TRITON_INTERPRET=1`` on the CPU: slow, for tests.

Accepted models: fastsr's ``EDSR`` / ``MDSR`` (and so anything :func:`fastsr.load` returns), and instances of
EDSR-PyTorch's ``EDSR`` / ``MDSR`` or BasicSR's ``EDSR`` classes, read through their state dict and
attributes; the optimized module keeps their forward contract (BasicSR: [0, 1] in and out; official MDSR:
``set_scale`` state). The given module is never modified.
"""

from __future__ import annotations

import importlib.util
import os
import weakref

import torch
from torch import nn

from ..models import EDSR, MDSR
from ..models.networks import check_weights
from ..sources import from_module
from ..system import default_cpu_precision, require_cpu_bf16
from .plan import Plan, lower

__all__ = ["optimize", "OptimizedSR", "Plan", "lower", "BACKENDS", "PRECISIONS"]

# "auto" (the CUDA default): the Triton kernels, with each body conv run as the faster of the kernel's tile
# configs and cuDNN, measured once per shape and cached (fastsr.engine.autotune). On the CPU it is "torch".
BACKENDS = ("auto", "torch", "triton", "interpret")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _make_runner(plan: Plan, backend: str, device: torch.device, dtype: torch.dtype, winograd: bool = False,
                 tuner=None):
    if backend == "torch":
        from .torch_backend import TorchRunner, cpu_bf16_policy

        if device.type == "cpu" and dtype == torch.bfloat16:
            return TorchRunner(plan, device, dtype, **cpu_bf16_policy(plan))
        return TorchRunner(plan, device, dtype, winograd=winograd)
    from .triton_backend import TritonRunner

    return TritonRunner(plan, device, dtype, tuner=tuner if backend == "auto" else None)


def _cuda_tuner(device: torch.device):
    """The autotune of the ``auto`` backend: CUDA-event timing, choices cached per device and versions."""
    from ..system import package_version
    from .autotune import Autotuner, cuda_timer

    versions = {"torch": torch.__version__, "triton": package_version("triton"), "fastsr": package_version("fastsr")}
    return Autotuner(torch.cuda.get_device_name(device), versions, cuda_timer())


def _resolve(backend: str | None, precision: str | None, device: torch.device) -> tuple[str, torch.dtype]:
    if backend is None:
        backend = "auto" if device.type == "cuda" else "torch"
    if backend == "auto" and (device.type != "cuda" or importlib.util.find_spec("triton") is None):
        backend = "torch"  # the CPU engine (oneDNN, its own per-precision choices), or cuDNN without Triton
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision is None:
        if device.type == "cuda":
            precision = "fp16"
        else:  # the Triton interpreter computes bf16 wrongly: fp32 there
            precision = default_cpu_precision()[0] if backend == "torch" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if backend in ("triton", "auto") and device.type != "cuda":
        raise ValueError(f"the triton backend needs the model on a CUDA device; it is on {device} "
                         "(use backend='torch', or 'interpret' for the kernels on CPU)")
    if backend == "interpret":
        if device.type != "cpu":
            raise ValueError(f"the interpret backend runs on CPU; the model is on {device}")
        if precision == "bf16":
            raise ValueError("bf16 under the Triton interpreter is computed wrongly; use fp32 or fp16")
    if backend == "torch" and device.type == "cpu":
        if precision == "fp16":
            raise ValueError("the torch backend runs fp32 or bf16 on CPU (got fp16); fp16 needs CUDA")
        if precision == "bf16":
            require_cpu_bf16()
    return backend, PRECISIONS[precision]


class OptimizedSR(nn.Module):
    """The optimized network. ``forward`` has the source module's signature and value range."""

    def __init__(self, model: EDSR | MDSR, source: str, backend: str, dtype: torch.dtype, device: torch.device,
                 winograd: bool = False, cuda_graphs: bool = False) -> None:
        super().__init__()
        self.config = model.config
        # The fastsr reference it was lowered from, for export_onnx (not a submodule: not in state_dict). The
        # caller's own fastsr module is held weakly, so the engine never keeps a second copy of the weights
        # alive (a GPU copy, say); a converted EDSR-PyTorch / BasicSR module (a CPU copy) is held.
        ref = weakref.ref(model) if source == "fastsr" else (lambda: model)
        object.__setattr__(self, "_reference", ref)
        self.source = source
        self.backend = backend
        self.dtype = dtype
        self.device = device
        self.plans = {s: lower(model, s) for s in model.config.scales}
        self.winograd = winograd
        # One autotune per engine on CUDA ("auto"): its choices are shared by the scales' plans and cached on disk.
        self.tuner = _cuda_tuner(device) if backend == "auto" else None
        self.runners = {s: _make_runner(p, backend, device, dtype, winograd, self.tuner)
                        for s, p in self.plans.items()}
        self.cuda_graphs = cuda_graphs
        if cuda_graphs:
            from .graphs import GraphedRunner

            self.runners = {s: GraphedRunner(r, device) for s, r in self.runners.items()}
        for plan in self.plans.values():  # the runners hold the packed weights; the plans keep only shapes
            for op in plan.ops():
                op.weight = op.weight.to("meta")
        self.multi_scale = isinstance(model, MDSR)
        self.scale_idx = 0  # EDSR-PyTorch's MDSR selects its branch with set_scale(idx)

    @property
    def reference(self) -> EDSR | MDSR:
        """The fastsr reference network this engine was built from, while it is still alive."""
        model = self._reference()
        if model is None:
            raise ValueError("the module this engine was optimized from no longer exists; export the module "
                             "or its checkpoint instead")
        return model

    def set_scale(self, scale_idx: int) -> None:
        """EDSR-PyTorch's MDSR API: select the branch ``scale_idx`` for ``forward(x)``."""
        if not 0 <= scale_idx < len(self.config.scales):
            raise ValueError(f"scale_idx must be in [0, {len(self.config.scales)}), got {scale_idx}")
        self.scale_idx = scale_idx

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.config.n_colors:
            raise ValueError(f"expected an NCHW tensor with {self.config.n_colors} channels, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point tensor in [0, rgb_range], got dtype {x.dtype}")

    def _scale(self, scale: int | None) -> int:
        if scale is None:
            return self.config.scales[0]
        return self.config.require_scale(scale)

    def run(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """NCHW float in [0, rgb_range] -> NCHW float, in the input's dtype (the reference contract)."""
        self._check(x)
        return self.runners[self._scale(scale)](x).to(x.dtype)

    def run_uint8(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """Like :meth:`run` but the output is uint8 0..255: scaled by 255 / rgb_range, clamped and rounded
        half to even once, in the final conv's epilogue (the ``fastsr.upscale`` path)."""
        self._check(x)
        scale = self._scale(scale)
        return self.runners[scale](x, quantize=True)

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        if self.source == "basicsr":
            r = self.config.rgb_range
            return self.run(x * r) / r
        if self.multi_scale and scale is None:
            if self.source == "edsr-pytorch":
                return self.run(x, self.config.scales[self.scale_idx])
            raise TypeError("MDSR.forward needs the scale: model(x, scale)")
        if not self.multi_scale and scale is not None:
            self.config.require_scale(scale)
        return self.run(x, scale)

    def activation_bytes(self, n: int, height: int, width: int, scale: int | None = None) -> int:
        """The plan's peak activation memory for an ``n x C x height x width`` input, in bytes: the banded
        tail's, about equal to the folded tail's."""
        plan = self.plans[self._scale(scale)]
        runner = self.runners[plan.scale]
        rows = runner.band_rows(height, width)
        # Mixed precision (CPU bf16: fp32 head, tail and output): counted at the widest dtype, an upper bound.
        itemsize = max(self.dtype.itemsize, getattr(runner, "out_dtype", self.dtype).itemsize)
        return plan.activation_bytes(n, height, width, itemsize, rows)

    def autotune_report(self) -> dict | None:
        """The ``auto`` backend's choices per op shape, their timings and this process's tuning cost; None
        for the other backends."""
        return None if self.tuner is None else self.tuner.report()

    def extra_repr(self) -> str:
        return (f"{self.config}, backend={self.backend}, dtype={self.dtype}, device={self.device}"
                + (", winograd=True" if self.winograd else ""))


def optimize(model: nn.Module, *, backend: str | None = None, precision: str | None = None,
             winograd: bool = False, cuda_graphs: bool = False) -> OptimizedSR:
    """Build the inference engine for ``model`` once; the model itself is left untouched.

    ``backend``: ``"auto"`` (the default; on CUDA the Triton kernels with each body conv run as the faster of
    the kernel's tile configs and cuDNN, timed once per shape and cached on disk: :mod:`fastsr.engine.autotune`;
    elsewhere ``"torch"``), ``"torch"`` (cuDNN / oneDNN), ``"triton"`` (the kernels only) or ``"interpret"``;
    ``precision``: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (default: fp16 on CUDA; on the CPU
    :func:`fastsr.system.default_cpu_precision`). Unsupported combinations raise ValueError, and so does
    ``bf16`` on a CPU without native bf16 instructions (AVX512-BF16 or AMX-BF16).

    ``winograd=True`` (CPU, torch backend, fp32): each 3x3 conv may run as Winograd F(4, 3) instead of
    oneDNN's direct conv, chosen per op and input shape by timing both on the first input of that shape.
    It pays at 256 channels (full EDSR); it is off by default because its rounding depends on a pixel's
    place in the 4x4 tile grid, so tiled and untiled ``upscale`` results may differ in the last bits.

    ``cuda_graphs=True`` (CUDA): each input shape's launch sequence is captured once as a CUDA graph and
    replayed (:mod:`fastsr.engine.graphs`; a few shapes kept, least recently used out). Inert on the CPU.
    """
    if not isinstance(winograd, bool):
        raise TypeError(f"winograd must be True or False, got {winograd!r}")
    if not isinstance(cuda_graphs, bool):
        raise TypeError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize() expects an nn.Module, got {type(model).__name__}")
    check_weights(model)  # meta / NaN weights: a clear error now, not a torch error or a black image later
    device = _device_of(model)
    if winograd is True and precision is None:
        precision = "fp32"  # Winograd is an fp32 algorithm: asking for it picks fp32 on any CPU
    backend, dtype = _resolve(backend, precision, device)
    if winograd and (backend != "torch" or device.type != "cpu" or dtype != torch.float32):
        raise ValueError("winograd=True needs the torch backend on the CPU in fp32 (precision='fp32'); got "
                         f"backend {backend!r}, device {device}, {dtype}")
    reference, source = from_module(model)
    if backend == "interpret" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("the interpret backend needs TRITON_INTERPRET=1 in the environment before Triton "
                         "is imported (set it at process start)")
    engine = OptimizedSR(reference, source, backend, dtype, device, winograd, cuda_graphs).eval()
    if source == "edsr-pytorch" and engine.multi_scale:
        engine.set_scale(int(getattr(model, "scale_idx", 0)))  # the branch the given module has selected
    return engine
