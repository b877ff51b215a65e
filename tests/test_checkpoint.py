"""fastsr.load / fastsr.save: round trips for every preset and format, BasicSR checkpoints, and bad files."""

from __future__ import annotations

import os
import pickle
import re
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import fastsr
from fastsr import CheckpointError
from fastsr.models import EDSR, MDSR, EDSRConfig, MDSRConfig, build, create, preset_names

FORMATS = ["state_dict", "pt", "pth", "safetensors", "fastsr.pt", "fastsr.safetensors", "legacy.pt"]


@lru_cache(maxsize=None)
def reference(name: str):
    torch.manual_seed(sum(map(ord, name)))
    model = create(name).eval()
    # Non-trivial BN statistics so that a lost running_mean / running_var would change the output.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(123)
    return model


def run(model, x):
    with torch.no_grad():
        return model(x, model.config.scales[-1]) if isinstance(model, MDSR) else model(x)


def write(model, fmt: str, tmp_path):
    """``model`` in format ``fmt``: a state dict object or the path of a file."""
    sd = model.state_dict()
    if fmt == "state_dict":
        return sd
    path = tmp_path / f"model.{fmt.split('.')[-1]}"
    if fmt in ("pt", "pth"):
        torch.save(sd, path)
    elif fmt == "legacy.pt":  # the pre-1.6 serialization the official EDSR-PyTorch files were published in
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        fastsr.save(model, path)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", preset_names())
def test_round_trip_every_preset(name, fmt, tmp_path, make_image):
    model = reference(name)
    loaded = fastsr.load(write(model, fmt, tmp_path))
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert not loaded.training
    x = make_image(1, 6, 5)
    assert torch.equal(run(loaded, x), run(model, x))  # bit-identical


def test_round_trip_custom_configs(tmp_path, make_image):
    configs = [
        EDSRConfig(n_resblocks=3, n_feats=16, scale=8),
        EDSRConfig(n_resblocks=2, n_feats=8, scale=3, batch_norm=True),
        MDSRConfig(n_resblocks=2, n_feats=8, scales=(4, 2)),
        EDSRConfig(n_resblocks=1, n_feats=8, n_colors=1, rgb_mean=(0.5,), rgb_std=(1.0,)),
    ]
    for config in configs:
        model = build(config).eval()
        for fmt in ("state_dict", "safetensors", "fastsr.pt"):
            loaded = fastsr.load(write(model, fmt, tmp_path))
            assert loaded.config == config, fmt
            x = make_image(2, 5, 7, channels=config.n_colors)
            assert torch.equal(run(loaded, x), run(model, x))


def test_inferred_res_scale_and_overrides():
    wide = build(EDSRConfig(n_resblocks=1, n_feats=256, res_scale=0.1)).state_dict()
    assert fastsr.load(wide).config.res_scale == 0.1  # the official EDSR's 256 features imply 0.1
    assert fastsr.load(wide, res_scale=0.2).config.res_scale == 0.2
    narrow = reference("edsr-baseline-x2").state_dict()
    assert fastsr.load(narrow).config.res_scale == 1.0
    assert fastsr.load(narrow, rgb_range=1.0).config.rgb_range == 1.0
    assert fastsr.load(narrow, arch="edsr-baseline-x2").config == reference("edsr-baseline-x2").config
    assert isinstance(fastsr.load(narrow, arch="edsr"), EDSR)


def test_data_parallel_prefix_and_nesting(make_image):
    model = reference("edsr-baseline-x3")
    prefixed = {"module." + k: v for k, v in model.state_dict().items()}
    for wrapped in (prefixed, {"state_dict": prefixed}, {"model": model.state_dict()}):
        x = make_image(1, 4, 4)
        assert torch.equal(run(fastsr.load(wrapped), x), run(model, x))


def test_fp16_checkpoint_loads_into_fp32(tmp_path, make_image):
    model = reference("mdsr-baseline")
    path = fastsr.save(model, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = fastsr.load(path)
    assert loaded.config == model.config
    assert loaded.head[0].weight.dtype == torch.float32
    half = model.state_dict()["head.0.weight"].half().float()
    assert torch.equal(loaded.state_dict()["head.0.weight"], half)
    x = make_image(1, 8, 8)
    # fp16 weights (11-bit mantissa, relative error 2^-11 per weight) through 37 convs: within ~1 level.
    torch.testing.assert_close(run(loaded, x), run(model, x), atol=2.0, rtol=0)


def test_save_is_atomic_and_checks_input(tmp_path):
    path = tmp_path / "m.pt"
    fastsr.save(reference("edsr-baseline-x2"), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    for name in ("m.pt", "m.safetensors"):  # a new file's usual permissions, not a temp file's 0600
        assert (fastsr.save(reference("edsr-baseline-x2"), tmp_path / name).stat().st_mode & 0o777) == 0o666 & ~umask
    with pytest.raises(TypeError, match="fastsr EDSR or MDSR module"):
        fastsr.save(torch.nn.Conv2d(3, 3, 3), path)
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        fastsr.save(reference("edsr-baseline-x2"), path, dtype=torch.int8)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_info_round_trip(suffix, tmp_path, make_image):
    from fastsr.checkpoint import read_info

    model = build(MDSRConfig(n_resblocks=1, n_feats=8)).eval()
    info = {"trained_steps": 1200, "train_data": ["T91", "BSD200"], "notes": "ünïcode ok"}
    path = fastsr.save(model, tmp_path / f"m{suffix}", info=info)
    assert read_info(path) == info
    x = make_image(1, 5, 6)
    assert torch.equal(fastsr.load(path)(x, 3), model(x, 3))  # info does not disturb loading
    assert read_info(fastsr.save(model, tmp_path / f"plain{suffix}")) == {}
    with pytest.raises(TypeError, match="info must be JSON-serialisable"):
        fastsr.save(model, tmp_path / f"bad{suffix}", info={"steps": float("nan")})
    with pytest.raises(TypeError, match="info must be a dict"):
        fastsr.save(model, tmp_path / f"bad{suffix}", info=["steps"])
    assert not (tmp_path / f"bad{suffix}").exists()


def test_read_info_ignores_other_frameworks_info(tmp_path):
    from fastsr.checkpoint import read_info

    sd = reference("edsr-baseline-x2").state_dict()
    torch.save({"params": sd, "info": {"epoch": 3}}, tmp_path / "other.pt")  # someone else's "info"
    assert read_info(tmp_path / "other.pt") == {}
    fastsr.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        read_info(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_info(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------------------------ BasicSR


def to_basicsr(sd: dict, n_blocks: int) -> dict:
    """Rename an official EDSR state dict to BasicSR's EDSR keys (BasicSR has no MeanShift convs)."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("sub_mean", "add_mean")):
            continue
        k = re.sub(r"^head\.0\.", "conv_first.", k)
        k = re.sub(r"^body\.(\d+)\.body\.0\.", r"body.\1.conv1.", k)
        k = re.sub(r"^body\.(\d+)\.body\.2\.", r"body.\1.conv2.", k)
        k = k.replace(f"body.{n_blocks}.", "conv_after_body.")
        k = re.sub(r"^tail\.0\.", "upsample.", k)
        k = re.sub(r"^tail\.1\.", "conv_last.", k)
        out[k] = v
    return out


def basicsr_forward(sd: dict, x: torch.Tensor, n_blocks: int, res_scale: float = 1.0) -> torch.Tensor:
    """BasicSR's EDSR.forward re-stated on its own keys: [0, 1] in, (x - mean) * 255 inside, [0, 1] out."""
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)

    def conv(t, k):
        return F.conv2d(t, sd[f"{k}.weight"], sd[f"{k}.bias"], padding=1)

    x = conv((x - mean) * 255.0, "conv_first")
    h = x
    for i in range(n_blocks):
        h = h + conv(F.relu(conv(h, f"body.{i}.conv1")), f"body.{i}.conv2") * res_scale
    h = conv(h, "conv_after_body") + x
    j = 0
    while f"upsample.{j}.weight" in sd:
        h = conv(h, f"upsample.{j}")
        h = F.pixel_shuffle(h, 3 if h.shape[1] == 9 * sd["conv_first.weight"].shape[0] else 2)
        j += 2
    return conv(h, "conv_last") / 255.0 + mean


@pytest.mark.parametrize("name", ["edsr-baseline-x2", "edsr-baseline-x3", "edsr-baseline-x4"])
def test_basicsr_params_ema_loads_and_matches(name, tmp_path, make_image):
    model = reference(name)
    ema = to_basicsr(model.state_dict(), 16)
    other = {k: v + 0.01 for k, v in ema.items()}  # `params` must lose to `params_ema`
    path = tmp_path / "basicsr.pth"
    torch.save({"params": other, "params_ema": ema}, path)
    loaded = fastsr.load(path)
    assert loaded.config == model.config
    x = make_image(2, 7, 6, rgb_range=1.0)
    with torch.no_grad():
        ours = loaded(255 * x) / 255
        theirs = basicsr_forward(ema, x, 16)
    # (dtype fp32, atol 2e-6 on [0, 1]): BasicSR subtracts the mean before scaling, fastsr's MeanShift after;
    # the two orders differ by fp32 rounding of ~255 * eps, i.e. ~1e-5 on the 0-255 scale.
    torch.testing.assert_close(ours, theirs, atol=2e-6, rtol=0)
    assert torch.equal(fastsr.load({"params": other}).head[0].weight, other["conv_first.weight"])


def test_basicsr_bare_and_res_scale(make_image):
    model = build(EDSRConfig(n_resblocks=2, n_feats=16, res_scale=0.1, scale=2)).eval()
    sd = to_basicsr(model.state_dict(), 2)
    loaded = fastsr.load(sd, res_scale=0.1)
    x = make_image(1, 5, 5, rgb_range=1.0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(255 * x) / 255, basicsr_forward(sd, x, 2, 0.1), atol=2e-6, rtol=0)


# -------------------------------------------------------------------------------------------- bad files


def small_state() -> dict:
    torch.manual_seed(0)
    return build(EDSRConfig(n_resblocks=2, n_feats=8, scale=2)).state_dict()


class Payload:
    """A pickle that would create a file when unpickled by an unsafe loader."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    for i, obj in enumerate([Payload(str(marker)), {"head.0.weight": Payload(str(marker))}]):
        path = tmp_path / f"evil{i}.pt"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match="never runs code stored in a pickle"):
            fastsr.load(path)
    # A plain (non-torch) pickle of a custom class instance.
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(CheckpointError):
        fastsr.load(path)
    assert not marker.exists()


def test_truncated_random_and_empty_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(small_state(), good)
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "random.pt": os.urandom(4096),
        "empty.pth": b"",
        "text.pt": b"not a checkpoint\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="cannot read .* as a PyTorch checkpoint"):
            fastsr.load(tmp_path / name)
    st_path = tmp_path / "good.safetensors"
    save_file(small_state(), str(st_path))
    (tmp_path / "cut.safetensors").write_bytes(st_path.read_bytes()[:-100])
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(64))
    for name in ("cut.safetensors", "junk.safetensors"):
        with pytest.raises(CheckpointError, match="cannot read .* as safetensors"):
            fastsr.load(tmp_path / name)


def test_paths_and_types(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        fastsr.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        fastsr.load(tmp_path)
    with pytest.raises(TypeError, match="expected a path or a state dict, got int"):
        fastsr.load(42)


def test_wrong_shape_names_key_and_shapes():
    sd = small_state()
    sd["body.1.body.0.weight"] = torch.zeros(8, 8, 5, 5)
    with pytest.raises(CheckpointError, match=r"shape mismatches .*body\.1\.body\.0\.weight \(8, 8, 5, 5\) vs \(8, 8, 3, 3\)"):
        fastsr.load(sd)


def test_missing_and_unexpected_keys_are_named():
    sd = small_state()
    del sd["body.1.body.2.bias"]
    sd["body.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        fastsr.load(sd)
    message = str(info.value)
    assert "missing keys: body.1.body.2.bias" in message
    assert "unexpected keys: body.0.extra.weight" in message
    assert "edsr (2 blocks, 8 features, x2)" in message


def test_mismatched_tail_is_an_error_not_skipped():
    # The official loader silently skips tail weights of the wrong scale; we refuse.
    x2 = reference("edsr-baseline-x2").state_dict()
    # The requested scale is compared with the upsampler's tensors before any network is built.
    with pytest.raises(CheckpointError, match=r"requested network .* scales=\(4,\) \(the tensors have \(2,\)\)"):
        fastsr.load(x2, scale=4)
    with pytest.raises(CheckpointError, match=r"scales=\(3,\) \(the tensors have \(2,\)\)"):
        fastsr.load(x2, arch="edsr-baseline-x3")
    # A tail conv of the right scale but the wrong shape is still named key by key.
    bad = dict(x2, **{"tail.1.weight": torch.zeros(3, 64, 5, 5)})
    with pytest.raises(CheckpointError, match=r"tail\.1\.weight \(3, 64, 5, 5\) vs \(3, 64, 3, 3\)"):
        fastsr.load(bad)


def test_unrelated_network_is_rejected():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    with pytest.raises(CheckpointError, match=r"matches no known layout .* 4 keys: '0.weight', '0.bias', '3.weight'"):
        fastsr.load(net.state_dict())
    srresnet_like = {"conv_first.weight": torch.zeros(64, 3, 9, 9), "conv_first.bias": torch.zeros(64)}
    with pytest.raises(CheckpointError):
        fastsr.load(srresnet_like)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda sd: {}, "empty state dict"),
        (lambda sd: {**sd, "head.0.weight": "w"}, "'head.0.weight' is a str, not a tensor"),
        (lambda sd: {**sd, 3: torch.zeros(1)}, "keys must be strings"),
        (lambda sd: {**sd, "head.0.bias": torch.full((8,), float("nan"))}, "'head.0.bias' contains NaN"),
        (lambda sd: {**sd, "head.0.bias": torch.zeros(8, dtype=torch.int32)}, "dtype torch.int32"),
        (lambda sd: {**sd, "head.0.weight": torch.zeros(8)}, r"4-D conv weight, got shape \(8,\)"),
        (lambda sd: {k: v for k, v in sd.items() if not k.startswith("tail.0.")}, "has no upsampler"),
        (lambda sd: {**sd, "tail.0.0.weight": torch.zeros(40, 8, 3, 3)}, "40 output channels"),
    ],
)
def test_malformed_state_dicts(mutate, match):
    with pytest.raises(CheckpointError, match=match):
        fastsr.load(mutate(small_state()))


def test_arch_argument_is_checked():
    sd = small_state()
    with pytest.raises(CheckpointError, match="arch='mdsr' was requested but the checkpoint's keys are those of a edsr"):
        fastsr.load(sd, arch="mdsr")
    with pytest.raises(CheckpointError, match="is a mdsr preset but the checkpoint is a edsr"):
        fastsr.load(sd, arch="mdsr-baseline")
    with pytest.raises(ValueError, match="arch must be one of"):
        fastsr.load(sd, arch="vdsr")


def test_invalid_override_is_a_clear_error():
    with pytest.raises(CheckpointError, match="scale must be 3 or a power of two"):
        fastsr.load(small_state(), scale=5)
    with pytest.raises(CheckpointError, match=r"has no field\(s\) \['depth'\]"):
        fastsr.load(small_state(), depth=3)


# ------------------------------------------------------------------------------------------------- fuzz

KEYS = sorted(small_state())


@st.composite
def mutated_states(draw):
    sd = dict(small_state())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "reshape", "add", "rename", "dtype"]))
        key = draw(st.sampled_from(KEYS))
        if op == "drop":
            sd.pop(key, None)
        elif op == "reshape" and key in sd:
            shape = draw(st.lists(st.integers(1, 9), min_size=1, max_size=4))
            sd[key] = torch.zeros(shape)
        elif op == "add":
            sd[draw(st.sampled_from(["extra", "body.9.body.0.weight", "tail.0.2.weight", "pre_process.0.0.body.0.weight"]))] = torch.zeros(8, 8, 3, 3)
        elif op == "rename" and key in sd:
            sd[key + "_"] = sd.pop(key)
        elif op == "dtype" and key in sd:
            sd[key] = sd[key].to(draw(st.sampled_from([torch.float16, torch.float64, torch.int64])))
    return sd


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_states())
def test_fuzz_load_either_succeeds_or_raises_checkpoint_error(sd):
    try:
        model = fastsr.load(sd)
    except CheckpointError:
        return
    # Anything that loads must be a working network whose weights are the checkpoint's.
    for k, v in model.state_dict().items():
        if k in sd and v.is_floating_point():
            assert torch.equal(v, sd[k].to(v.dtype))
    run(model, torch.zeros(1, 3, 4, 4))
