"""The user-facing API: :func:`upscale` and :class:`Upscaler` (``fastsr.upscale`` / ``fastsr.Upscaler``).

(The module is ``fastsr.upscaler``, not ``fastsr.upscale``: a submodule of that name would replace the
function ``fastsr.upscale`` on the package as soon as anything imported it.)

Inputs and outputs
------------------
``img`` is a PIL image (modes RGB, RGBA, L, LA, P, I;16), a numpy array (HxW, HxWx3, HxWx4; uint8, uint16,
or float in [0, 1]) or a torch tensor (CxHxW or NxCxHxW, C = 1, 3 or 4, float in [0, 1]). The result has the
same kind, dtype, channel layout (and, for tensors, device), ``scale`` times larger. Palette images come back
as RGB, or RGBA when they have transparency.

* Gray goes through the RGB network on three equal channels and comes back as the mean of the (clamped)
  output channels. Alpha is upscaled on its own with bicubic interpolation (PyTorch's, a = -0.75) and put back.
* Quantization (DESIGN.md): the networks take NCHW float in [0, rgb_range]. uint8 is fed as is; uint16 as
  ``value / 257`` (no 8-bit rounding on the way in); float as ``255 * value``. The output is clamped to
  [0, 255] and, once, at the end, rounded half to even (``torch.round``) to uint8, or scaled by 257 and rounded
  to uint16; float outputs are clamped to [0, 1] and not quantized.

Tiling (:mod:`fastsr.tiling`)
-----------------------------
``tile`` is the side of a tile's core in input pixels; ``None`` picks the largest that fits the memory
budget (a share of the GPU's free memory, or ``fastsr.tiling.CPU_MEMORY_BUDGET`` on the CPU), so the peak
activation memory is bounded for any image size. ``halo=None`` is the exact mode: a halo of the network's
receptive field, and the result equals the untiled one (float: within 1e-4; uint8: identical). One caveat:
convolutions on arrays of different shapes may round differently in the last bits (oneDNN and cuDNN pick
their algorithms by shape), which could move a uint8 value lying within ~1e-5 of a rounding tie by one level;
measured on CPU with 64-pixel tiles: 0 of 5 million values (Set5, x2 / x3 / x4). A smaller ``halo`` is the
approximate mode: faster, with an error that shrinks with the halo (README, "Upscaling").

Self-ensemble
-------------
``ensemble=True`` averages the 8 flips / transposes (:mod:`fastsr.ensemble`), batched on the device as
memory allows, per tile: exact tiling with the ensemble equals the untiled ensemble.

Errors
------
A scale the model lacks, an empty image, NaN / inf, a float outside [0, 1], an unsupported mode, dtype, shape
or channel count, or more pixels than ``max_pixels`` (default ``fastsr.imageio.DEFAULT_MAX_PIXELS``) raise
ValueError or TypeError before any work is done. ``model=None`` without bundled default weights raises
:class:`fastsr.weights.DefaultWeightsMissing`; random weights are never used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .engine import BACKENDS as ENGINE_BACKENDS
from .engine import PRECISIONS, optimize
from .ensemble import N_TRANSFORMS, transform, undo
from .imageio import DEFAULT_MAX_PIXELS, check_pixel_limit
from .models import EDSR, MDSR
from .models.networks import check_weights
from .sources import resolve_model
from .system import default_cpu_precision, require_cpu_bf16
from .tiling import (
    activation_bytes_per_pixel,
    auto_tile_size,
    memory_budget,
    plan_tiles,
    receptive_field,
)

__all__ = ["Upscaler", "upscale"]

# None picks the engine's default (auto on CUDA: Triton kernels or cuDNN per op, as measured; torch elsewhere); "reference" runs the unoptimized module.
BACKENDS = (None, *ENGINE_BACKENDS, "reference")
# Input pixels of halo the bicubic alpha needs around a tile: its kernel reaches 2 pixels to each side.
_ALPHA_HALO = 2

Forward = Callable[[torch.Tensor, int], torch.Tensor]


# --------------------------------------------------------------------------------------- model preparation


def _prepare(model: EDSR | MDSR, device: torch.device, precision: str, backend: str | None) -> Forward:
    """``run(x, scale)``: NCHW float in [0, rgb_range] (any device) -> the network's output on ``device``.

    The one place where a reference module becomes something that runs: the inference engine
    (``fastsr.optimize``) built from the module on ``device``, or with ``backend="reference"`` the module
    itself in ``precision``. The module is copied when it must move, be cast or leave training mode, so the
    caller's module is never changed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(map(repr, BACKENDS))}")
    dtype = PRECISIONS[precision] if backend == "reference" else torch.float32  # the engine folds in fp32
    tensors = list(model.parameters()) + list(model.buffers())
    if model.training or any(t.device != device or (t.is_floating_point() and t.dtype != dtype) for t in tensors):
        model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if backend != "reference":
        engine = optimize(model, backend=backend, precision=precision)

        def run_engine(x: torch.Tensor, scale: int) -> torch.Tensor:
            return engine(x.to(device=device, dtype=torch.float32), scale)

        run_engine.engine = engine  # type: ignore[attr-defined]  # its plan sizes the tiles
        return run_engine
    is_mdsr = isinstance(model, MDSR)

    def run(x: torch.Tensor, scale: int) -> torch.Tensor:
        x = x.to(device=device, dtype=dtype)
        with torch.inference_mode():
            return model(x, scale) if is_mdsr else model(x)

    return run


def _resolve_device(device: Any, model: nn.Module) -> torch.device:
    if device is None:
        param = next(model.parameters(), None)
        if param is not None and param.device.type == "cuda":
            return param.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; use 'cpu' or 'cuda[:N]'")
    return dev


def _resolve_precision(precision: Any, device: torch.device, backend: str | None) -> str:
    if precision is None:
        if device.type == "cuda":
            return "fp16"
        # The CPU engine's default; the reference module and the Triton interpreter run fp32.
        return default_cpu_precision()[0] if backend in (None, "torch") else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if device.type == "cpu":
        if precision == "fp16":
            raise ValueError("precision 'fp16' is not supported on the CPU; use 'fp32', 'bf16' (CPUs with "
                             "AVX512-BF16 or AMX-BF16) or a CUDA device")
        if precision == "bf16":
            require_cpu_bf16()
    return precision


# ------------------------------------------------------------------------------------------- image kinds


@dataclass
class _Image:
    """An input, normalised: ``colour`` is N x (1 or 3) x H x W float32 on the 0..255 scale (gray: 1)."""

    colour: torch.Tensor
    alpha: torch.Tensor | None  # N x 1 x H x W float32, 0..255 scale
    out_dtype: torch.dtype  # torch.uint8, torch.uint16 or a float dtype
    kind: str  # "pil", "numpy" or "torch"
    batched: bool = False  # torch: NCHW (True) or CHW; numpy: NxHxWxC (True)
    pil_mode: str | None = None  # the mode of the PIL result
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where the result lives


_PIL_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "I;16", "I;16L", "I;16B", "I;16N")


def _check_float_values(a: torch.Tensor) -> None:
    if not bool(torch.isfinite(a).all()):
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"float images must be in [0, 1], got values in [{lo:g}, {hi:g}]")


def _from_hwc(a: np.ndarray, what: str) -> tuple[torch.Tensor, torch.dtype]:
    """A HxW / HxWxC (/ NxHxWxC) numpy array -> 1 (/ N) x C x H x W float32 on the 0..255 scale, and the
    output dtype."""
    if a.dtype.kind == "u" and a.dtype.itemsize == 1:
        t, dtype = torch.from_numpy(a.astype(np.float32)), torch.uint8
    elif a.dtype.kind == "u" and a.dtype.itemsize == 2:
        # 16 bits: value / 257 maps 0..65535 onto 0..255 without rounding to 8 bits first.
        t, dtype = torch.from_numpy(a.astype(np.float32)) / 257, torch.uint16
    elif a.dtype.kind == "f" and a.dtype.itemsize in (2, 4, 8):
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")))
        _check_float_values(t)
        dtype = t.dtype
        t = t.float() * 255
    else:
        raise TypeError(f"{what} must be uint8, uint16 or float (in [0, 1]), got dtype {a.dtype}")
    if t.dim() == 4:  # N x H x W x C: a batch of same-size images
        return t.permute(0, 3, 1, 2), dtype
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    return t, dtype


def _split_alpha(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    if t.shape[1] in (2, 4):
        return t[:, :-1], t[:, -1:]
    return t, None


def _check_size(h: int, w: int, max_pixels: int | None, n: int = 1) -> None:
    """Empty images and ``max_pixels``, which counts the whole batch: N images of h x w are N * h * w pixels."""
    if h == 0 or w == 0:
        raise ValueError(f"image is empty ({w}x{h})")
    check_pixel_limit(h, w, max_pixels, "image" if n == 1 else f"a batch of {n} images", count=n)


def _normalise(img: Any, max_pixels: int | None, batch: bool = False) -> _Image:
    from PIL import Image

    if isinstance(img, Image.Image):
        if img.mode not in _PIL_MODES:
            raise ValueError(f"unsupported PIL mode {img.mode!r}; supported: RGB, RGBA, L, LA, P, I;16 "
                             "(convert first, e.g. img.convert('RGB'))")
        _check_size(img.height, img.width, max_pixels)
        mode = img.mode
        if mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
            mode = img.mode
        elif mode.startswith("I;16"):
            mode = "I;16"
        a = np.asarray(img)
        if mode == "I;16" and a.dtype.byteorder not in ("=", "|"):
            a = a.astype(np.uint16)  # big-endian I;16B -> native
        colour, dtype = _from_hwc(a, "PIL image")
        colour, alpha = _split_alpha(colour)
        return _Image(colour, alpha, dtype, "pil", pil_mode=mode)

    if isinstance(img, np.ndarray):
        batched = img.ndim == 4 and batch
        if batch and (not batched or img.shape[-1] not in (3, 4) or not len(img)):
            raise ValueError(f"a batch must be a non-empty NxHxWx3 or NxHxWx4 array, got shape {img.shape}")
        if img.ndim not in ((4,) if batch else (2, 3)) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
            raise ValueError(f"numpy images must be HxW, HxWx3 or HxWx4, got shape {img.shape}")
        h, w = img.shape[1:3] if batched else img.shape[:2]
        _check_size(h, w, max_pixels, img.shape[0] if batched else 1)
        colour, dtype = _from_hwc(img, "numpy image")
        colour, alpha = _split_alpha(colour)
        return _Image(colour, alpha, dtype, "numpy", batched=batched)

    if isinstance(img, torch.Tensor):
        if img.device.type == "meta":
            raise ValueError(f"img is a meta tensor (shape {tuple(img.shape)} without values); pass a tensor with data")
        if img.device.type not in ("cpu", "cuda"):
            raise ValueError(f"torch images must be on the CPU or a CUDA device, got {img.device}")
        if img.layout != torch.strided:
            raise TypeError(f"torch images must be dense tensors, got layout {img.layout}")
        if not img.is_floating_point():
            raise TypeError(f"torch images must be float in [0, 1], got dtype {img.dtype} "
                            "(for 8-bit data use img.float() / 255)")
        if img.dim() not in (3, 4) or img.shape[-3] not in (1, 3, 4):
            raise ValueError(f"torch images must be CxHxW or NxCxHxW with C = 1, 3 or 4, got shape {tuple(img.shape)}")
        if img.dim() == 4 and img.shape[0] == 0:
            raise ValueError(f"empty batch (shape {tuple(img.shape)})")
        _check_size(img.shape[-2], img.shape[-1], max_pixels, img.shape[0] if img.dim() == 4 else 1)
        t = img.detach()
        _check_float_values(t)
        t = (t if img.dim() == 4 else t[None]).float() * 255
        colour, alpha = (t[:, :3], t[:, 3:]) if t.shape[1] == 4 else (t, None)
        return _Image(colour, alpha, img.dtype, "torch", batched=img.dim() == 4, device=img.device)

    raise TypeError(f"img must be a PIL image, a numpy array or a torch tensor, got {type(img).__name__}")


def _quantize(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0..255-scale float -> the output dtype: clamp, then round half to even once (integers).

    uint16 comes back as int32 (0..65535): CUDA has few uint16 kernels, so the cast happens on the copy into
    the (host) output buffer.
    """
    y = y.clamp(0, 255)
    if dtype == torch.uint8:
        return y.round().to(torch.uint8)
    if dtype == torch.uint16:
        return (y * 257).round().to(torch.int32)  # 255 * 257 = 65535
    return (y / 255).clamp(0, 1).to(dtype)


# ------------------------------------------------------------------------------------------------ running


def _forward_batched(run: Forward, x: torch.Tensor, scale: int, ks: tuple[int, ...], max_batch: int) -> torch.Tensor:
    """Mean over the transforms ``ks`` of ``undo(run(transform(x, k)), k)`` (fp32), ``max_batch`` images a pass.

    Images and transforms of one shape go through the network together; results are summed per image in
    increasing ``k``, as :func:`fastsr.ensemble.self_ensemble` does.
    """
    n = x.shape[0]
    items = [(k, i) for k in ks for i in range(n)]
    total: list[torch.Tensor | None] = [None] * n
    start = 0
    while start < len(items):
        # Transforms 0-3 keep H x W, 4-7 swap it: a batch never mixes the two unless the tile is square.
        square = x.shape[-1] == x.shape[-2]
        end = start + 1
        while end < len(items) and end - start < max_batch and (square or (items[end][0] & 4) == (items[start][0] & 4)):
            end += 1
        chunk = items[start:end]
        batch = torch.cat([transform(x[i : i + 1], k) for k, i in chunk]).contiguous()
        y = run(batch, scale)
        for j, (k, i) in enumerate(chunk):
            yi = undo(y[j : j + 1], k).float()
            total[i] = yi if total[i] is None else total[i].add_(yi)
        start = end
    out = torch.cat(total)  # type: ignore[arg-type]
    return out / len(ks) if len(ks) > 1 else out


class Upscaler:
    """A model loaded and prepared once: ``upscaler(img, scale)`` upscales many images.

    ``model``: None (the bundled default weights), a checkpoint path or state dict (anything
    :func:`fastsr.load` reads) or a fastsr EDSR / MDSR module (used as is, never modified: a copy is made when it
    has to move, change dtype or leave training mode). ``device``: None (the module's GPU, else CUDA when
    available, else CPU), ``"cpu"``, ``"cuda[:N]"``. ``precision``: None (fp16 on CUDA; on the CPU the
    engine's default, :func:`fastsr.system.default_cpu_precision`: bf16 where the CPU has AVX512-BF16 or
    AMX-BF16, else fp32; fp32 for the reference and interpret backends), ``"fp32"``, ``"fp16"`` (CUDA),
    ``"bf16"`` (CUDA, or a CPU with native bf16). ``backend``: None (the engine's default: auto on
    CUDA, torch elsewhere), ``"auto"``, ``"torch"``, ``"triton"``, ``"interpret"`` (the engine's backends, see
    :func:`fastsr.optimize`) or ``"reference"`` (the unoptimized module). ``memory_budget``: activation bytes one forward pass may use (default: from the device).
    """

    def __init__(self, model: Any = None, *, device: Any = None, precision: str | None = None,
                 backend: str | None = None, memory_budget: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {', '.join(map(repr, BACKENDS))}")
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                          or memory_budget < 1):
            raise ValueError(f"memory_budget must be a positive number of bytes or None, got {memory_budget!r}")
        self.model = resolve_model(model, caller="Upscaler()")
        check_weights(self.model)  # meta / NaN weights: refused here, not found later as a torch error or a black image
        self.device = _resolve_device(device, self.model)
        self.precision = _resolve_precision(precision, self.device, backend)
        self.backend = backend
        self.memory_budget = memory_budget
        self._run = _prepare(self.model, self.device, self.precision, backend)

    @property
    def scales(self) -> tuple[int, ...]:
        """The scales the model has."""
        return self.model.config.scales

    def check_scale(self, scale: int) -> int:
        """``scale`` if the model has it; TypeError / ValueError ("the model has no x3; ...") otherwise."""
        return self.model.config.require_scale(scale)

    def receptive_field(self, scale: int) -> int:
        """The exact-mode halo at ``scale`` (input pixels)."""
        return receptive_field(self.model.config, scale)

    def __repr__(self) -> str:
        return (f"Upscaler({self.model.config.arch}, scales={self.scales}, device={str(self.device)!r}, "
                f"precision={self.precision!r})")

    def __call__(self, img: Any, scale: int, *, tile: int | None = None, halo: int | None = None,
                 ensemble: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False,
                 on_tile: Callable[[int, int], None] | None = None) -> Any:
        """Upscale ``img`` by ``scale``; see the module docstring for kinds, tiling and errors.

        ``tile``: core side in input pixels (None: from the memory budget). ``halo``: None for exact tiling
        (the receptive field), or fewer pixels for the approximate mode. ``progress``: a tqdm bar of tiles.
        ``on_tile(done, total)``: called after each tile (an exception it raises stops the work).
        """
        return self._call(img, scale, tile, halo, ensemble, max_pixels, progress, on_tile, batch=False)

    def upscale_batch(self, images: np.ndarray, scale: int, *, tile: int | None = None,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Same-size images in one engine call: an N x H x W x 3 (or x 4) uint8 / uint16 / float array in,
        N x sH x sW x C out, each image exactly as ``self(images[i], scale, tile=tile)`` gives it (video
        frames, a server's queued requests). ``max_pixels`` counts the whole batch."""
        return self._call(images, scale, tile, None, False, max_pixels, False, on_tile, batch=True)

    def _call(self, img, scale, tile, halo, ensemble, max_pixels, progress, on_tile, *, batch: bool):
        self.check_scale(scale)
        if not isinstance(ensemble, bool):
            raise TypeError(f"ensemble must be a bool, got {ensemble!r}")
        for name, value, minimum in (("tile", tile, 1), ("halo", halo, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
            if value is not None and value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        if batch and not isinstance(img, np.ndarray):
            raise TypeError(f"upscale_batch takes a numpy array N x H x W x C, got {type(img).__name__}")
        image = _normalise(img, max_pixels, batch)
        out = self._upscale(image, scale, tile, halo, ensemble, progress, on_tile)
        return self._restore(out, image)

    # The work, on a normalised image.
    def _upscale(self, image: _Image, scale: int, tile: int | None, halo: int | None, ensemble: bool,
                 progress: bool, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
        from tqdm import tqdm

        config = self.model.config
        n, _, h, w = image.colour.shape
        halo = receptive_field(config, scale) if halo is None else halo
        engine = getattr(self._run, "engine", None)
        if engine is not None:
            # The engine's plan states its activation memory; at a large side its fixed tail-band floor is
            # amortised, so per pixel it is a safe slope for the tile sizes that matter.
            side = 1024
            per_pixel = -(-engine.activation_bytes(1, side, side, scale) // side**2)
        else:
            per_pixel = activation_bytes_per_pixel(config, scale, PRECISIONS[self.precision].itemsize)
        budget = self.memory_budget or memory_budget(self.device)
        if tile is None:
            tile = auto_tile_size(h, w, halo, per_pixel, budget)
        tiles = plan_tiles(h, w, tile, halo)
        largest = max(t.input_shape[0] * t.input_shape[1] for t in tiles)
        max_batch = max(1, budget // (per_pixel * largest))  # images (and transforms) per forward pass
        ks = tuple(range(N_TRANSFORMS)) if ensemble else (0,)

        gray = image.colour.shape[1] == 1
        channels = (1 if gray else 3) + (image.alpha is not None)
        # Results are written straight into the output dtype: channels-last for PIL / numpy (no copy at the
        # end), NCHW for tensors.
        channels_last = image.kind != "torch"
        shape = (n, h * scale, w * scale, channels) if channels_last else (n, channels, h * scale, w * scale)
        out = torch.empty(shape, dtype=image.out_dtype, device=image.device)
        rgb_range = config.rgb_range

        def store(t, y: torch.Tensor, c0: int, c1: int) -> None:
            y = y.to(out.device)
            ys, ye, xs, xe = t.y0 * scale, t.y1 * scale, t.x0 * scale, t.x1 * scale
            if channels_last:
                out[:, ys:ye, xs:xe, c0:c1] = y.permute(0, 2, 3, 1)
            else:
                out[:, c0:c1, ys:ye, xs:xe] = y

        bar = tqdm(total=len(tiles), unit="tile", leave=False, disable=not progress or len(tiles) == 1)
        # inference_mode inside: `out` was made outside it, so the caller gets an ordinary tensor.
        try:
            with torch.inference_mode():
                for done, t in enumerate(tiles, 1):
                    x = image.colour[:, :, t.iy0 : t.iy1, t.ix0 : t.ix1]
                    if gray:
                        x = x.expand(-1, 3, -1, -1)
                    if rgb_range != 255:
                        x = x * (rgb_range / 255)
                    y = _forward_batched(self._run, x, scale, ks, max_batch)
                    cy0, cy1, cx0, cx1 = t.core_in_input
                    y = y[:, :, cy0 * scale : cy1 * scale, cx0 * scale : cx1 * scale]
                    if rgb_range != 255:
                        y = y * (255 / rgb_range)
                    if gray:
                        y = y.clamp(0, 255).mean(dim=1, keepdim=True)
                    store(t, _quantize(y, image.out_dtype), 0, channels - (image.alpha is not None))
                    if image.alpha is not None:
                        store(t, _quantize(self._alpha_tile(image.alpha, t, h, w, scale), image.out_dtype),
                              channels - 1, channels)
                    bar.update(1)
                    if on_tile is not None:
                        on_tile(done, len(tiles))
        finally:
            bar.close()
        return out

    def _alpha_tile(self, alpha: torch.Tensor, t, h: int, w: int, scale: int) -> torch.Tensor:
        """Bicubic upscaling of the alpha plane over tile ``t``'s core (exact: the kernel's reach is read too)."""
        y0, y1 = max(0, t.y0 - _ALPHA_HALO), min(h, t.y1 + _ALPHA_HALO)
        x0, x1 = max(0, t.x0 - _ALPHA_HALO), min(w, t.x1 + _ALPHA_HALO)
        a = alpha[:, :, y0:y1, x0:x1].to(self.device, torch.float32)
        up = F.interpolate(a, scale_factor=scale, mode="bicubic", align_corners=False)
        return up[:, :, (t.y0 - y0) * scale : (t.y1 - y0) * scale, (t.x0 - x0) * scale : (t.x1 - x0) * scale]

    @staticmethod
    def _restore(out: torch.Tensor, image: _Image) -> Any:
        if image.kind == "torch":
            return out if image.batched else out[0]
        if image.kind == "numpy" and image.batched:
            return out.numpy()  # N x H x W x C, as given
        a = out[0].numpy()
        if a.shape[-1] == 1:
            a = a[..., 0]
        if image.kind == "numpy":
            return a
        from PIL import Image

        result = Image.fromarray(a)
        if result.mode != image.pil_mode:  # pragma: no cover - fromarray picks the mode from dtype and channels
            raise AssertionError(f"PIL mode {result.mode} != {image.pil_mode}")
        return result


def upscale(img: Any, scale: int = 4, *, model: Any = None, device: Any = None, precision: str | None = None,
            tile: int | None = None, ensemble: bool = False, halo: int | None = None,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False) -> Any:
    """Upscale ``img`` (PIL image, numpy array or torch tensor) by ``scale`` with ``model``.

    Same kind, dtype and channel layout out. ``model=None`` uses the bundled default weights
    (:class:`fastsr.weights.DefaultWeightsMissing` until they are bundled). Loads the model on every call;
    use :class:`Upscaler` for many images. Details in the module docstring of ``fastsr.upscaler``.
    """
    if device is None and isinstance(img, torch.Tensor) and img.device.type == "cuda":
        device = img.device  # a GPU tensor is upscaled on its GPU
    upscaler = Upscaler(model, device=device, precision=precision)
    return upscaler(img, scale, tile=tile, halo=halo, ensemble=ensemble, max_pixels=max_pixels, progress=progress)
