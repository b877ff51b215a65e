"""Lowering: a reference EDSR / MDSR / BN-baseline module becomes a flat plan of fused convs.

Done once per model, on fp32 copies of the weights (the reference is never modified):

* residual scaling folded into the second conv of each block (``w * s``, ``b * s``), the paper's trick;
* eval-mode BatchNorm folded into the conv before it (BN baseline);
* ``sub_mean`` (``x -> D x + c``, D = diag(1/std)): D folded into the head conv's weights and the shift
  ``D^-1 c = -rgb_range * mean`` applied in the head conv's input load, to in-bounds pixels only; folding the
  shift into the head bias would be wrong at the border, where the zero padding must stay zero;
* ``add_mean`` folded into the final conv (``W_a w``, ``W_a b + b_a``);
* the global skip merged into the epilogue of the last body conv.

Activations live in three LR feature buffers: ``skip`` (the trunk input kept for the global skip), ``x``
(the running residual stream, updated in place: ``x += conv(t)``) and ``t`` (a block's ReLU output). The
high-resolution tail (upsampler convs with pixel-shuffle stores, then the final conv) runs in row bands with
a halo, so the full-resolution feature map never exists at once. EDSR's ``"conv-shuffle"`` tail (OpenCV's
zoo files) lowers to a single ``final`` op: its LR conv to colours x s^2, ``add_mean`` folded in, with a
pixel-shuffle store by s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import EDSR, MDSR, upsample_factors

# Body buffers: the global-skip source, the residual stream, a block's intermediate.
SKIP, X, T = "skip", "x", "t"
IMAGE, OUT = "image", "out"
# Tail receptive field in LR rows: the upsampler's first 3x3 conv at LR (1) plus the later convs at r x LR
# resolution (1/2 + 1/4 for x4, 1/3 for x3, 1/2 for x2) stays below 2 (the conv-shuffle tail: 1).
TAIL_HALO = 2
# Bands of at least 16 LR rows keep the recomputed halo (4 rows) within 25% of the tail's work; bands may
# use 64 MiB even where two LR maps are less (small images: one band, no recomputation).
MIN_BAND_ROWS = 16
DEFAULT_BAND_BUDGET = 64 * 2**20


@dataclass
class ConvOp:
    """One fused conv: ``dst = [relu](conv(src [+ in_shift]) + bias) [+ residual]``, stored
    pixel-shuffled by ``shuffle`` (1 = plain store)."""

    name: str
    weight: torch.Tensor  # fp32 [Cout, Cin, k, k], everything folded in
    bias: torch.Tensor  # fp32 [Cout]
    src: str
    dst: str
    relu: bool = False
    residual: str | None = None  # buffer added in the epilogue; == dst means accumulate in place
    shuffle: int = 1
    in_shift: torch.Tensor | None = None  # fp32 [Cin], added to in-bounds input pixels (head only)

    @property
    def kernel_size(self) -> int:
        return self.weight.shape[-1]

    @property
    def flops_per_pixel(self) -> int:
        """Multiply-adds x 2 per output pixel of the conv (before any shuffle)."""
        co, ci, kh, kw = self.weight.shape
        return 2 * co * ci * kh * kw


@dataclass
class Plan:
    """The ops for one scale: ``trunk`` at LR resolution (ends with the body + global skip in ``skip``),
    then ``tail`` (upsampler + final conv), run per row band of ``skip``."""

    arch: str
    scale: int
    n_feats: int
    n_colors: int
    rgb_range: float
    trunk: list[ConvOp] = field(default_factory=list)
    tail: list[ConvOp] = field(default_factory=list)

    def ops(self) -> list[ConvOp]:
        return self.trunk + self.tail

    def flops(self, n: int, height: int, width: int) -> int:
        """Floating-point operations (multiply-adds x 2) of the convs for an ``n x C x height x width`` input:
        each op's ``flops_per_pixel`` times the pixels at its input resolution (without the tail bands'
        recomputed halo rows, which the engine adds on top)."""
        total = sum(op.flops_per_pixel for op in self.trunk) * n * height * width
        res = 1
        for op in self.tail:
            total += op.flops_per_pixel * n * height * width * res * res
            res *= op.shuffle
        return total

    def band_rows(self, height: int, width: int, budget_bytes: int | None, itemsize: int) -> int:
        """LR rows per tail band so that the band's largest intermediate (the r^2 F-channel conv output
        before its shuffle, and its shuffled copy) stays within ``budget_bytes`` (default: two LR feature
        maps, or DEFAULT_BAND_BUDGET if larger). At least MIN_BAND_ROWS rows (the halo is recomputed per
        band: 2 x TAIL_HALO extra rows), at most the whole image."""
        if budget_bytes is None:
            budget_bytes = max(DEFAULT_BAND_BUDGET, 2 * self.n_feats * height * width * itemsize)
        per_row = 0
        res = 1  # resolution of the tail op's input relative to LR
        for op in self.tail:
            out_ch = op.weight.shape[0]
            # conv output (res^2 pixels per LR pixel) and its shuffled copy
            per_row = max(per_row, 2 * out_ch * res * res * width * itemsize)
            res *= op.shuffle
        rows = budget_bytes // max(per_row, 1) - 2 * TAIL_HALO
        return int(min(height, max(MIN_BAND_ROWS, rows)))

    def activation_bytes(self, n: int, height: int, width: int, itemsize: int, band_rows: int | None = None) -> int:
        """Peak activation memory of running the plan (three LR feature maps, one tail band, the image in
        and out), in bytes, excluding weights."""
        lr_map = n * self.n_feats * height * width * itemsize
        rows = band_rows or self.band_rows(height, width, None, itemsize)
        band_h = min(height, rows + 2 * TAIL_HALO)
        band = 0
        res = 1
        for op in self.tail:
            band = max(band, 2 * n * op.weight.shape[0] * res * res * band_h * width * itemsize)
            res *= op.shuffle
        image = n * self.n_colors * height * width * itemsize * (1 + self.scale * self.scale)
        return 3 * lr_map + band + image


def _conv_params(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    w = conv.weight.detach().to(torch.float64).clone()
    b = conv.bias.detach().to(torch.float64).clone() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    return w, b


def _fold_bn(w: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv followed by eval-mode BN: w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded (track_running_stats=False)")
    inv = bn.running_var.detach().double().add(bn.eps).rsqrt()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(inv)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(inv)
    scale = gamma * inv
    return w * scale.view(-1, 1, 1, 1), (b - bn.running_mean.detach().double()) * scale + beta


def _block_ops(block: nn.Module, prefix: str, res_scale: float) -> list[ConvOp]:
    """A residual block ``x += s * conv(relu(conv(x)))`` (optionally with BN after each conv)."""
    layers = list(block.body)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    bns = [m for m in layers if isinstance(m, nn.BatchNorm2d)]
    w1, b1 = _conv_params(convs[0])
    w2, b2 = _conv_params(convs[1])
    if bns:
        w1, b1 = _fold_bn(w1, b1, bns[0])
        w2, b2 = _fold_bn(w2, b2, bns[1])
    # Residual scaling folded into the second conv.
    w2, b2 = w2 * res_scale, b2 * res_scale
    return [
        ConvOp(f"{prefix}.conv1", w1, b1, src=X, dst=T, relu=True),
        ConvOp(f"{prefix}.conv2", w2, b2, src=T, dst=X, residual=X),
    ]


def _affine_1x1(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = _conv_params(conv)
    return w[:, :, 0, 0], b


def lower(model: EDSR | MDSR, scale: int) -> Plan:
    """The fp32 plan of ``model`` at ``scale`` (weights copied and folded in float64, stored as fp32)."""
    if not isinstance(model, (EDSR, MDSR)):
        raise TypeError(f"lower() expects a fastsr EDSR or MDSR module, got {type(model).__name__}")
    if model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise ValueError("the model has BatchNorm layers in training mode; call model.eval() before optimize()")
    config = model.config
    config.require_scale(scale)
    plan = Plan(arch=config.arch, scale=scale, n_feats=config.n_feats, n_colors=config.n_colors,
                rgb_range=config.rgb_range)
    ops: list[ConvOp] = []

    # Head with sub_mean: D x + c = D (x + D^-1 c); D goes into the weights, D^-1 c into the input load.
    d, c = _affine_1x1(model.sub_mean)
    if torch.linalg.matrix_rank(d) < d.shape[0]:
        raise ValueError("sub_mean is not invertible; this MeanShift cannot be applied in the head's load")
    shift = torch.linalg.solve(d, c)
    wh, bh = _conv_params(model.head[0])
    wh = torch.einsum("oikl,ij->ojkl", wh, d)
    head_dst = SKIP if isinstance(model, EDSR) else X
    ops.append(ConvOp("head", wh, bh, src=IMAGE, dst=head_dst, in_shift=shift))

    if isinstance(model, MDSR):
        k = config.scales.index(scale)
        for j, block in enumerate(model.pre_process[k]):
            ops += _block_ops(block, f"pre_process.{k}.{j}", 1.0)
        # The pre-processed map is the trunk input that the global skip adds back.
        last = ops[-1]
        last.dst, last.residual = SKIP, X
    body = list(model.body)
    for i, block in enumerate(body[:-1]):
        block_ops = _block_ops(block, f"body.{i}", config.res_scale)
        if i == 0:  # the first block reads the trunk input from `skip` and starts the stream in `x`
            block_ops[0].src = SKIP
            block_ops[1].residual = SKIP
        ops += block_ops
    # Body end + global skip, accumulated into `skip`.
    we, be = _conv_params(body[-1])
    ops.append(ConvOp(f"body.{len(body) - 1}", we, be, src=X, dst=SKIP, residual=SKIP))
    plan.trunk = ops

    wa, ba = _affine_1x1(model.add_mean)
    if isinstance(model, EDSR) and config.tail == "conv-shuffle":
        # One conv to colours x s^2 at LR, stored pixel-shuffled: add_mean (per colour) acts on the s^2
        # channels c * s^2 + p of each colour c, so it folds in as kron(W_a, I_{s^2}).
        w, b = _conv_params(model.tail[0])
        expand = torch.kron(wa, torch.eye(scale * scale, dtype=wa.dtype))
        w = torch.einsum("ij,jckl->ickl", expand, w)
        b = expand @ b + ba.repeat_interleave(scale * scale)
        plan.tail.append(ConvOp("final", w, b, src=SKIP, dst=OUT, shuffle=scale))
        return _as_fp32(plan)

    # Tail: upsampler convs with pixel-shuffle stores, then the final conv with add_mean folded in.
    upsampler = model.tail[0] if isinstance(model, EDSR) else model.upsample[config.scales.index(scale)]
    final = model.tail[1] if isinstance(model, EDSR) else model.tail[0]
    convs = [m for m in upsampler if isinstance(m, nn.Conv2d)]
    src = SKIP
    for j, (conv, r) in enumerate(zip(convs, upsample_factors(scale))):
        w, b = _conv_params(conv)
        dst = f"up{j}"
        plan.tail.append(ConvOp(f"upsample.{j}", w, b, src=src, dst=dst, shuffle=r))
        src = dst
    wf, bf = _conv_params(final)
    wf = torch.einsum("ij,jckl->ickl", wa, wf)
    bf = wa @ bf + ba
    plan.tail.append(ConvOp("final", wf, bf, src=src, dst=OUT))
    return _as_fp32(plan)


def _as_fp32(plan: Plan) -> Plan:
    """The plan with its float64 weights, biases and shifts stored as contiguous fp32."""
    for op in plan.ops():
        op.weight = op.weight.float().contiguous()
        op.bias = op.bias.float().contiguous()
        if op.in_shift is not None:
            op.in_shift = op.in_shift.float().contiguous()
    return plan


def tail_receptive_field(scale: int, tail: str = "upsampler") -> float:
    """Receptive-field radius of the tail in LR pixels (1 for the LR conv, 1/r per later conv); the
    ``"conv-shuffle"`` tail (one LR conv, then the shuffle) has 1."""
    if tail == "conv-shuffle":
        return 1.0
    radius, res = 1.0, 1
    for r in upsample_factors(scale):
        res *= r
        radius += 1.0 / res
    return radius


class Runner:
    """The part of a backend's plan executor that both backends share: plan, device, dtype, band size."""

    def __init__(self, plan: Plan, device: torch.device, dtype: torch.dtype, *,
                 band_budget_bytes: int | None = None) -> None:
        self.plan = plan
        self.device = device
        self.dtype = dtype
        self.band_budget_bytes = band_budget_bytes

    def band_rows(self, height: int, width: int) -> int:
        """Rows of the tail's row bands for a ``height x width`` input (within ``band_budget_bytes``)."""
        return self.plan.band_rows(height, width, self.band_budget_bytes, self.dtype.itemsize)


# The folded tail's kernel radius in LR pixels: the tail's receptive field (below 2 at every scale, see
# TAIL_HALO) rounded up to whole LR pixels for every output phase.
FOLD_RADIUS = 2


def fold_tail(plan: Plan, name: str = "tail.folded") -> ConvOp:
    """The whole tail (upsampler convs, pixel shuffles, final conv: all linear, no activation between them)
    as one LR conv followed by one pixel shuffle by ``scale``: a ``(2 FOLD_RADIUS + 1)``-square conv from
    the body's F channels to ``n_colors * scale**2``.

    It needs far fewer operations than the tail it replaces (EDSR-baseline x4: 154 k instead of 1.53 M
    multiply-adds x 2 per LR pixel) and never makes the F-channel maps at 2x / 4x resolution. It equals the
    tail everywhere except in the outermost LR pixel ring of the image: there the tail's intermediate maps
    are zero-padded, which a single conv cannot express (the runner recomputes that ring with the tail).

    The weights are the tail's input gradients at the canvas centre (one backward pass per output channel
    and phase, batched: ``n_colors * scale**2`` of them, not one forward pass per input channel), computed
    in fp32 on the CPU on a canvas wide enough that no border is in reach; the bias is the tail's output
    there for a zero input.
    """
    r, s = FOLD_RADIUS, plan.scale
    f = plan.tail[0].weight.shape[1]
    size = 4 * r + 3  # the centre output's receptive field and its intermediates stay inside the canvas
    c = size // 2

    def tail(x: torch.Tensor, with_bias: bool) -> torch.Tensor:
        for weight, bias, pad, shuffle in ops:
            x = torch.nn.functional.conv2d(x, weight, bias if with_bias else None, padding=pad)
            if shuffle > 1:
                x = torch.nn.functional.pixel_shuffle(x, shuffle)
        return x

    k = 2 * r + 1
    with torch.inference_mode(False), torch.enable_grad():  # also when optimize() runs in inference mode
        # Copies made here are ordinary tensors, which autograd can save (inference tensors it cannot).
        ops = [(op.weight.detach().float().cpu().clone(), op.bias.detach().float().cpu().clone(),
                op.kernel_size // 2, op.shuffle) for op in plan.tail]
        x = torch.zeros(1, f, size, size, requires_grad=True)
        centre = tail(x, False)[0, :, c * s : (c + 1) * s, c * s : (c + 1) * s]  # [colors, p, q]
        colors = centre.shape[0]
        n_out = colors * s * s
        eye = torch.eye(n_out).view(n_out, colors, s, s)
        (grads,) = torch.autograd.grad(centre, x, eye, is_grads_batched=True)  # [n_out, 1, F, size, size]
    # out[o*s^2 + p*s + q, Y, X] = sum_{i,kk,ll} W[., i, kk, ll] x[i, Y + kk - r, X + ll - r], at Y = X = c.
    weight = grads[:, 0, :, c - r : c - r + k, c - r : c - r + k]
    with torch.no_grad():
        bias = tail(torch.zeros(1, f, size, size), True)[0, :, c * s : (c + 1) * s, c * s : (c + 1) * s]
    bias = bias.reshape(n_out)
    return ConvOp(name, weight.contiguous(), bias.contiguous(), src=SKIP, dst=OUT, shuffle=s)
