"""Reference networks: official parameter counts and key layout, and forward semantics checked against an
independent functional re-statement of EDSR-PyTorch's forward (written from the paper / official code's
description, with F.conv2d on the raw state dict)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fastsr.models import EDSR, MDSR, EDSRConfig, MDSRConfig, build, config_from_dict, create, preset_names

# Official counts (EDSR-PyTorch, MeanShift convs included). The BN baseline adds 2 BN layers x (weight,
# bias) x 64 channels x 16 blocks = 4096 parameters to EDSR-baseline.
PARAM_COUNTS = {
    "edsr-baseline-x2": 1_369_883,
    "edsr-baseline-x3": 1_554_523,
    "edsr-baseline-x4": 1_517_595,
    "edsr-x4": 43_089_947,
    "mdsr-baseline": 3_227_227,
    "edsr-bn-baseline-x2": 1_369_883 + 4096,
    "edsr-bn-baseline-x3": 1_554_523 + 4096,
    "edsr-bn-baseline-x4": 1_517_595 + 4096,
}


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name):
    model = create(name)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


def official_keys(config: EDSRConfig | MDSRConfig) -> set[str]:
    """The official EDSR-PyTorch state-dict keys, spelled out from the layout description."""
    def conv(prefix):
        return {f"{prefix}.weight", f"{prefix}.bias"}

    def bn(prefix):
        return conv(prefix) | {f"{prefix}.running_mean", f"{prefix}.running_var", f"{prefix}.num_batches_tracked"}

    def upsampler(prefix, scale):
        n = 1 if scale == 3 else scale.bit_length() - 1
        return set().union(*(conv(f"{prefix}.{2 * j}") for j in range(n)))

    keys = conv("sub_mean") | conv("add_mean") | conv("head.0") | conv(f"body.{config.n_resblocks}")
    for i in range(config.n_resblocks):
        if getattr(config, "batch_norm", False):
            keys |= conv(f"body.{i}.body.0") | bn(f"body.{i}.body.1") | conv(f"body.{i}.body.3") | bn(f"body.{i}.body.4")
        else:
            keys |= conv(f"body.{i}.body.0") | conv(f"body.{i}.body.2")
    if isinstance(config, MDSRConfig):
        for k, s in enumerate(config.scales):
            for j in (0, 1):
                keys |= conv(f"pre_process.{k}.{j}.body.0") | conv(f"pre_process.{k}.{j}.body.2")
            keys |= upsampler(f"upsample.{k}", s)
        keys |= conv("tail.0")
    else:
        keys |= upsampler("tail.0", config.scale) | conv("tail.1")
    return keys


@pytest.mark.parametrize("name", preset_names())
def test_state_dict_keys_are_official(name):
    model = create(name)
    assert set(model.state_dict()) == official_keys(model.config)


def test_mdsr_pre_process_is_5x5_and_meanshift_is_div2k():
    model = create("mdsr-baseline")
    assert model.pre_process[1][0].body[0].weight.shape == (64, 64, 5, 5)
    sd = model.state_dict()
    mean = torch.tensor([0.4488, 0.4371, 0.4040])
    torch.testing.assert_close(sd["sub_mean.weight"], torch.eye(3).view(3, 3, 1, 1))
    torch.testing.assert_close(sd["sub_mean.bias"], -255 * mean)
    torch.testing.assert_close(sd["add_mean.bias"], 255 * mean)
    assert not model.sub_mean.weight.requires_grad and not model.add_mean.bias.requires_grad


# --------------------------------------------------------------------------- functional re-statement


def functional_forward(sd, config, x, scale):
    """EDSR-PyTorch's forward from the raw state dict: sub_mean, head, [pre_process], body + global skip,
    upsampler (conv + pixel shuffle per factor), final conv, add_mean. Eval-mode batch norm."""
    def conv(t, k):
        w = sd[f"{k}.weight"]
        return F.conv2d(t, w, sd[f"{k}.bias"], padding=w.shape[-1] // 2)

    def bnorm(t, k):
        return F.batch_norm(t, sd[f"{k}.running_mean"], sd[f"{k}.running_var"], sd[f"{k}.weight"], sd[f"{k}.bias"],
                            training=False, eps=1e-5)

    def block(t, k, res_scale):
        if getattr(config, "batch_norm", False):
            r = bnorm(conv(F.relu(bnorm(conv(t, f"{k}.body.0"), f"{k}.body.1")), f"{k}.body.3"), f"{k}.body.4")
        else:
            r = conv(F.relu(conv(t, f"{k}.body.0")), f"{k}.body.2")
        return r * res_scale + t

    x = conv(conv(x, "sub_mean"), "head.0")
    mdsr = isinstance(config, MDSRConfig)
    if mdsr:
        k = config.scales.index(scale)
        x = block(block(x, f"pre_process.{k}.0", 1.0), f"pre_process.{k}.1", 1.0)
    h = x
    for i in range(config.n_resblocks):
        h = block(h, f"body.{i}", config.res_scale)
    h = conv(h, f"body.{config.n_resblocks}") + x
    prefix = f"upsample.{k}" if mdsr else "tail.0"
    j = 0
    while f"{prefix}.{j}.weight" in sd:
        h = conv(h, f"{prefix}.{j}")
        h = F.pixel_shuffle(h, 3 if h.shape[1] == 9 * config.n_feats else 2)
        j += 2
    h = conv(h, "tail.0" if mdsr else "tail.1")
    return conv(h, "add_mean")


CASES = [(n, s) for n in preset_names() if not n.startswith("mdsr") for s in [None]] + [
    (n, s) for n in ("mdsr-baseline", "mdsr") for s in (2, 3, 4)
]


# (dtype, atol, rtol): fp32 throughout; both paths run the same conv kernels in the same order, so the only
# difference allowed is reassociation inside oneDNN (the 80-block MDSR accumulates the most).
@pytest.mark.parametrize("name,scale", CASES)
def test_forward_matches_functional_reference(name, scale, make_image, randomize_bn):
    torch.manual_seed(0)
    model = randomize_bn(create(name)).eval()
    x = make_image(2, 7, 9)  # odd sizes, batch 2
    with torch.no_grad():
        y = model(x, scale) if scale else model(x)
        ref = functional_forward(model.state_dict(), model.config, x, scale or model.config.scale)
    s = scale or model.config.scale
    assert y.shape == (2, 3, 7 * s, 9 * s)
    torch.testing.assert_close(y, ref, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("res_scale", [0.1, 0.5])
def test_res_scale_is_applied(res_scale, make_image):
    config = EDSRConfig(n_resblocks=2, n_feats=16, res_scale=res_scale, scale=2)
    model = build(config).eval()
    x = make_image(1, 5, 6)
    with torch.no_grad():
        y = model(x)
        ref = functional_forward(model.state_dict(), config, x, 2)
        unscaled = functional_forward(model.state_dict(), dataclasses.replace(config, res_scale=1.0), x, 2)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5)
    assert (y - unscaled).abs().max() > 1e-2  # the scaling changes the output: the test can fail


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_output_size_every_scale(scale, make_image):
    model = build(EDSRConfig(n_resblocks=1, n_feats=8, scale=scale)).eval()
    with torch.no_grad():
        assert model(make_image(3, 5, 4)).shape == (3, 3, 5 * scale, 4 * scale)


def test_mdsr_scale_is_an_argument_not_state(make_image):
    model = create("mdsr-baseline").eval()
    x = make_image(1, 6, 5)
    with torch.no_grad():
        fresh = model(x, 2)
        model(x, 4)
        model(x, 3)
        again = model(x, 2)
    assert torch.equal(fresh, again)
    assert not any("scale_idx" in k for k in vars(model))


def test_forward_mutates_nothing(make_image):
    model = create("edsr-baseline-x2").eval()
    x = make_image(1, 6, 7)
    x0 = x.clone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(x)
    assert torch.equal(x, x0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mdsr_rejects_missing_scale(make_image):
    model = create("mdsr-baseline")
    x = make_image(1, 4, 4)
    with pytest.raises(ValueError, match="the model has no x8; it upscales by x2, x3, x4"):
        model(x, 8)
    with pytest.raises(TypeError, match="scale must be an int"):
        model(x, 2.0)
    with pytest.raises(TypeError, match="scale must be an int"):
        model(x, True)


@pytest.mark.parametrize(
    "bad,error,match",
    [
        (torch.zeros(3, 4, 4), ValueError, r"NCHW tensor with 3 channels, got shape \(3, 4, 4\)"),
        (torch.zeros(1, 4, 4, 4), ValueError, r"3 channels, got shape \(1, 4, 4, 4\)"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), TypeError, "floating-point tensor"),
        ([[1.0]], TypeError, "expected a torch.Tensor, got list"),
    ],
)
def test_forward_rejects_bad_input(bad, error, match):
    model = build(EDSRConfig(n_resblocks=1, n_feats=8))
    with pytest.raises(error, match=match):
        model(bad)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(scale=5), ValueError, "scale must be 3 or a power of two"),
        (dict(scale=1), ValueError, "scale must be 3 or a power of two"),
        (dict(scale=2.0), TypeError, "scale must be an int"),
        (dict(n_feats=0), ValueError, "n_feats must be >= 1"),
        (dict(n_resblocks="16"), TypeError, "n_resblocks must be an int"),
        (dict(res_scale=0), ValueError, "res_scale must be a finite number > 0"),
        (dict(res_scale=float("nan")), ValueError, "res_scale must be a finite number > 0"),
        (dict(rgb_range=-1), ValueError, "rgb_range must be a finite number > 0"),
        (dict(rgb_mean=(0.5, 0.5)), ValueError, "rgb_mean must have n_colors=3 entries"),
        (dict(rgb_std=(1.0, 0.0, 1.0)), ValueError, "rgb_std entries must be finite and > 0"),
        (dict(batch_norm="yes"), TypeError, "batch_norm must be a bool"),
        (dict(tail="pixelshuffle"), ValueError, r"tail must be one of \('upsampler', 'conv-shuffle'\)"),
        (dict(tail=None), TypeError, "tail must be a str"),
    ],
)
def test_edsr_config_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        EDSRConfig(**kwargs)


def test_mdsr_config_validation():
    with pytest.raises(ValueError, match="scales must be distinct"):
        MDSRConfig(scales=(2, 2))
    with pytest.raises(ValueError, match="scales must not be empty"):
        MDSRConfig(scales=())
    with pytest.raises(TypeError, match="scales must be a sequence"):
        MDSRConfig(scales=4)
    with pytest.raises(TypeError):
        EDSRConfig(16)  # keyword-only


def test_presets_and_dict_round_trip():
    for name in preset_names():
        config = create(name).config
        assert config_from_dict(config.to_dict()) == config
    assert EDSRConfig.from_name("edsr-x3") == EDSRConfig(n_resblocks=32, n_feats=256, res_scale=0.1, scale=3)
    assert MDSRConfig.from_name("mdsr").n_resblocks == 80
    assert create("edsr-bn-baseline-x2").config.arch == "edsr-bn"
    with pytest.raises(ValueError, match="unknown preset 'edsr-x5'"):
        create("edsr-x5")
    with pytest.raises(ValueError, match="unknown arch 'srcnn'"):
        config_from_dict({"arch": "srcnn"})
    with pytest.raises(ValueError, match=r"unknown EDSRConfig field\(s\) \['depth'\]"):
        config_from_dict({"arch": "edsr", "depth": 3})


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_conv_shuffle_tail(scale, make_image):
    """The tail of OpenCV's EDSR files: conv F -> 3 s^2 at input resolution, one PixelShuffle(s), nothing after."""
    config = EDSRConfig(n_resblocks=1, n_feats=8, scale=scale, tail="conv-shuffle")
    model = build(config).eval()
    assert [k for k in model.state_dict() if k.startswith("tail.")] == ["tail.0.weight", "tail.0.bias"]
    assert tuple(model.tail[0].weight.shape) == (3 * scale * scale, 8, 3, 3)
    x = make_image(2, 5, 7)
    with torch.no_grad():
        res = model.body(model.head(model.sub_mean(x))) + model.head(model.sub_mean(x))
        expected = model.add_mean(torch.nn.functional.pixel_shuffle(model.tail[0](res), scale))
        assert torch.equal(model(x), expected)
    assert config_from_dict(config.to_dict()) == config and config.to_dict()["tail"] == "conv-shuffle"
    # The default tail is left out of the dict: files of the paper's networks stay as they were.
    assert "tail" not in EDSRConfig().to_dict() and config_from_dict(EDSRConfig().to_dict()).tail == "upsampler"


def test_build_dispatch():
    assert isinstance(build(EDSRConfig()), EDSR)
    assert isinstance(build(MDSRConfig()), MDSR)
    with pytest.raises(TypeError, match="expected an EDSRConfig or MDSRConfig"):
        build({"arch": "edsr"})
    with pytest.raises(TypeError, match="EDSR needs an EDSRConfig"):
        EDSR(MDSRConfig())
