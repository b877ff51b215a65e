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
    engine = optimize(model)
    assert engine.backend == "torch" and engine.dtype == torch.float32
    x = make_image(2, 17, 23)  # odd sizes, batch 2
    ref, out = call(model, x, scale), call(engine, x, scale)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=0)


def test_wide_edsr_with_res_scale(make_image):
    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=2, n_feats=256, res_scale=0.1, scale=2)).eval()
    x = make_image(1, 13, 9)
    torch.testing.assert_close(call(optimize(model), x, None), call(model, x, None), atol=2e-3, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_banded_tail_equals_one_band(scale, make_image):
    model = create(f"edsr-baseline-x{scale}").eval()
    engine = optimize(model)
    runner = engine.runners[scale]
    x = make_image(2, 37, 10)
    whole = call(engine, x, None)
    runner.band_budget_bytes = 1  # the minimum band: 16 rows, so 3 bands with halos
    assert runner.band_rows(37, 10) == 16
    torch.testing.assert_close(call(engine, x, None), whole, atol=1e-4, rtol=0)
    assert tail_receptive_field(scale) <= TAIL_HALO


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
    engine = optimize(model)
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
    torch.testing.assert_close(call(optimize(model), x.contiguous(), None), call(model, x, None), atol=1e-4, rtol=0)


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
    engine = optimize(theirs)
    assert engine.config.res_scale == 0.1
    x = make_image(2, 9, 12)
    torch.testing.assert_close(call(engine, x, None), call(theirs, x, None), atol=1e-3, rtol=0)


def test_drop_in_edsr_pytorch_mdsr_keeps_set_scale(make_image):
    torch.manual_seed(0)
    theirs = OfficialMDSR().eval()
    theirs.set_scale(2)
    engine = optimize(theirs)
    assert engine.scale_idx == 2  # the branch the module had selected
    x = make_image(1, 8, 9)
    for idx in (0, 1, 2):
        theirs.set_scale(idx)
        engine.set_scale(idx)
        torch.testing.assert_close(call(engine, x, None), call(theirs, x, None), atol=1e-3, rtol=0)


def test_drop_in_basicsr_keeps_unit_range(make_image):
    torch.manual_seed(0)
    theirs = BasicSREDSR(upscale=4, res_scale=0.5).eval()
    engine = optimize(theirs)
    x = make_image(2, 7, 10, rgb_range=1.0)
    # (fp32, atol 1e-5 on [0, 1]): 1e-3 on the 0-255 scale, as above, divided by 255.
    torch.testing.assert_close(call(engine, x, None), call(theirs, x, None), atol=1e-5, rtol=0)


def test_optimize_loaded_checkpoint(tmp_path, make_image):
    model = create("edsr-baseline-x2").eval()
    loaded = fastsr.load(fastsr.save(model, tmp_path / "m.safetensors"))
    x = make_image(1, 5, 5)
    torch.testing.assert_close(call(fastsr.optimize(loaded), x, None), call(model, x, None), atol=2e-3, rtol=0)


# ------------------------------------------------------------------------------------------- errors


def test_unsupported_combinations_raise():
    model = build(EDSRConfig(n_resblocks=1, n_feats=8)).eval()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="the triton backend needs the model on a CUDA device"):
            optimize(model, backend="triton")
        with pytest.raises(ValueError, match="the torch backend runs fp32 on CPU"):
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
def test_interpret_banded_tail(make_image):
    model = build(EDSRConfig(n_resblocks=1, n_feats=16, scale=4)).eval()
    engine = optimize(model, backend="interpret")
    engine.runners[4].band_budget_bytes = 1  # 16-row bands
    x = make_image(1, 20, 3)
    torch.testing.assert_close(call(engine, x, None), call(model, x, None), atol=1e-3, rtol=0)
