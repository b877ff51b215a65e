"""The ``triton`` / ``interpret`` backends: a plan run with fastsr's fused NHWC conv kernel.

Every op is one kernel launch writing straight into preallocated buffers: three LR feature maps for the
trunk (residual adds accumulate in place), one set of band buffers for the tail (upsampler outputs stored
pixel-shuffled by the kernel), and the output image, into which the final conv stores only its band's
valid rows. ``fastsr.kernels`` is imported here, lazily: ``fastsr`` itself never imports Triton.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .plan import IMAGE, SKIP, TAIL_HALO, Plan, Runner, T, X

CUDNN = "cudnn"  # the autotune's non-Triton candidate: torch's conv (cuDNN, channels_last) + torch epilogue
FUSED, UNFUSED = "fused-block", "two-convs"  # a residual block: the fused kernel, or its two ops as tuned
_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


class TritonRunner(Runner):
    """Runs a plan with the fused kernel. With a ``tuner`` (:class:`fastsr.engine.autotune.Autotuner`: the
    ``auto`` backend), each trunk conv without an input shift -- the residual blocks' convs and the body's
    last one -- runs as the fastest of the kernel's tile configs and cuDNN with the same epilogue done by
    torch, chosen per op shape on its first input by timing each candidate on scratch buffers."""

    def __init__(self, plan: Plan, device: torch.device, dtype: torch.dtype, *, band_budget_bytes: int | None = None,
                 tuner=None) -> None:
        try:
            from ..kernels import conv as kernels  # lazily: Triton is only needed here
        except ImportError as e:
            raise ImportError(f"the triton backend needs Triton ({e}); install it, or use backend='torch'") from e

        super().__init__(plan, device, dtype, band_budget_bytes=band_budget_bytes)
        self.kernels = kernels
        self.ops = [
            (op, kernels.pack_weight(op.weight, dtype).to(device), op.bias.to(device),
             None if op.in_shift is None else op.in_shift.to(device))
            for op in plan.ops()
        ]
        self.n_trunk = len(plan.trunk)
        self.tuner = tuner
        # Per tunable trunk op: its tile configs, and (for cuDNN) the NCHW weight and the bias in the compute dtype.
        self.configs: dict[int, dict[str, dict[str, int]]] = {}
        self.cudnn_weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.choices: dict[int, str] = {}  # the last choice per op (for reports and tests)
        # Residual blocks the fused kernel (kernels/resblock.py) can run in one launch: first op index -> packed
        # weights. The autotune times it against the two ops run as chosen for them.
        self.blocks: dict[int, tuple] = {}
        if tuner is not None:
            for i, (op, _, b, shift) in enumerate(self.ops[: self.n_trunk]):
                if shift is not None or op.shuffle != 1:
                    continue  # the head (mean in its load) always runs the kernel
                self.configs[i] = kernels.candidate_configs(op.weight.shape[1], op.weight.shape[0], dtype)
                w = op.weight.to(device, dtype).contiguous(memory_format=torch.channels_last)
                self.cudnn_weights[i] = (w, b.to(dtype))
            for i in range(self.n_trunk - 1):
                if self._fusable(i):
                    self.blocks[i] = (self.ops[i][1], self.ops[i][2], self.ops[i + 1][1], self.ops[i + 1][2])

    def _fusable(self, i: int) -> bool:
        """Ops i, i + 1 are ``x -> relu(conv) -> conv + x``: 3x3, F -> F, F a power of two in [16, 128]."""
        if i not in self.configs or i + 1 not in self.configs:
            return False
        a, b = self.ops[i][0], self.ops[i + 1][0]
        f = a.weight.shape[0]
        return (a.relu and not b.relu and a.dst == b.src and b.residual == a.src and a.kernel_size == 3
                and b.kernel_size == 3 and tuple(a.weight.shape[:2]) == (f, f) == tuple(b.weight.shape[:2])
                and 16 <= f <= 128 and f & (f - 1) == 0
                and (self.dtype != torch.float32 or self.kernels.interpreting()))  # fp16 / bf16 on a GPU

    def _launch(self, entry, src: torch.Tensor, out: torch.Tensor, residual=None, **kw) -> None:
        op, w, b, shift = entry
        self.kernels.conv2d_nhwc(src, w, b, out, ksize=op.kernel_size, shift=shift, relu=op.relu,
                                 residual=residual, shuffle=op.shuffle, **kw)

    def _cudnn(self, i: int, src: torch.Tensor, out: torch.Tensor, residual=None) -> None:
        """Trunk op ``i`` by torch: conv (cuDNN on NHWC memory), then ReLU and the residual add, into ``out``."""
        op = self.ops[i][0]
        w, b = self.cudnn_weights[i]
        y = F.conv2d(src.permute(0, 3, 1, 2), w, b, padding=op.kernel_size // 2)
        if op.relu:
            y = F.relu_(y)
        if residual is not None:
            y = y.add_(residual.permute(0, 3, 1, 2))
        out.permute(0, 3, 1, 2).copy_(y)

    def _run(self, i: int, choice: str, src: torch.Tensor, out: torch.Tensor, residual=None) -> None:
        if choice == CUDNN:
            self._cudnn(i, src, out, residual)
        else:
            self._launch(self.ops[i], src, out, residual, config=self.configs[i][choice])

    def _choose(self, i: int, src: torch.Tensor, out: torch.Tensor, residual) -> str:
        from .autotune import OpKey

        op = self.ops[i][0]
        n, h, w, c_in = src.shape
        epilogue = "+".join(e for e, on in (("relu", op.relu), ("res", residual is not None)) if on)
        key = OpKey(n=n, h=h, w=w, c_in=c_in, c_out=op.weight.shape[0], ksize=op.kernel_size,
                    dtype=_DTYPE_NAMES[self.dtype], epilogue=epilogue)
        # Candidates run on scratch outputs (a residual may alias the op's output: in place it would
        # accumulate at every timed run).
        scratch = torch.empty_like(out)
        res = None if residual is None else residual.clone()
        candidates = {name: (lambda name=name: self._run(i, name, src, scratch, res)) for name in self.configs[i]}
        candidates[CUDNN] = lambda: self._cudnn(i, src, scratch, res)
        return self.tuner.choose(key, candidates)

    def _fused_block(self, i: int, bufs: dict[str, torch.Tensor]) -> None:
        """Ops i, i + 1 in one launch. The fused kernel cannot write over its input; where the block
        accumulates in place (output = input buffer), it writes into the block's intermediate buffer, which
        it does not need, and the two buffers swap names."""
        from ..kernels.resblock import resblock_nhwc

        a, b = self.ops[i][0], self.ops[i + 1][0]
        w1, b1, w2, b2 = self.blocks[i]
        src = bufs[a.src]
        if b.dst != a.src:
            resblock_nhwc(src, w1, b1, w2, b2, bufs[b.dst])
        else:
            out = bufs[a.dst]
            resblock_nhwc(src, w1, b1, w2, b2, out)
            bufs[b.dst], bufs[a.dst] = out, src
        self.choices[i] = self.choices[i + 1] = FUSED

    def _choose_block(self, i: int, bufs: dict[str, torch.Tensor]) -> str:
        """FUSED, or UNFUSED (the two ops as tuned on their own), whichever the autotune measures faster."""
        from .autotune import OpKey

        a = self.ops[i][0]
        src = bufs[a.src]
        n, h, w, f = src.shape
        key = OpKey(n=n, h=h, w=w, c_in=f, c_out=f, ksize=3, dtype=_DTYPE_NAMES[self.dtype], epilogue="block")
        known = self.tuner.cached(key)
        if known in (FUSED, UNFUSED):
            return known
        scratch = {name: torch.empty_like(src) for name in ("in", "mid", "out")}
        scratch["in"].copy_(src)
        mid, out = scratch["mid"], scratch["out"]

        def unfused() -> None:
            for j, (s_, d_, r_) in ((i, (scratch["in"], mid, None)), (i + 1, (mid, out, scratch["in"]))):
                self.choices[j] = self._choose(j, s_, d_, r_)
                self._run(j, self.choices[j], s_, d_, r_)

        def fused() -> None:
            from ..kernels.resblock import resblock_nhwc

            resblock_nhwc(scratch["in"], *self.blocks[i], out)

        unfused()  # tunes the two ops on their own first, so the UNFUSED candidate is their best
        return self.tuner.choose(key, {UNFUSED: unfused, FUSED: fused})

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
        i = 0
        while i < self.n_trunk:
            op = self.ops[i][0]
            if i in self.blocks and self._choose_block(i, bufs) == FUSED:
                self._fused_block(i, bufs)
                i += 2
                continue
            src, dst = bufs[op.src], bufs[op.dst]
            residual = bufs[op.residual] if op.residual else None
            if i in self.configs:
                self.choices[i] = self._choose(i, src, dst, residual)
                self._run(i, self.choices[i], src, dst, residual)
            else:
                self._launch(self.ops[i], src, dst, residual)
            i += 1
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
            # The final conv stores only the band's valid rows, straight into the output image. Its input is
            # at res x LR (s x LR after an upsampler; LR for the conv-shuffle tail, whose final op stores
            # pixel-shuffled by s).
            self._launch(tail[-1], src, out[:, r0 * s : r1 * s], row0=(r0 - a) * res, rows=(r1 - r0) * res,
                         **final_kw)
        return out.permute(0, 3, 1, 2)
