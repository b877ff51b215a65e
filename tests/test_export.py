"""ONNX export of the folded plan: the file runs in ONNX Runtime and OpenVINO and gives fastsr's output, for
EDSR, the BN baseline and MDSR (one scale per file), with dynamic batch, height and width; bad arguments
get clear errors and never leave a file behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsr
from fastsr.cli import main as cli
from fastsr.export import export_onnx
from fastsr.models import EDSRConfig, MDSRConfig, build

onnx = pytest.importorskip("onnx", reason='ONNX export needs onnx (pip install "fastsr[export]")')

# Small networks of each kind: every op kind of the plan (head shift, blocks, body-end skip, x2/x3/x4
# upsamplers, MDSR's 5x5 pre-process blocks, folded BN) at a size the tests run fast.
NETS = {
    "edsr": lambda: build(EDSRConfig(n_resblocks=2, n_feats=16, scale=2)),
    "edsr-x3": lambda: build(EDSRConfig(n_resblocks=2, n_feats=16, scale=3)),
    "edsr-x4-res0.1": lambda: build(EDSRConfig(n_resblocks=2, n_feats=16, scale=4, res_scale=0.1)),
    "bn-baseline": lambda: build(EDSRConfig(n_resblocks=2, n_feats=16, scale=2, batch_norm=True)),
    "mdsr": lambda: build(MDSRConfig(n_resblocks=2, n_feats=16)),
    # OpenCV's EDSR layout: one LR conv to 3 x 16 channels and a single DepthToSpace(4) (CRD) as the output
    "conv-shuffle-x4": lambda: build(EDSRConfig(n_resblocks=2, n_feats=16, scale=4, tail="conv-shuffle")),
    "conv-shuffle-x3": lambda: build(EDSRConfig(n_resblocks=2, n_feats=16, scale=3, tail="conv-shuffle")),
}


def runtimes() -> list[str]:
    import importlib.util

    return [name for name, mod in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"))
            if importlib.util.find_spec(mod) is not None]


def run_onnx(runtime: str, path: Path, x: np.ndarray) -> np.ndarray:
    if runtime == "onnxruntime":
        import onnxruntime as ort

        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    import openvino as ov

    # f32 explicitly: OpenVINO's CPU plugin would otherwise pick bf16 on CPUs that have it.
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled.create_infer_request().infer({0: x})[compiled.output(0)]


def network(kind: str, randomize_bn) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(NETS[kind]())


# (fp32, atol 2e-3 on a 0-255 output, rtol 0): the same folded fp32 weights, summed in another order by
# each runtime (the engine's own tolerance against the reference).
@pytest.mark.parametrize("runtime", runtimes() or [pytest.param("none", marks=pytest.mark.skip("no ONNX runtime installed"))])
@pytest.mark.parametrize("kind", list(NETS))
def test_export_matches_fastsr(kind, runtime, tmp_path, make_image, randomize_bn):
    model = network(kind, randomize_bn)
    engine = fastsr.optimize(model, precision="fp32")
    for scale in model.config.scales:
        path = export_onnx(model, tmp_path / f"{kind}-x{scale}.onnx", scale=scale)
        for x in (make_image(1, 11, 13), make_image(2, 16, 7)):  # dynamic batch, height and width
            with torch.no_grad():
                expected = engine(x, scale) if engine.multi_scale else engine(x)
            got = run_onnx(runtime, path, x.numpy())
            assert got.shape == tuple(expected.shape)
            np.testing.assert_allclose(got, expected.numpy(), atol=2e-3, rtol=0)


def test_export_records_the_contract(tmp_path, randomize_bn):
    model = network("mdsr", randomize_bn)
    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", scale=3)))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["fastsr.arch"] == "mdsr" and meta["fastsr.scale"] == "3" and meta["fastsr.precision"] == "fp32"
    contract = json.loads(meta["fastsr.contract"])
    assert "NCHW float32" in contract["input"] and "[0, 255]" in contract["input"]
    assert "not clamped" in contract["output"]
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in inp] == ["batch", 3, "height", "width"]
    ops = {n.op_type for n in proto.graph.node}
    assert "DepthToSpace" in ops and "BatchNormalization" not in ops and "Mul" not in ops  # folded
    modes = [onnx.helper.get_attribute_value(a) for n in proto.graph.node if n.op_type == "DepthToSpace"
             for a in n.attribute if a.name == "mode"]
    assert modes == [b"CRD"]  # PyTorch's pixel-shuffle channel order


def test_static_export_has_fixed_shapes(tmp_path, randomize_bn):
    model = network("edsr", randomize_bn)
    proto = onnx.load(str(export_onnx(model, tmp_path / "s.onnx", dynamic=False, size=(30, 41))))
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [1, 3, 60, 82]
    with pytest.raises(ValueError, match="size must be \\(height, width\\)"):
        export_onnx(model, tmp_path / "t.onnx", dynamic=False, size=(0, 5))


# (fp16, atol 0.5, rtol 1e-2 on a 0-255 output): fp16 weights and activations (11-bit mantissas) through
# the network; input and output stay float32.
@pytest.mark.skipif("onnxruntime" not in runtimes(), reason="needs onnxruntime")
def test_fp16_export(tmp_path, make_image, randomize_bn):
    model = network("edsr", randomize_bn)
    path = export_onnx(model, tmp_path / "h.onnx", precision="fp16")
    x = make_image(1, 9, 10)
    got = run_onnx("onnxruntime", path, x.numpy())
    assert got.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=0.5, rtol=1e-2)


def test_model_kinds_give_the_same_file(tmp_path, randomize_bn):
    """A module, its optimize()d engine and its saved checkpoint export the same graph."""
    model = network("bn-baseline", randomize_bn)
    ckpt = fastsr.save(model, tmp_path / "m.safetensors")
    files = [export_onnx(src, tmp_path / f"{i}.onnx") for i, src in
             enumerate((model, fastsr.optimize(model), ckpt, str(ckpt)))]
    first = files[0].read_bytes()
    assert all(f.read_bytes() == first for f in files[1:])


def test_bundled_preset_exports(tmp_path):
    from fastsr.weights import DefaultWeightsMissing, default_weights_path

    try:
        default_weights_path()
    except DefaultWeightsMissing:
        pytest.skip("no bundled weights in this install")
    path = export_onnx("mdsr-baseline", tmp_path / "d.onnx", scale=4)
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["fastsr.scale"] == "4"
    with pytest.raises(ValueError, match="'edsr-baseline-x2' is a preset without bundled weights"):
        export_onnx("edsr-baseline-x2", tmp_path / "e.onnx")


# ------------------------------------------------------------------------------------------- errors


def test_bad_arguments(tmp_path, randomize_bn):
    edsr, mdsr = network("edsr", randomize_bn), network("mdsr", randomize_bn)
    with pytest.raises(ValueError, match="the model has no x3; it upscales by x2"):
        export_onnx(edsr, tmp_path / "a.onnx", scale=3)
    with pytest.raises(ValueError, match="pass scale= \\(one scale per ONNX file\\)"):
        export_onnx(mdsr, tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="the folder .*missing.* does not exist"):
        export_onnx(edsr, tmp_path / "missing" / "a.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        export_onnx(edsr, tmp_path)
    with pytest.raises(ValueError, match="precision must be one of"):
        export_onnx(edsr, tmp_path / "a.onnx", precision="int8")
    with pytest.raises(TypeError, match="export_onnx\\(\\) takes a checkpoint path"):
        export_onnx(42, tmp_path / "a.onnx")
    with pytest.raises(TypeError, match="dynamic must be True or False"):
        export_onnx(edsr, tmp_path / "a.onnx", dynamic="yes")
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        export_onnx(edsr, tmp_path / "a.onnx", overwrite="no")
    (tmp_path / "keep.onnx").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="keep.onnx exists"):
        export_onnx(edsr, tmp_path / "keep.onnx", overwrite=False)
    assert (tmp_path / "keep.onnx").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]  # nothing else left behind


def test_failed_write_leaves_nothing(tmp_path, monkeypatch, randomize_bn):
    import fastsr._files as files

    def broken_replace(src, dst):
        raise OSError("disk full")

    model = network("edsr", randomize_bn)
    (tmp_path / "old.onnx").write_bytes(b"previous")
    monkeypatch.setattr(files.os, "replace", broken_replace)  # the file is written, the rename fails
    with pytest.raises(OSError, match="disk full"):
        export_onnx(model, tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]  # the temporary is gone


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_export(tmp_path, capsys, randomize_bn):
    ckpt = fastsr.save(network("mdsr", randomize_bn), tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert cli(["export", str(ckpt), "-s", "2", "-o", str(out)]) == 0
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["fastsr.scale"] == "2"
    before = out.read_bytes()
    assert cli(["export", str(ckpt), "-s", "3", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert cli(["export", str(ckpt), "-s", "3", "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != before
    assert cli(["export", str(ckpt), "-s", "5", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "no x5" in capsys.readouterr().err
    assert cli(["export", str(ckpt), "-s", "2", "-o", str(tmp_path / "nowhere" / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["export", str(tmp_path / "absent.pt"), "-s", "2", "-o", str(tmp_path / "y.onnx")]) == 2
    assert cli(["export", str(ckpt), "-s", "2", "-o", str(tmp_path / "z.onnx"), "--static", "20x30"]) == 0
    proto = onnx.load(str(tmp_path / "z.onnx"))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 20, 30]
    with pytest.raises(SystemExit):
        cli(["export", str(ckpt), "-s", "2", "-o", str(tmp_path / "w.onnx"), "--static", "20by30"])
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_export_from_an_engine_needs_its_module(tmp_path, randomize_bn):
    import gc

    from foreign import OfficialEDSR

    engine = fastsr.optimize(network("edsr", randomize_bn))  # the module is gone after this line
    gc.collect()
    with pytest.raises(ValueError, match="no longer exists; export the module or its checkpoint"):
        export_onnx(engine, tmp_path / "e.onnx")
    assert not (tmp_path / "e.onnx").exists()
    torch.manual_seed(0)
    theirs = fastsr.optimize(OfficialEDSR(n_resblocks=1, n_feats=8, scale=2).eval())  # converted: kept
    assert export_onnx(theirs, tmp_path / "t.onnx").exists()
