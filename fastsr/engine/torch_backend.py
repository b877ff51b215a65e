"""The ``torch`` backend: runs a :class:`~fastsr.engine.plan.Plan` with torch ops on any device.

Activations are channels_last (NHWC in memory), the layout oneDNN and cuDNN run fastest. On CPU with
oneDNN, each op is one fused oneDNN primitive: conv + ReLU (``eltwise`` post-op) or conv + residual add
accumulated in place into the residual buffer (``binary add`` post-op), with weights reordered once into
oneDNN's blocked layout. Elsewhere (CUDA, or a torch without oneDNN) it is ``F.conv2d`` followed by in-place
``relu_`` / ``add_``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .plan import IMAGE, OUT, SKIP, TAIL_HALO, ConvOp, Plan, Runner

_CL = torch.channels_last


def mkldnn_fusion_available() -> bool:
    """Whether torch exposes oneDNN's fused conv post-ops (as used by inductor on CPU)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and ops is not None
        and hasattr(ops, "_convolution_pointwise")
        and hasattr(ops, "_convolution_pointwise_")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


class _Conv:
    """One plan op with its weights on the device, in the compute dtype (and oneDNN layout on CPU)."""

    def __init__(self, op: ConvOp, device: torch.device, dtype: torch.dtype, fused: bool) -> None:
        self.op = op
        self.pad = [op.kernel_size // 2] * 2
        self.fused = fused
        weight = op.weight.to(device, dtype)
        self.bias = op.bias.to(device, dtype)
        self.shift = None if op.in_shift is None else op.in_shift.to(device, dtype).view(1, -1, 1, 1)
        if fused:
            # oneDNN's blocked weight layout, chosen for a nominal input; other sizes reuse it.
            nominal = [1, weight.shape[1], 64, 64]
            self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.to_mkldnn(), self.pad, [1, 1], [1, 1], 1, nominal
            )
        else:
            self.weight = weight.contiguous(memory_format=_CL)

    def __call__(self, bufs: dict[str, torch.Tensor]) -> None:
        op = self.op
        x = bufs[op.src]
        if self.shift is not None:
            # sub_mean's shift, before the conv's zero padding: only in-bounds pixels are shifted.
            x = x + self.shift
        residual = bufs[op.residual] if op.residual else None
        if self.fused:
            y = self._fused(x, residual)
        else:
            y = F.conv2d(x, self.weight, self.bias, padding=self.pad)
            if op.relu:
                y.relu_()
            if residual is not None:
                if op.dst == op.residual:
                    y = residual.add_(y)
                else:
                    y.add_(residual)
        if op.shuffle > 1:
            y = F.pixel_shuffle(y, op.shuffle).contiguous(memory_format=_CL)
        bufs[op.dst] = y

    def _fused(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        op, mk = self.op, torch.ops.mkldnn
        args = (self.pad, [1, 1], [1, 1], 1)
        if residual is None:
            return mk._convolution_pointwise(x, self.weight, self.bias, *args, "relu" if op.relu else "none", [], "")
        if op.relu:
            raise NotImplementedError("conv + ReLU + residual is not a plan op")
        if op.dst == op.residual:  # accumulate into the residual buffer in place
            return mk._convolution_pointwise_.binary(residual, x, self.weight, self.bias, *args, "add", 1.0, None, [], None)
        return mk._convolution_pointwise.binary(x, residual, self.weight, self.bias, *args, "add", 1.0, None, [], None)


class TorchRunner(Runner):
    """Executes a plan: the trunk over whole LR maps, then the tail in row bands of the body output."""

    def __init__(self, plan: Plan, device: torch.device, dtype: torch.dtype, *, band_budget_bytes: int | None = None) -> None:
        super().__init__(plan, device, dtype, band_budget_bytes=band_budget_bytes)
        fused = device.type == "cpu" and dtype == torch.float32 and mkldnn_fusion_available()
        self.fused = fused
        self.trunk = [_Conv(op, device, dtype, fused) for op in plan.trunk]
        self.tail = [_Conv(op, device, dtype, fused) for op in plan.tail]

    @torch.no_grad()  # not inference_mode: the output must be an ordinary tensor, as the reference's
    def __call__(self, image: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
        """NCHW float image in [0, rgb_range] -> NCHW output in the compute dtype (or uint8 0..255 with
        ``quantize``: scaled, clamped, rounded half to even), channels_last in memory."""
        n, _, h, w = image.shape
        s = self.plan.scale
        bufs = {IMAGE: image.to(self.device, self.dtype).contiguous(memory_format=_CL)}
        for conv in self.trunk:
            conv(bufs)
        skip = bufs[SKIP]
        bufs.clear()  # frees the other LR maps before the tail runs
        out = torch.empty(n, self.plan.n_colors, h * s, w * s, device=self.device, dtype=self.dtype, memory_format=_CL)
        rows = self.band_rows(h, w)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, b = max(0, r0 - TAIL_HALO), min(h, r1 + TAIL_HALO)
            band = {SKIP: skip[:, :, a:b].contiguous(memory_format=_CL)}
            for conv in self.tail:
                conv(band)
            top = (r0 - a) * s
            out[:, :, r0 * s : r1 * s] = band[OUT][:, :, top : top + (r1 - r0) * s]
        if quantize:
            return out.mul_(255.0 / self.plan.rgb_range).clamp_(0, 255).round_().to(torch.uint8)
        return out
