"""The ``torch`` backend: runs a :class:`~fastsr.engine.plan.Plan` with torch ops on any device.

Activations are channels_last (NHWC in memory), the layout oneDNN and cuDNN run fastest. On CPU with
oneDNN, each op is one fused oneDNN primitive: conv + ReLU (``eltwise`` post-op) or conv + residual add
accumulated in place into the residual buffer (``binary add`` post-op), with weights reordered once into
oneDNN's blocked layout. Elsewhere (CUDA, or a torch without oneDNN) it is ``F.conv2d`` followed by in-place
``relu_`` / ``add_``.

Each op has its own compute dtype: the CPU bf16 mode (:func:`cpu_bf16_policy`) runs the F-channel convs in
bf16 and the head and the tail's output in fp32. The tail runs folded into one conv + shuffle
(:func:`~fastsr.engine.plan.fold_tail`), with the image's outer ring recomputed op by op; fp32 3x3 convs can
run as Winograd F(4, 3) (``winograd.py``) where that times faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .plan import IMAGE, OUT, SKIP, TAIL_HALO, ConvOp, Plan, Runner, X, fold_tail
from .winograd import WinogradChoice, conv3x3, transform_weight

_CL = torch.channels_last
# glibc serves allocations from this size up (its largest mmap threshold on 64-bit systems, 32 MiB) with
# fresh mmaps, returned to the system on free: each new conv output that large is faulted in page by page.
MMAP_BYTES = 32 * 2**20


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
    """One plan op with its weights on the device in its compute dtype (and oneDNN layout on CPU).

    The op reads its source buffer in ``dtype`` (cast if the buffer is kept in another dtype), computes in
    ``dtype`` with fp32 accumulation, and writes ``out_dtype``.
    """

    def __init__(self, op: ConvOp, device: torch.device, dtype: torch.dtype, out_dtype: torch.dtype,
                 fused: bool, winograd: bool = False) -> None:
        self.op = op
        self.dtype = dtype
        self.out_dtype = out_dtype
        self.pad = [op.kernel_size // 2] * 2
        self.fused = fused
        weight = op.weight.to(device, dtype)
        self.bias = op.bias.to(device, dtype)
        # The shift is added in fp32 (or the compute dtype, if wider) before the cast: 0..255 inputs minus a
        # mean are not bf16-exact.
        shift_dtype = torch.promote_types(dtype, torch.float32)
        self.shift = None if op.in_shift is None else op.in_shift.to(device, shift_dtype).view(1, -1, 1, 1)
        if fused:
            # oneDNN's blocked weight layout, chosen for a nominal input; other sizes reuse it.
            nominal = [1, weight.shape[1], 64, 64]
            self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.to_mkldnn(), self.pad, [1, 1], [1, 1], 1, nominal
            )
        else:
            self.weight = weight.contiguous(memory_format=_CL)
        # Winograd F(4, 3) as an alternative for fp32 3x3 convs, chosen per input shape by timing.
        self.winograd = None
        if winograd and op.kernel_size == 3 and dtype == torch.float32:
            self.u = transform_weight(op.weight).to(device)
            self.winograd = WinogradChoice()

    def __call__(self, bufs: dict[str, torch.Tensor]) -> None:
        op = self.op
        x = bufs[op.src]
        if self.shift is not None:
            # sub_mean's shift, before the conv's zero padding: only in-bounds pixels are shifted.
            x = x.to(self.shift.dtype) + self.shift
        x = x.to(self.dtype)
        residual = bufs[op.residual] if op.residual else None
        in_place = residual is not None and op.dst == op.residual
        if self.winograd is not None and self._winograd_wins(x):
            y = conv3x3(x.contiguous(memory_format=_CL), self.u, self.bias, relu=op.relu, residual=residual,
                        out=residual if in_place else None)
        elif self._reusable(bufs.get(op.dst), x, residual):
            # conv + ReLU into the previous block's dst buffer (zeroed, then a fused in-place conv + add +
            # ReLU): the same bits, without a new allocation that glibc would map and fault in page by page.
            y = bufs[op.dst].zero_()
            torch.ops.mkldnn._convolution_pointwise_.binary(y, x, self.weight, self.bias, self.pad, [1, 1], [1, 1],
                                                            1, "add", 1.0, "relu", [], "")
        else:
            y = self._conv(x, residual)
            if not in_place:
                y = y.to(self.out_dtype)
        if op.shuffle > 1:
            y = F.pixel_shuffle(y, op.shuffle).contiguous(memory_format=_CL)
        bufs[op.dst] = y

    def _reusable(self, old: torch.Tensor | None, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
        """Whether this conv + ReLU can write into ``old`` (its dst buffer from the previous block): only for
        outputs of at least MMAP_BYTES, which a fresh allocation would fault in page by page."""
        op = self.op
        return (self.fused and op.relu and residual is None and op.shuffle == 1 and old is not None
                and old.dtype == self.dtype == self.out_dtype and old.nbytes >= MMAP_BYTES
                and old.shape == (x.shape[0], self.bias.shape[0], *x.shape[2:])
                and old.is_contiguous(memory_format=_CL) and old.data_ptr() != x.data_ptr())

    def _winograd_wins(self, x: torch.Tensor) -> bool:
        """Whether Winograd is the faster algorithm for inputs of ``x``'s shape (timed out of place, without
        the residual, on the first input of each shape)."""
        x = x.contiguous(memory_format=_CL)
        return self.winograd.choose(tuple(x.shape), lambda: self._conv(x, None),
                                    lambda: conv3x3(x, self.u, self.bias, relu=self.op.relu))

    def _conv(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """conv(x) + bias [ReLU] [+ residual, in place when ``dst`` is the residual buffer]."""
        op = self.op
        if not self.fused:
            y = F.conv2d(x, self.weight, self.bias, padding=self.pad)
            if op.relu:
                y.relu_()
            if residual is not None:
                if op.dst == op.residual:
                    return residual.add_(y)
                y.add_(residual)
            return y
        mk = torch.ops.mkldnn
        args = (self.pad, [1, 1], [1, 1], 1)
        if residual is None:
            return mk._convolution_pointwise(x, self.weight, self.bias, *args, "relu" if op.relu else "none", [], "")
        if op.relu:
            raise NotImplementedError("conv + ReLU + residual is not a plan op")
        if op.dst == op.residual:  # accumulate into the residual buffer in place
            return mk._convolution_pointwise_.binary(residual, x, self.weight, self.bias, *args, "add", 1.0, None, [], None)
        return mk._convolution_pointwise.binary(x, residual, self.weight, self.bias, *args, "add", 1.0, None, [], None)


class TorchRunner(Runner):
    """Executes a plan: the trunk over whole LR maps, then the tail in row bands of the body output.

    ``op_dtypes`` (op name -> compute dtype) overrides ``dtype`` per op (the CPU bf16 mode); the feature
    buffers (residual stream, global skip) stay in ``dtype``, and the output is in the final op's dtype.
    ``winograd``: fp32 3x3 convs may run as Winograd F(4, 3) where it times faster (see ``winograd.py``).
    """

    def __init__(self, plan: Plan, device: torch.device, dtype: torch.dtype, *, band_budget_bytes: int | None = None,
                 op_dtypes: dict[str, torch.dtype] | None = None, winograd: bool = False,
                 fold: bool = True) -> None:
        super().__init__(plan, device, dtype, band_budget_bytes=band_budget_bytes)
        op_dtypes = op_dtypes or {}
        self.out_dtype = op_dtypes.get(plan.tail[-1].name, dtype)
        self.fused = device.type == "cpu" and mkldnn_fusion_available()

        def conv(op: ConvOp) -> _Conv:
            compute = op_dtypes.get(op.name, dtype)
            out = self.out_dtype if op.dst == OUT else dtype if op.dst in (SKIP, X) else compute
            fused = self.fused and compute in (torch.float32, torch.bfloat16)
            return _Conv(op, device, compute, out, fused, winograd=winograd)

        self.trunk = [conv(op) for op in plan.trunk]
        self.tail = [conv(op) for op in plan.tail]
        # The folded tail (named after the final op, so it gets its dtype: fp32 in the CPU bf16 mode); the
        # unfolded tail above computes the outermost ring and runs where folding is switched off. A tail that
        # is one conv + shuffle already (EDSR's conv-shuffle tail) is exact at the border as it is: not folded.
        fold = fold and len(plan.tail) > 1
        self.folded = conv(fold_tail(plan, name=plan.tail[-1].name)) if fold else None

    @torch.no_grad()  # not inference_mode: the output must be an ordinary tensor, as the reference's
    def __call__(self, image: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
        """NCHW float image in [0, rgb_range] -> NCHW output in the final op's dtype (or uint8 0..255 with
        ``quantize``: scaled, clamped, rounded half to even), channels_last in memory."""
        bufs = {IMAGE: image.to(self.device, torch.promote_types(self.trunk[0].dtype, torch.float32)).contiguous(memory_format=_CL)}
        for conv in self.trunk:
            conv(bufs)
        skip = bufs[SKIP]
        bufs.clear()  # frees the other LR maps before the tail runs
        if self.folded is not None:
            out = self._folded_tail(skip)
        else:
            out = self._banded_tail(skip)
        if quantize:
            return out.mul_(255.0 / self.plan.rgb_range).clamp_(0, 255).round_().to(torch.uint8)
        return out

    def _tail_on(self, skip: torch.Tensor) -> torch.Tensor:
        band = {SKIP: skip.contiguous(memory_format=_CL)}
        for conv in self.tail:
            conv(band)
        return band[OUT]

    def _banded_tail(self, skip: torch.Tensor) -> torch.Tensor:
        """The tail op by op, in row bands of ``skip`` with a halo (the full-resolution maps never exist)."""
        n, _, h, w = skip.shape
        s = self.plan.scale
        out = torch.empty(n, self.plan.n_colors, h * s, w * s, device=self.device, dtype=self.out_dtype,
                          memory_format=_CL)
        rows = self.band_rows(h, w)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, b = max(0, r0 - TAIL_HALO), min(h, r1 + TAIL_HALO)
            top = (r0 - a) * s
            out[:, :, r0 * s : r1 * s] = self._tail_on(skip[:, :, a:b])[:, :, top : top + (r1 - r0) * s]
        return out

    def _folded_tail(self, skip: torch.Tensor) -> torch.Tensor:
        """The tail as one conv + shuffle (``fold_tail``), then its outermost LR pixel ring (``s`` output
        pixels wide) recomputed by the tail itself on strips of ``skip`` along the edges. A strip holds the
        ring row and the tail's receptive field (TAIL_HALO rows) beyond it; the top and bottom strips run as
        one batch, and so do the left and right ones."""
        n, _, h, w = skip.shape
        s, k = self.plan.scale, TAIL_HALO + 1
        if h <= 2 * k or w <= 2 * k:  # the strips would cover the image: the tail itself is as cheap
            return self._banded_tail(skip)
        band = {SKIP: skip}
        self.folded(band)
        out = band[OUT]
        rows = self._tail_on(torch.cat([skip[:, :, :k], skip[:, :, -k:]]))
        out[:, :, :s], out[:, :, -s:] = rows[:n, :, :s], rows[n:, :, -s:]
        cols = self._tail_on(torch.cat([skip[:, :, :, :k], skip[:, :, :, -k:]]))
        out[:, :, :, :s], out[:, :, :, -s:] = cols[:n, :, :, :s], cols[n:, :, :, -s:]
        return out


def cpu_bf16_policy(plan: Plan) -> dict:
    """The CPU bf16 mode's per-op dtypes (TorchRunner keywords).

    bf16 (native AVX512-BF16 / AMX-BF16 dot products with fp32 accumulation) for every F-channel conv: the
    residual blocks, the body end and the upsamplers, with the residual stream kept in bf16 (the runner's
    dtype). Kept in fp32:
    the head (it reads the mean-shifted image, which bf16's 8-bit mantissa would round by up to half a
    level) and the final conv, or the folded tail that contains it (its 0..255 output must be fp32 before
    the clamp and the rounding to 8 bits).
    """
    return {"op_dtypes": {plan.trunk[0].name: torch.float32, plan.tail[-1].name: torch.float32}}
