"""The engine: parity of the optimized module with the reference on every backend, the drop-in for
EDSR-PyTorch / BasicSR modules, banded tails, and the errors for unsupported combinations."""

from __future__ import annotations

import os

import pytest
import torch
from foreign import BasicSREDSR, OfficialEDSR, OfficialMDSR

import fastsr
from fastsr.engine import optimize
from fastsr.engine.plan import TAIL_HALO, lower, tail_receptive_field
from fastsr.models import EDSRConfig, MDSRConfig, build, create
from fastsr.system import cpu_bf16_isa

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (CPU machines)")


def call(model, x, scale):
    with torch.no_grad():
        return model(x, scale) if scale is not None else model(x)


# (name, scale for MDSR): every scale of every kind of network.
TORCH_CASES = [("edsr-baseline-x2", None), ("edsr-baseline-x3", None), ("edsr-baseline-x4", None),
               ("edsr-bn-baseline-x2", None), ("edsr-bn-baseline-x4", None),
               ("mdsr-baseline", 2), ("mdsr-baseline", 3), ("mdsr-baseline", 4)]


# (dtype fp32, atol 2e-3 on a 0-255 output, rtol 0): the folds (res_scale, BN, mean shifts) are computed in
# float64 but stored as fp32, and oneDNN's fused kernels sum in another order than the reference's convs.
@pytest.mark.parametrize("name,scale", TORCH_CASES)
def test_torch_backend_matches_reference(name, scale, make_image, randomize_bn):
    torch.manual_seed(0)
    model = randomize_bn(create(name))
    engine = optimize(model, precision="fp32")
    assert engine.backend == "torch" and engine.dtype == torch.float32
    x = make_image(2, 17, 23)  # odd sizes, batch 2
    ref, out = call(model, x, scale), call(engine, x, scale)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=0)


needs_bf16 = pytest.mark.skipif(cpu_bf16_isa() is None, reason="this CPU has no native bf16 (AVX512-BF16 / AMX-BF16)")


# (bf16, max abs 1.5 and mean abs 0.25 on a 0-255 output): the body's activations and weights are bf16
# (8-bit mantissas, relative 2^-9) through 33+ convs; measured max 0.36-0.57, mean 0.05-0.10 with these
# random weights. The head, the final conv and the output stay fp32.
@needs_bf16
@pytest.mark.parametrize("name,scale", TORCH_CASES + [("edsr-x2", None)])
def test_cpu_bf16_matches_reference(name, scale, make_image, randomize_bn):
    torch.manual_seed(0)
    model = randomize_bn(create(name))
    engine = optimize(model, precision="bf16")
    assert engine.dtype == torch.bfloat16
    x = make_image(2, 17, 23)
    ref, out = call(model, x, scale), call(engine, x, scale)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    err = (out - ref).abs()
    assert float(err.max()) <= 1.5 and float(err.mean()) <= 0.25, (float(err.max()), float(err.mean()))


@needs_bf16
def test_cpu_bf16_keeps_head_final_and_output_fp32():
    engine = optimize(create("edsr-baseline-x4").eval(), precision="bf16")
    runner = engine.runners[4]
    dtypes = [c.dtype for c in runner.trunk + runner.tail]
    assert dtypes[0] == dtypes[-1] == torch.float32  # head and final conv
    assert set(dtypes[1:-1]) == {torch.bfloat16}  # blocks, body end, both upsamplers
    assert runner.out_dtype == torch.float32
    assert engine.run_uint8(torch.rand(1, 3, 5, 6) * 255, 4).dtype == torch.uint8


@needs_bf16
def test_cpu_bf16_is_deterministic_and_band_exact(make_image):
    """The promises upscale's exact tiling rests on: the same input gives the same bits, and a pixel's
    value does not depend on the band or image it is computed in."""
    torch.manual_seed(0)
    model = create("edsr-baseline-x2").eval()
    engine = optimize(model, precision="bf16")
    x = make_image(1, 40, 33)
    whole = call(engine, x, None)
    assert torch.equal(call(engine, x, None), whole)
    runner = engine.runners[2]
    runner.folded = None  # the op-by-op tail, which the image's border ring always uses
    whole = call(engine, x, None)
    runner.band_budget_bytes = 1  # 16-row bands
    assert runner.band_rows(40, 33) == 16
    assert torch.equal(call(engine, x, None), whole)


@needs_bf16
def test_cpu_bf16_tiled_equals_untiled():
    """upscale's exact tiling holds in bf16: each tile, cut with a halo of the receptive field, computes
    its core exactly as the whole image does (uint8 identical, float identical)."""
    from fastsr.upscaler import Upscaler

    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=2, n_feats=16, scale=2)).eval()  # receptive field 7: many tiles
    up = Upscaler(model, precision="bf16", device="cpu")
    img = (torch.rand(48, 41, 3, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8).numpy()
    whole = up(img, 2, tile=10**4)
    assert (up(img, 2, tile=10) == whole).all()
    f = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    assert torch.equal(up(f, 2, tile=10), up(f, 2, tile=10**4))


def test_bf16_without_native_support_is_refused(monkeypatch):
    import fastsr.system as system

    monkeypatch.setattr(system, "cpu_bf16_isa", lambda: None)
    model = build(EDSRConfig(n_resblocks=1, n_feats=8)).eval()
    with pytest.raises(ValueError, match="needs native bf16 instructions \\(AVX512-BF16 or AMX-BF16"):
        optimize(model, precision="bf16")
    assert system.default_cpu_precision()[0] == "fp32"
    assert optimize(model).dtype == torch.float32  # the default falls back to fp32, not to emulation


def test_wide_edsr_with_res_scale(make_image):
    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=2, n_feats=256, res_scale=0.1, scale=2)).eval()
    x = make_image(1, 13, 9)
    torch.testing.assert_close(call(optimize(model, precision="fp32"), x, None), call(model, x, None), atol=2e-3, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_banded_tail_equals_one_band(scale, make_image):
    model = create(f"edsr-baseline-x{scale}").eval()
    engine = optimize(model, precision="fp32")
    runner = engine.runners[scale]
    x = make_image(2, 37, 10)
    runner.folded = None  # the tail op by op (as it runs where folding is off), not the folded conv
    whole = call(engine, x, None)
    runner.band_budget_bytes = 1  # the minimum band: 16 rows, so 3 bands with halos
    assert runner.band_rows(37, 10) == 16
    torch.testing.assert_close(call(engine, x, None), whole, atol=1e-4, rtol=0)
    assert tail_receptive_field(scale) <= TAIL_HALO


# (fp32, atol 2e-3 on a 0-255 output): the folded weights are the tail's impulse responses, computed in
# float64 and stored as fp32, summed in another order than the tail's three convs.
@pytest.mark.parametrize("name,scale", [("edsr-baseline-x2", None), ("edsr-baseline-x3", None),
                                        ("edsr-baseline-x4", None), ("mdsr-baseline", 3)])
@pytest.mark.parametrize("size", [(23, 19), (7, 30), (5, 5), (1, 9)], ids=str)
def test_folded_tail_equals_the_tail(name, scale, size, make_image):
    """One 5x5 conv + shuffle for the whole tail, with the image's outer ring recomputed by the tail:
    equal to the op-by-op tail everywhere, the border included, for images of any shape."""
    torch.manual_seed(0)
    model = create(name).eval()
    engine = optimize(model, precision="fp32")
    s = scale or model.config.scale
    runner = engine.runners[s]
    assert runner.folded is not None and runner.folded.op.kernel_size == 5
    x = make_image(2, *size)
    folded = call(engine, x, scale)
    runner.folded = None
    torch.testing.assert_close(folded, call(engine, x, scale), atol=2e-3, rtol=0)
    torch.testing.assert_close(folded, call(model, x, scale), atol=2e-3, rtol=0)


def test_fold_tail_weights():
    from fastsr.engine.plan import fold_tail

    plan = lower(create("edsr-baseline-x4").eval(), 4)
    op = fold_tail(plan)
    assert tuple(op.weight.shape) == (3 * 16, 64, 5, 5) and op.shuffle == 4
    # 154 k instead of 1.53 M FLOPs per LR pixel (the tail's 2x and 4x resolution convs count 4x and 16x).
    tail = sum(o.flops_per_pixel * 4**i for i, o in enumerate(plan.tail))
    assert op.flops_per_pixel == 153_600 and tail > 9 * op.flops_per_pixel


def conv_shuffle(scale: int, batch_norm: bool = False):
    """A small EDSR with the conv-shuffle tail of OpenCV's zoo files (one LR conv to 3 s^2, one shuffle)."""
    torch.manual_seed(scale)
    return build(EDSRConfig(n_resblocks=2, n_feats=16, scale=scale, res_scale=0.1, tail="conv-shuffle",
                            batch_norm=batch_norm))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_conv_shuffle_tail_matches_reference(scale, make_image, randomize_bn):
    model = randomize_bn(conv_shuffle(scale, batch_norm=scale == 3))
    plan = lower(model, scale)
    # The tail is one op: the LR conv with add_mean folded in, stored pixel-shuffled by s in one step.
    assert [(op.name, op.shuffle, tuple(op.weight.shape)) for op in plan.tail] == [("final", scale, (3 * scale**2, 16, 3, 3))]
    assert tail_receptive_field(scale, "conv-shuffle") == 1.0
    engine = optimize(model, precision="fp32")
    assert engine.runners[scale].folded is None  # already a single conv + shuffle: nothing to fold
    x = make_image(2, 17, 23)  # odd sizes, batch 2
    ref = call(model, x, None)
    torch.testing.assert_close(call(engine, x, None), ref, atol=2e-3, rtol=0)
    q = engine.run_uint8(x)
    assert q.dtype == torch.uint8 and (q.float() - ref.clamp(0, 255).round()).abs().max() <= 1
    # Row bands (16 rows, halo TAIL_HALO >= its receptive field of 1) give the same image.
    engine.runners[scale].band_budget_bytes = 1
    x = make_image(1, 37, 6)
    torch.testing.assert_close(call(engine, x, None), call(model, x, None), atol=2e-3, rtol=0)
    if cpu_bf16_isa() is not None:
        err = (call(optimize(model, precision="bf16"), x, None) - call(model, x, None)).abs()
        assert float(err.max()) <= 1.5 and float(err.mean()) <= 0.25, (float(err.max()), float(err.mean()))


def test_reference_is_untouched(make_image, randomize_bn):
    model = randomize_bn(create("edsr-bn-baseline-x2"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = optimize(model)
    call(engine, make_image(1, 8, 8), None)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(m.training is False for m in model.modules())


def test_output_is_an_ordinary_tensor(make_image):
    # The reference returns a normal tensor; so must the drop-in (not an inference-mode tensor).
    engine = optimize(build(EDSRConfig(n_resblocks=1, n_feats=8)).eval())
    y = engine(make_image(1, 4, 4))
    assert not y.is_inference() and not y.requires_grad
    y.clamp_(0, 255)  # in-place use outside any inference_mode


def test_uint8_output_matches_quantized_reference(make_image):
    model = create("mdsr-baseline").eval()
    engine = optimize(model, precision="fp32")
    x = make_image(1, 11, 7)
    q = engine.run_uint8(x, 3)
    ref = call(model, x, 3).clamp(0, 255).round()
    assert q.dtype == torch.uint8
    assert (q.float() - ref).abs().max() <= 1  # fp32 sums in another order: at most one level off


def test_sub_mean_is_exact_at_the_border():
    # A constant image equal to the mean: sub_mean gives zeros inside, and the zero padding must stay zero;
    # folding the shift into the head's bias would make the padding -mean instead.
    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)).eval()
    x = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1).expand(1, 3, 6, 6) * 255
    torch.testing.assert_close(call(optimize(model, precision="fp32"), x.contiguous(), None), call(model, x, None), atol=1e-4, rtol=0)


def test_plan_folds_everything():
    model = create("edsr-bn-baseline-x4").eval()
    plan = lower(model, 4)
    # head, 2 convs per block, body end; then two shuffle convs and the final conv. No BN, no MeanShift ops.
    assert len(plan.trunk) == 1 + 2 * 16 + 1
    assert [op.shuffle for op in plan.tail] == [2, 2, 1]
    assert plan.trunk[0].in_shift is not None and plan.trunk[-1].residual == plan.trunk[-1].dst == "skip"
    assert sum(op.relu for op in plan.trunk) == 16
    with pytest.raises(ValueError, match="no x3"):
        lower(model, 3)


# ------------------------------------------------------------------------------------------ drop-in


def test_drop_in_edsr_pytorch_edsr(make_image):
    torch.manual_seed(0)
    theirs = OfficialEDSR(n_resblocks=2, n_feats=16, scale=3, res_scale=0.1).eval()
    engine = optimize(theirs, precision="fp32")
    assert engine.config.res_scale == 0.1
    x = make_image(2, 9, 12)
    torch.testing.assert_close(call(engine, x, None), call(theirs, x, None), atol=1e-3, rtol=0)


def test_drop_in_edsr_pytorch_mdsr_keeps_set_scale(make_image):
    torch.manual_seed(0)
    theirs = OfficialMDSR().eval()
    theirs.set_scale(2)
    engine = optimize(theirs, precision="fp32")
    assert engine.scale_idx == 2  # the branch the module had selected
    x = make_image(1, 8, 9)
    for idx in (0, 1, 2):
        theirs.set_scale(idx)
        engine.set_scale(idx)
        torch.testing.assert_close(call(engine, x, None), call(theirs, x, None), atol=1e-3, rtol=0)


def test_drop_in_basicsr_keeps_unit_range(make_image):
    torch.manual_seed(0)
    theirs = BasicSREDSR(upscale=4, res_scale=0.5).eval()
    engine = optimize(theirs, precision="fp32")
    x = make_image(2, 7, 10, rgb_range=1.0)
    # (fp32, atol 1e-5 on [0, 1]): 1e-3 on the 0-255 scale, as above, divided by 255.
    torch.testing.assert_close(call(engine, x, None), call(theirs, x, None), atol=1e-5, rtol=0)


def test_optimize_loaded_checkpoint(tmp_path, make_image):
    model = create("edsr-baseline-x2").eval()
    loaded = fastsr.load(fastsr.save(model, tmp_path / "m.safetensors"))
    x = make_image(1, 5, 5)
    torch.testing.assert_close(call(fastsr.optimize(loaded, precision="fp32"), x, None), call(model, x, None), atol=2e-3, rtol=0)


# ------------------------------------------------------------------------------------------- errors


def test_unsupported_combinations_raise():
    model = build(EDSRConfig(n_resblocks=1, n_feats=8)).eval()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="the triton backend needs the model on a CUDA device"):
            optimize(model, backend="triton")
        with pytest.raises(ValueError, match="the torch backend runs fp32 or bf16 on CPU"):
            optimize(model, precision="fp16")
    with pytest.raises(ValueError, match="bf16 under the Triton interpreter"):
        optimize(model, backend="interpret", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of"):
        optimize(model, backend="cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize(model, precision="int8")
    with pytest.raises(TypeError, match="expects an nn.Module"):
        optimize("edsr-baseline-x2")
    with pytest.raises(TypeError, match="got Linear"):
        optimize(torch.nn.Linear(2, 2))
    bn = create("edsr-bn-baseline-x2")  # training mode
    with pytest.raises(ValueError, match="call model.eval"):
        optimize(bn)


def test_bad_inputs_and_scales(make_image):
    engine = optimize(build(MDSRConfig(n_resblocks=1, n_feats=8, scales=(2, 4))).eval())
    x = make_image(1, 4, 4)
    with pytest.raises(TypeError, match="needs the scale"):
        engine(x)
    with pytest.raises(ValueError, match="the model has no x3; it upscales by x2, x4"):
        engine(x, 3)
    single = optimize(build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)).eval())
    with pytest.raises(ValueError, match="the model has no x3; it upscales by x2"):
        single(x, 3)
    with pytest.raises(TypeError, match="scale must be an int"):
        single(x, 2.0)
    with pytest.raises(ValueError, match="the model has no x3"):
        single.activation_bytes(1, 8, 8, 3)
    assert single.activation_bytes(1, 8, 8) == single.activation_bytes(1, 8, 8, 2) > 0
    with pytest.raises(ValueError, match="3 channels"):
        engine(torch.zeros(1, 4, 4, 4), 2)
    with pytest.raises(TypeError, match="floating-point"):
        engine(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 2)


# ------------------------------------------------------------ Triton kernels under the interpreter

# (dtype, atol, rtol): fp32 products are IEEE in the kernel, so only the summation order differs;
# fp16 stores activations and weights with an 11-bit mantissa (~0.05% relative) through every layer of a
# tiny net with outputs up to 255, so up to a few tenths of a level.
INTERPRET_PRECISIONS = [("fp32", 1e-3, 0), ("fp16", 0.5, 0.01)]

# Tiny networks that together cover every kernel path: 3x3 and 5x5 (MDSR pre-processing), ReLU, residual
# (in place and into another buffer), shuffle by 2 (x2, x4) and by 3 (x3), BN folded, the final store.
INTERPRET_NETS = [
    (EDSRConfig(n_resblocks=1, n_feats=16, scale=2), None),
    (EDSRConfig(n_resblocks=1, n_feats=16, scale=4, res_scale=0.1), None),
    (EDSRConfig(n_resblocks=1, n_feats=16, scale=3, batch_norm=True), None),
    (MDSRConfig(n_resblocks=1, n_feats=16, scales=(3, 2)), 3),
    (MDSRConfig(n_resblocks=1, n_feats=16, scales=(3, 2)), 2),
    # the conv-shuffle tail: the image stored pixel-shuffled by 4 (and by 3) straight from the LR conv
    (EDSRConfig(n_resblocks=1, n_feats=16, scale=4, res_scale=0.1, tail="conv-shuffle"), None),
    (EDSRConfig(n_resblocks=1, n_feats=16, scale=3, tail="conv-shuffle"), None),
]


@needs_interpreter
@pytest.mark.parametrize("precision,atol,rtol", INTERPRET_PRECISIONS)
@pytest.mark.parametrize("config,scale", INTERPRET_NETS)
def test_interpret_backend_matches_reference(config, scale, precision, atol, rtol, make_image, randomize_bn):
    torch.manual_seed(0)
    model = randomize_bn(build(config))
    engine = optimize(model, backend="interpret", precision=precision)
    x = make_image(2, 9, 11)
    ref = call(model, x, scale)
    out = call(engine, x, scale)
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    q = engine.run_uint8(x, scale)
    assert q.dtype == torch.uint8
    # The final store's clamp + round-half-even quantize: within one level of the quantized reference
    # (fp32: identical except where the two sums straddle a .5).
    assert (q.float() - ref.clamp(0, 255).round()).abs().max() <= 1


@needs_interpreter
@pytest.mark.parametrize("tail", ["upsampler", "conv-shuffle"])
def test_interpret_banded_tail(tail, make_image):
    model = build(EDSRConfig(n_resblocks=1, n_feats=16, scale=4, tail=tail)).eval()
    engine = optimize(model, backend="interpret")
    engine.runners[4].band_budget_bytes = 1  # 16-row bands
    x = make_image(1, 20, 3)
    torch.testing.assert_close(call(engine, x, None), call(model, x, None), atol=1e-3, rtol=0)
    q = engine.run_uint8(x)  # the final store of each band: its valid rows only, quantized
    assert (q.float() - call(model, x, None).clamp(0, 255).round()).abs().max() <= 1


def test_optimize_inside_inference_mode(make_image):
    """Folding the tail uses autograd; it must work when the engine is built under inference_mode too."""
    model = create("edsr-baseline-x2").eval()
    x = make_image(1, 12, 13)
    with torch.inference_mode():
        engine = optimize(model, precision="fp32")
        torch.testing.assert_close(engine(x), model(x), atol=2e-3, rtol=0)


def test_auto_backend_resolution(monkeypatch):
    """"auto" is the Triton plan with autotune on CUDA; torch on the CPU, and on CUDA where Triton is absent (a
    CUDA build without triton must still run by default, on cuDNN). Explicit "triton" there stays an error."""
    import builtins
    import importlib.util

    from fastsr.engine import _resolve
    from fastsr.engine.plan import lower
    from fastsr.engine.triton_backend import TritonRunner

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert _resolve(None, "fp32", cpu)[0] == "torch" and _resolve("auto", "fp32", cpu)[0] == "torch"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real_find_spec(name, *a) if name != "triton"
                        else object())
    assert _resolve(None, None, cuda) == ("auto", torch.float16)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton"
                        else real_find_spec(name, *a))
    assert _resolve(None, None, cuda) == ("torch", torch.float16)
    assert _resolve("auto", "fp32", cuda) == ("torch", torch.float32)
    assert _resolve("triton", "fp16", cuda)[0] == "triton"  # the runner then says what is missing:
    real_import = builtins.__import__

    def no_triton(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton.") or "kernels" in name:
            raise ModuleNotFoundError("No module named 'triton'")
        return real_import(name, *args, **kwargs)

    plan = lower(build(EDSRConfig(n_resblocks=1, n_feats=8)).eval(), 2)
    monkeypatch.setattr(builtins, "__import__", no_triton)
    with pytest.raises(ImportError, match="the triton backend needs Triton .*use backend='torch'"):
        TritonRunner(plan, cpu, torch.float32)
