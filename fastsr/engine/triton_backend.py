"""The ``triton`` / ``interpret`` backends: a plan run with fastsr's fused NHWC conv kernel.

Every op is one kernel launch writing straight into preallocated buffers: three LR feature maps for the
trunk (residual adds accumulate in place), one set of band buffers for the tail (upsampler outputs stored
pixel-shuffled by the kernel), and the output image, into which the final conv stores only its band's
valid rows. ``fastsr.kernels`` is imported here, lazily: ``fastsr`` itself never imports Triton.
"""

from __future__ import annotations

import torch

from .plan import IMAGE, SKIP, TAIL_HALO, T, X, Plan, Runner


class TritonRunner(Runner):
    def __init__(self, plan: Plan, device: torch.device, dtype: torch.dtype, *, band_budget_bytes: int | None = None) -> None:
        from ..kernels import conv as kernels  # lazily: Triton is only needed here

        super().__init__(plan, device, dtype, band_budget_bytes=band_budget_bytes)
        self.kernels = kernels
        self.ops = [
            (op, kernels.pack_weight(op.weight, dtype).to(device), op.bias.to(device),
             None if op.in_shift is None else op.in_shift.to(device))
            for op in plan.ops()
        ]
        self.n_trunk = len(plan.trunk)

    def _launch(self, entry, src: torch.Tensor, out: torch.Tensor, residual=None, **kw) -> None:
        op, w, b, shift = entry
        self.kernels.conv2d_nhwc(src, w, b, out, ksize=op.kernel_size, shift=shift, relu=op.relu,
                                 residual=residual, shuffle=op.shuffle, **kw)

    @torch.no_grad()  # not inference_mode: the output must be an ordinary tensor, as the reference's
    def __call__(self, image: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
        """NCHW float image in [0, rgb_range] -> NCHW output (fp32, or uint8 0..255 with ``quantize``),
        channels_last in memory."""
        plan = self.plan
        n, _, h, w = image.shape
        s, f = plan.scale, plan.n_feats
        dev, dt = self.device, self.dtype
        bufs = {IMAGE: image.to(dev, dt).permute(0, 2, 3, 1)}
        for name in (SKIP, X, T):
            bufs[name] = torch.empty(n, h, w, f, device=dev, dtype=dt)
        for entry in self.ops[: self.n_trunk]:
            op = entry[0]
            self._launch(entry, bufs[op.src], bufs[op.dst], bufs[op.residual] if op.residual else None)
        skip = bufs[SKIP]
        del bufs  # X, T and the input copy are freed before the tail

        # The image is stored as uint8 (quantized once, in the epilogue) or fp32: never rounded to fp16 / bf16
        # first, which would round twice.
        out = torch.empty(n, h * s, w * s, plan.n_colors, device=dev, dtype=torch.uint8 if quantize else torch.float32)
        rows = self.band_rows(h, w)
        band_h = min(h, rows + 2 * TAIL_HALO)
        tail = self.ops[self.n_trunk :]
        band_bufs, res = [], 1
        for op, *_ in tail[:-1]:  # upsampler outputs, allocated once at the largest band size
            res *= op.shuffle
            band_bufs.append(torch.empty(n, band_h * res, w * res, op.weight.shape[0] // op.shuffle**2, device=dev, dtype=dt))
        final_kw = dict(final=True, quantize=True, out_scale=255.0 / plan.rgb_range, clamp_max=255.0) if quantize else {}
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, b = max(0, r0 - TAIL_HALO), min(h, r1 + TAIL_HALO)
            src, res = skip[:, a:b], 1
            for entry, buf in zip(tail[:-1], band_bufs):
                res *= entry[0].shuffle
                dst = buf[:, : (b - a) * res]
                self._launch(entry, src, dst)
                src = dst
            # The final conv stores only the band's valid rows, straight into the output image.
            self._launch(tail[-1], src, out[:, r0 * s : r1 * s], row0=(r0 - a) * s, rows=(r1 - r0) * s, **final_kw)
        return out.permute(0, 3, 1, 2)
