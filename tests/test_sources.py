"""fastsr.sources: the format registry and the one resolver every entry point uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from foreign import BasicSREDSR, OfficialEDSR

import fastsr
from fastsr import sources
from fastsr.checkpoint import CheckpointError
from fastsr.models import EDSRConfig, MDSRConfig, build
from fastsr.sources import basicsr, edsr_pytorch, fastsr_file, fastsr_train, opencv_pb
from fastsr.sources.raw import read
from fastsr.weights import DefaultWeightsMissing, default_weights_path


def tiny(scale: int = 2):
    torch.manual_seed(0)
    return build(EDSRConfig(n_resblocks=1, n_feats=8, scale=scale))


def bundled_or_skip():
    try:
        return default_weights_path()
    except DefaultWeightsMissing:
        pytest.skip("no bundled weights in this install")


def test_each_format_is_detected_by_its_module(tmp_path):
    model = tiny()
    sd = model.state_dict()
    basic = {"params_ema": basicsr_layout(sd)}
    files = {
        fastsr_file: fastsr.save(model, tmp_path / "a.safetensors"),
        fastsr_train: tmp_path / "c.pt",
        edsr_pytorch: tmp_path / "o.pt",
        basicsr: tmp_path / "b.pth",
    }
    torch.save({"format": fastsr_train.FORMAT_TAG, "config": model.config.to_dict(), "model": sd}, files[fastsr_train])
    torch.save(sd, files[edsr_pytorch])
    torch.save(basic, files[basicsr])
    for fmt, path in files.items():
        raw = read(path)
        assert sources.detect_format(raw) is fmt, path
        loaded = fastsr.load(path)
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (fmt.NAME, k)
    pb = tmp_path / "x.pb"
    pb.write_bytes(b"")
    assert sources.detect_format(read(pb)) is opencv_pb
    with pytest.raises(CheckpointError, match="matches no known layout"):
        sources.detect_format(read({"weight": torch.zeros(1)}))


def basicsr_layout(sd):
    out = {}
    for k, v in sd.items():
        k = (k.replace("head.0.", "conv_first.").replace("body.0.body.0.", "body.0.conv1.")
             .replace("body.0.body.2.", "body.0.conv2.").replace("body.1.", "conv_after_body.")
             .replace("tail.0.", "upsample.").replace("tail.1.", "conv_last."))
        if not k.startswith(("sub_mean", "add_mean")):
            out[k] = v
    return out


def test_module_instances_resolve_alike_everywhere():
    # An EDSR-PyTorch or BasicSR instance is accepted by Upscaler too (it was refused before the resolver).
    official = OfficialEDSR(n_resblocks=1, n_feats=8, scale=2).eval()
    basic = BasicSREDSR(num_feat=8, num_block=1, upscale=2).eval()
    for module, name in ((official, "edsr-pytorch"), (basic, "basicsr")):
        net, fmt = sources.from_module(module)
        assert fmt == name and isinstance(net, fastsr.models.EDSR)
        assert fastsr.Upscaler(module, device="cpu", precision="fp32").model.config == net.config
    net = tiny()
    engine = fastsr.optimize(net, backend="torch", precision="fp32")
    assert sources.resolve_model(engine) is net  # an optimized module gives its reference
    with pytest.raises(TypeError, match="got Conv2d"):
        sources.resolve_model(torch.nn.Conv2d(3, 3, 3))
    with pytest.raises(TypeError, match=r"export_onnx\(\) takes a checkpoint path"):
        sources.resolve_model(42, caller="export_onnx()")


def test_preset_names_follow_one_rule(tmp_path):
    path = bundled_or_skip()
    bundled = fastsr.load(path)
    # The preset the bundled weights are resolves to them, wherever a model is taken.
    assert sources.resolve_model("mdsr-baseline").config == bundled.config
    up = fastsr.Upscaler("mdsr-baseline", device="cpu", precision="fp32")
    img = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    assert np.array_equal(up(img, 2), fastsr.Upscaler(None, device="cpu", precision="fp32")(img, 2))
    # Any other preset has no weights: the same error from every entry point.
    for call in (lambda: sources.resolve_model("edsr-baseline-x2"),
                 lambda: fastsr.Upscaler("edsr-baseline-x2"),
                 lambda: fastsr.export_onnx("edsr-baseline-x2", tmp_path / "e.onnx")):
        with pytest.raises(ValueError, match="'edsr-baseline-x2' is a preset without bundled weights"):
            call()
    assert not (tmp_path / "e.onnx").exists()


def test_read_state_dict_and_info_keep_their_contract(tmp_path):
    model = build(MDSRConfig(n_resblocks=1, n_feats=8))
    path = fastsr.save(model, tmp_path / "m.pt", info={"steps": 3})
    state, config = fastsr.checkpoint.read_state_dict(path)
    assert config == model.config.to_dict() and set(state) == set(model.state_dict())
    assert fastsr.checkpoint.read_info(path) == {"steps": 3}
    (tmp_path / "x.pb").write_bytes(b"")
    assert fastsr.checkpoint.read_info(tmp_path / "x.pb") == {}  # not a fastsr file: no info
