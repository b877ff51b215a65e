"""OpenCV dnn_superres's EDSR files (TensorFlow frozen GraphDefs): the bounded reader (on the protobuf runtime),
the layout check, the conversion (BGR -> RGB, OpenCV's mean, DepthToSpace's channel order, Dequantize
MIN_FIRST), the engine on the converted network, and parity with OpenCV itself -- on small graphs written here
byte by byte, and on the real ``EDSR_x4.pb`` where ``../shared/data/models/opencv`` has it."""

from __future__ import annotations

import itertools
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastsr
from fastsr import CheckpointError
from fastsr.cli import main
from fastsr.models import EDSRConfig, build
from fastsr.sources.opencv_pb import OPENCV_BGR_MEAN, load_opencv_pb, opencv_pb_state_dict, read_graph
from fastsr.system import cpu_bf16_isa

DATA_DIR = Path(os.environ.get("FASTSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PB = DATA_DIR / "models" / "opencv" / "EDSR_x4.pb"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _dnn_superres():
    try:
        import cv2
    except ImportError:
        return None
    return getattr(cv2, "dnn_superres", None)


needs_pb = pytest.mark.skipif(not PB.is_file(), reason=f"OpenCV's EDSR_x4.pb not found at {PB} (set FASTSR_DATA)")
needs_opencv = pytest.mark.skipif(_dnn_superres() is None, reason="cv2.dnn_superres is not available "
                                  "(pip install 'opencv-contrib-python-headless<5')")
needs_bf16 = pytest.mark.skipif(cpu_bf16_isa() is None, reason="this CPU has no native bf16")
needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (CPU machines)")


# ----------------------------------------------------------------- a tiny GraphDef writer (wire format)

def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return key(number, 2) + varint(len(payload)) + payload


def vi(number: int, v: int) -> bytes:
    return key(number, 0) + varint(v)


def shape_proto(dims) -> bytes:
    return b"".join(ld(2, vi(1, d)) for d in dims)


DT_FLOAT, DT_INT32, DT_QUINT8 = 1, 3, 12


def tensor_proto(arr: np.ndarray, dtype: int) -> bytes:
    return vi(1, dtype) + ld(2, shape_proto(arr.shape)) + ld(4, arr.tobytes())


def attr(name: str, value: bytes) -> bytes:
    return ld(5, ld(1, name.encode()) + ld(2, value))


def a_s(s: bytes) -> bytes:
    return ld(2, s)


def a_i(v: int) -> bytes:
    return vi(3, v)


def a_type(t: int) -> bytes:
    return vi(6, t)


def a_ints(values) -> bytes:
    return ld(1, ld(3, b"".join(varint(v) for v in values)))


def node(name: str, op: str, inputs=(), **attrs: bytes) -> bytes:
    body = ld(1, name.encode()) + ld(2, op.encode()) + b"".join(ld(3, i.encode()) for i in inputs)
    return ld(1, body + b"".join(attr(k, v) for k, v in attrs.items()))


def const(name: str, arr: np.ndarray, dtype: int = DT_FLOAT) -> bytes:
    return node(name, "Const", value=ld(8, tensor_proto(arr, dtype)), dtype=a_type(dtype))


CONV_ATTRS = dict(T=a_type(DT_FLOAT), padding=a_s(b"SAME"), data_format=a_s(b"NHWC"), strides=a_ints([1, 1, 1, 1]),
                  dilations=a_ints([1, 1, 1, 1]))


def tf_dequantize(q: np.ndarray, lo: np.float32, hi: np.float32) -> np.ndarray:
    """TensorFlow's QuantizedToFloat (Dequantize, MIN_FIRST, quint8), written from its definition, in float64:
    range_scale = (max - min) * (256 / 255) / 256; min rounded to a whole number of range_scale steps."""
    scale = (float(hi) - float(lo)) * (256 / 255.0) / 256
    lo_rounded = np.round(float(lo) / np.float32(scale)) * np.float32(scale)
    return lo_rounded + q.astype(np.float64) * scale


class EDSRGraph:
    """An OpenCV-style EDSR GraphDef (the layout of EDSR_x4.pb: quint8 weights through Dequantize MIN_FIRST,
    ``Add`` biases, ``Mul`` residual scaling, one DepthToSpace, a Transpose to NCHW) and its float weights
    (HWIO, as TensorFlow sees them after dequantization)."""

    def __init__(self, blocks=2, feats=8, scale=2, *, quantized=True, res=0.1, seed=0, transpose=True) -> None:
        self.rng = np.random.default_rng(seed)
        self.quantized, self.res, self.scale = quantized, res, scale
        self.parts: dict[str, bytes] = {"IteratorGetNext": node("IteratorGetNext", "Placeholder", dtype=a_type(DT_FLOAT))}
        self.params: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        x = head = self.conv("head", "IteratorGetNext", 3, feats)
        self.blocks = []
        for i in range(blocks):
            t = self.conv(f"b{i}c1", x, feats, feats)
            self.add(f"relu{i}", "Relu", [t], T=a_type(DT_FLOAT))
            t = self.conv(f"b{i}c2", f"relu{i}", feats, feats)
            self.parts[f"mul{i}/y"] = const(f"mul{i}/y", np.array(res, np.float32))
            self.add(f"mul{i}", "Mul", [t, f"mul{i}/y"], T=a_type(DT_FLOAT))
            self.add(f"res{i}", "Add", [x, f"mul{i}"], T=a_type(DT_FLOAT))
            x = f"res{i}"
        t = self.conv("end", x, feats, feats)
        self.add("skip", "Add", [t, head], T=a_type(DT_FLOAT))
        t = self.conv("tail", "skip", feats, 3 * scale * scale)
        self.add("NHWC_output", "DepthToSpace", [t], T=a_type(DT_FLOAT), block_size=a_i(scale),
                 data_format=a_s(b"NHWC"))
        if transpose:
            self.parts["perm"] = const("perm", np.array([0, 3, 1, 2], np.int32), DT_INT32)
            self.add("NCHW_output", "Transpose", ["NHWC_output", "perm"], T=a_type(DT_FLOAT), Tperm=a_type(DT_INT32))

    def weight(self, name: str, w: np.ndarray) -> np.ndarray:
        if not self.quantized:
            self.parts[name] = const(name, w)
            return w
        lo, hi = np.float32(w.min()), np.float32(w.max())
        q = np.clip(np.round((w - lo) / ((hi - lo) / 255)), 0, 255).astype(np.uint8)
        self.parts[f"{name}_quantized_const"] = const(f"{name}_quantized_const", q, DT_QUINT8)
        self.parts[f"{name}_quantized_min"] = const(f"{name}_quantized_min", np.array(lo))
        self.parts[f"{name}_quantized_max"] = const(f"{name}_quantized_max", np.array(hi))
        self.add(name, "Dequantize", [f"{name}_quantized_const", f"{name}_quantized_min", f"{name}_quantized_max"],
                 mode=a_s(b"MIN_FIRST"), T=a_type(DT_QUINT8))
        return tf_dequantize(q, lo, hi).astype(np.float32)

    def conv(self, name: str, x: str, c_in: int, c_out: int) -> str:
        w = (self.rng.standard_normal((3, 3, c_in, c_out)) * (0.5 / np.sqrt(9 * c_in))).astype(np.float32)
        b = (self.rng.standard_normal(c_out) * 0.5).astype(np.float32)
        w = self.weight(f"{name}/w", w)
        self.parts[f"{name}/b"] = const(f"{name}/b", b)
        self.add(f"{name}/conv", "Conv2D", [x, f"{name}/w"], **CONV_ATTRS)
        self.add(name, "Add", [f"{name}/conv", f"{name}/b"], T=a_type(DT_FLOAT))
        self.params[name] = (w, b)
        return name

    def add(self, name: str, op: str, inputs=(), **attrs: bytes) -> None:
        """Add (or replace) the node ``name``."""
        self.parts[name] = node(name, op, inputs, **attrs)

    def bytes(self) -> bytes:
        return b"".join(self.parts.values())

    def forward_bgr(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's function with TensorFlow's semantics (NHWC, SAME padding, DepthToSpace's DCR order) on
        NHWC float64 input, as OpenCV runs it: BGR minus OpenCV's mean in, plus the mean out."""
        mean = torch.tensor(OPENCV_BGR_MEAN, dtype=torch.float64)

        def conv(t, name):
            w, b = (torch.from_numpy(np.asarray(a, np.float64)) for a in self.params[name])
            return F.conv2d(t.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, padding=1).permute(0, 2, 3, 1)

        h = conv(x.double() - mean, "head")
        r = h
        for i in range(len([k for k in self.params if k.endswith("c1")])):
            r = r + self.res * conv(conv(r, f"b{i}c1").relu(), f"b{i}c2")
        t = conv(conv(r, "end") + h, "tail")
        n, hh, ww, _ = t.shape
        s = self.scale  # DepthToSpace: out[n, h s + i, w s + j, c] = in[n, h, w, (i s + j) C + c]
        t = t.reshape(n, hh, ww, s, s, 3).permute(0, 1, 3, 2, 4, 5).reshape(n, hh * s, ww * s, 3)
        return t + mean


def run(model, x):
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("quantized", [True, False], ids=["quint8", "float"])
def test_conversion_matches_tensorflow_semantics(scale, quantized, make_image):
    """RGB in -> the graph on BGR minus the mean, plus the mean -> RGB out: head input channels reversed, the
    tail's DepthToSpace channels reordered for PixelShuffle, the colours of the output reversed."""
    g = EDSRGraph(blocks=2, feats=8, scale=scale, quantized=quantized, seed=scale)
    model = load_opencv_pb(g.bytes())
    c = model.config
    assert (c.n_resblocks, c.n_feats, c.scale, c.tail, c.res_scale) == (2, 8, scale, "conv-shuffle", 0.1)
    assert c.rgb_mean == tuple(v / 255 for v in OPENCV_BGR_MEAN[::-1]) and c.rgb_std == (1.0, 1.0, 1.0)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    x = make_image(2, 7, 9)  # RGB, NCHW, odd sizes, batch 2
    bgr = x.flip(1).permute(0, 2, 3, 1)
    expected = g.forward_bgr(bgr).flip(3).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(run(model, x), expected, atol=1e-3, rtol=0)


def test_dequantize_is_tensorflows_min_first(make_image):
    """The quint8 weights dequantize with min rounded to a whole step (TensorFlow's QuantizedToFloat, as
    OpenCV's importer does): min + q * step would be off by up to half a step in every weight."""
    from fastsr.sources.opencv_pb import _EDSRWalk

    g = EDSRGraph(blocks=1, feats=8, scale=2)
    fields, state = opencv_pb_state_dict(g.bytes())
    w, _ = g.params["b0c1"]
    torch.testing.assert_close(state["body.0.body.0.weight"], torch.from_numpy(w).permute(3, 2, 0, 1),
                               atol=1e-7, rtol=1e-6)
    walk = _EDSRWalk(read_graph(g.bytes()))
    q = walk.nodes["b0c1/w_quantized_const"].attrs["value"].numpy()
    lo = float(walk.const("b0c1/w_quantized_min", "test"))
    naive = lo + q * ((float(walk.const("b0c1/w_quantized_max", "test")) - lo) / 255)
    assert np.abs(naive - w).max() > 1e-6  # the rounding of min matters


def test_save_and_load_round_trip(tmp_path, make_image):
    model = load_opencv_pb(EDSRGraph(scale=3).bytes())
    x = make_image(1, 5, 6)
    for name in ("m.safetensors", "m.pt"):
        loaded = fastsr.load(fastsr.save(model, tmp_path / name))
        assert loaded.config == model.config
        assert torch.equal(run(loaded, x), run(model, x))
    # A bare state dict: the conv-shuffle tail is recognised from its keys (tail.0.weight, no tail.0.0.*); the
    # mean comes back from the fp32 MeanShift, and no state dict records res_scale (8 features imply 1).
    loaded = fastsr.load(model.state_dict(), res_scale=0.1)
    assert (loaded.config.tail, loaded.config.scale) == ("conv-shuffle", 3)
    torch.testing.assert_close(run(loaded, x), run(model, x), atol=1e-4, rtol=0)


def test_accepts_path_and_bytes_alike(tmp_path):
    data = EDSRGraph().bytes()
    (tmp_path / "EDSR_x2.pb").write_bytes(data)
    a, b = load_opencv_pb(tmp_path / "EDSR_x2.pb"), load_opencv_pb(bytearray(data))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(FileNotFoundError):
        load_opencv_pb(tmp_path / "missing.pb")
    with pytest.raises(CheckpointError, match="not a file"):
        load_opencv_pb(tmp_path)
    with pytest.raises(TypeError):
        load_opencv_pb(123)


def test_fastsr_load_upscaler_and_cli_take_a_pb(tmp_path, make_image):
    data = EDSRGraph().bytes()
    path = tmp_path / "EDSR_x2.pb"
    path.write_bytes(data)
    loaded = fastsr.load(path)  # routed by the suffix to load_opencv_pb
    direct = load_opencv_pb(data)
    assert loaded.config == direct.config and loaded.config.tail == "conv-shuffle"
    x = make_image(1, 6, 5)
    assert torch.equal(run(loaded, x), run(direct, x))
    with pytest.raises(CheckpointError, match=r"arch='mdsr' was requested but a \.pb file is read as OpenCV's EDSR"):
        fastsr.load(path, arch="mdsr")
    img = (make_image(1, 6, 5)[0].permute(1, 2, 0).round().to(torch.uint8)).numpy()
    assert fastsr.Upscaler(str(path), backend="reference")(img, 2).shape == (12, 10, 3)
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    from PIL import Image

    Image.fromarray(img).save(src)
    assert main(["upscale", str(src), "-s", "2", "--model", str(path), "-o", str(out)]) == 0
    assert Image.open(out).size == (10, 12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_engine_runs_the_converted_network(scale, make_image):
    torch.manual_seed(0)
    model = load_opencv_pb(EDSRGraph(blocks=2, feats=16, scale=scale, seed=10 + scale).bytes())
    x = make_image(2, 11, 7)
    ref = run(model, x)
    torch.testing.assert_close(run(fastsr.optimize(model, precision="fp32"), x), ref, atol=2e-3, rtol=0)
    if cpu_bf16_isa() is not None:
        err = (run(fastsr.optimize(model, precision="bf16"), x) - ref).abs()
        assert float(err.max()) <= 1.5 and float(err.mean()) <= 0.25
    if INTERPRET:
        torch.testing.assert_close(run(fastsr.optimize(model, backend="interpret"), x), ref, atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------- layout refusals


def espcn_like() -> bytes:
    """ESPCN's structure (OpenCV's ESPCN_x*.pb): three convs with Tanh, one DepthToSpace, on one channel."""
    parts = [node("input", "Placeholder", dtype=a_type(DT_FLOAT))]
    x = "input"
    for i, (ci, co, k) in enumerate([(1, 8, 5), (8, 4, 3), (4, 4, 3)]):
        parts.append(const(f"w{i}", np.zeros((k, k, ci, co), np.float32)))
        parts.append(node(f"conv{i}", "Conv2D", [x, f"w{i}"], **CONV_ATTRS))
        x = f"conv{i}"
        if i < 2:
            parts.append(node(f"tanh{i}", "Tanh", [x], T=a_type(DT_FLOAT)))
            x = f"tanh{i}"
    parts.append(node("out", "DepthToSpace", [x], block_size=a_i(2), T=a_type(DT_FLOAT)))
    return b"".join(parts)


def test_other_layouts_are_refused_naming_what_was_found():
    with pytest.raises(CheckpointError, match=r"not an OpenCV EDSR graph: found 3 Conv2D ops, 1 DepthToSpace, "
                                              r"1 Placeholder .*op types EDSR has not: Tanh.*expected the EDSR layout"):
        load_opencv_pb(espcn_like())


def test_edsr_like_graphs_that_differ_are_refused():
    g = EDSRGraph(blocks=2)
    g.add("relu1", "Tanh", ["b1c1"], T=a_type(DT_FLOAT))
    with pytest.raises(CheckpointError, match="op types EDSR has not: Tanh"):
        load_opencv_pb(g.bytes())
    # Same op counts, wrong wiring: the second block's Relu skipped.
    bad = EDSRGraph(blocks=2)
    bad.add("b1c2/conv", "Conv2D", ["b1c1", "b1c2/w"], **CONV_ATTRS)
    with pytest.raises(CheckpointError, match=r"not an OpenCV EDSR graph: .*relu1"):
        load_opencv_pb(bad.bytes())
    # VALID padding (TensorFlow crops the border): not the network fastsr runs.
    valid = EDSRGraph(blocks=1)
    valid.add("b0c2/conv", "Conv2D", ["relu0", "b0c2/w"], **{**CONV_ATTRS, "padding": a_s(b"VALID")})
    with pytest.raises(CheckpointError, match=r"Conv2D 'b0c2/conv' has padding b'VALID', expected b'SAME'"):
        load_opencv_pb(valid.bytes())
    # Residual scales that differ between blocks cannot be one res_scale.
    mixed = EDSRGraph(blocks=2)
    mixed.parts["mul1/y"] = const("mul1/y", np.array(0.2, np.float32))
    with pytest.raises(CheckpointError, match="scale by different factors"):
        load_opencv_pb(mixed.bytes())
    # A DepthToSpace that does not match the tail conv's channels.
    d2s = EDSRGraph(blocks=1, scale=2)
    d2s.add("NHWC_output", "DepthToSpace", ["tail"], T=a_type(DT_FLOAT), block_size=a_i(3))
    with pytest.raises(CheckpointError, match=r"has 12 outputs; DepthToSpace\(3\) of a 3-colour image needs 27"):
        load_opencv_pb(d2s.bytes())


def test_hostile_graph_structures_are_refused():
    # A weight read through a cycle of Identity nodes.
    g = EDSRGraph(blocks=1, quantized=False)
    g.add("b0c1/conv", "Conv2D", ["head", "loop_a"], **CONV_ATTRS)
    g.add("loop_a", "Identity", ["loop_b"])
    g.add("loop_b", "Identity", ["loop_a"])
    with pytest.raises(CheckpointError, match="a cycle of Identity nodes"):
        load_opencv_pb(g.bytes())
    # A Dequantize whose range is itself dequantized (no recursion through Dequantize chains).
    g = EDSRGraph(blocks=1)
    g.add("head/w", "Dequantize", ["head/w_quantized_const", "head/w", "head/w_quantized_max"],
          mode=a_s(b"MIN_FIRST"), T=a_type(DT_QUINT8))
    with pytest.raises(CheckpointError, match="'head/w' is a Dequantize, not a constant"):
        load_opencv_pb(g.bytes())
    # Attributes of unexpected types.
    g = EDSRGraph(blocks=1)
    g.add("end/conv", "Conv2D", ["res0", "end/w"], **{**CONV_ATTRS, "strides": a_i(1)})
    with pytest.raises(CheckpointError, match="has strides None, expected"):
        load_opencv_pb(g.bytes())


def test_conv_shuffle_state_dict_with_a_wrong_tail_is_refused():
    state = build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2, tail="conv-shuffle")).state_dict()
    state["tail.0.weight"] = torch.zeros(13, 8, 3, 3)
    state["tail.0.bias"] = torch.zeros(13)
    with pytest.raises(CheckpointError, match="a conv-shuffle tail conv maps 8 features to 3 colours x scale"):
        fastsr.load(state)


# ------------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("data,message", [
    (b"", "the file is empty"),
    (b"\x0a\xff\xff\xff\xff\x0f", "claims 4294967295 bytes; only 0 remain"),
    (b"\x0a" + b"\xff" * 11, "varint longer than 10 bytes"),
    (b"\x0a\x80", "truncated varint"),
    (b"\x0b\x00", "wire type 3, which a GraphDef never uses"),
    (b"\x08\x01", "a GraphDef node is varint, expected length-delimited"),
    (b"\x18\x01", "no nodes"),
    (ld(1, ld(1, b"x")), "node 0 has no op"),
    (ld(1, ld(1, b"\xff\xfe") + ld(2, b"Const")), "not UTF-8"),
    (ld(1, ld(1, b"x") + ld(2, b"Const") + ld(5, ld(1, b"value") + ld(2, vi(8, 1)))), "tensor is varint"),
], ids=["empty", "length-past-end", "long-varint", "cut-varint", "group", "wrong-wire-type", "no-nodes",
        "no-op", "bad-utf8", "attr-wire-type"])
def test_malformed_bytes_raise_checkpoint_error(data, message):
    with pytest.raises(CheckpointError, match=message):
        read_graph(data)
    with pytest.raises(CheckpointError, match="cannot read the given bytes as a TensorFlow GraphDef"):
        load_opencv_pb(data)


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
    b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # a zip (torch's checkpoint format)
    b"\x80\x02}q\x00(X\x06\x00\x00\x00",  # a legacy torch pickle
    b"hello world, not a graph\n",
    bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
], ids=["png", "zip", "pickle", "text", "random"])
def test_unrelated_files_raise_checkpoint_error(data, tmp_path):
    path = tmp_path / "model.pb"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"{path}"):
        load_opencv_pb(path)


def bad_tensor(t: bytes) -> bytes:
    return node("c", "Const", value=ld(8, t), dtype=a_type(DT_FLOAT))


@pytest.mark.parametrize("tensor,message", [
    # 2^40 floats from one value: TensorFlow would repeat it over the shape; no allocation happens here.
    (vi(1, DT_FLOAT) + ld(2, shape_proto([1 << 20, 1 << 20])) + ld(5, struct.pack("<f", 1.0)), "more than 2147483648 elements"),
    (vi(1, DT_FLOAT) + ld(2, shape_proto([1 << 16, 1 << 10])) + ld(5, struct.pack("<f", 1.0)), "more than a file of this size"),
    (vi(1, DT_FLOAT) + ld(2, shape_proto([4])) + ld(4, b"\x00" * 12), "tensor_content has 12 bytes; a float32 tensor of shape \\(4,\\) needs 16"),
    (vi(1, DT_FLOAT) + ld(2, shape_proto([-1])), "negative dim"),
    (vi(1, DT_FLOAT) + ld(2, shape_proto([1] * 9)), "more than 8 dims"),
    (vi(1, DT_FLOAT) + ld(2, shape_proto([2])) + ld(5, struct.pack("<3f", 1, 2, 3)), "3 values for shape \\(2,\\)"),
    (vi(1, DT_INT32) + ld(2, shape_proto([2])) + ld(5, struct.pack("<f", 1)), "cannot hold int32 values"),
    (vi(1, 99) + ld(2, shape_proto([2])), "unsupported dtype DataType 99"),
    (vi(1, 7) + ld(2, shape_proto([1])) + ld(8, b"ab"), r"field 8 \(string_val: .*\) is not supported"),
    # (packed floats of 5 bytes: protobuf's parser refuses the node; its own message names no field)
    (vi(1, DT_FLOAT) + ld(2, shape_proto([2])) + ld(5, b"\x00" * 5), "node 0 at byte 0: the protobuf parser refused it"),
], ids=["splat-elements", "splat-bytes", "content-size", "negative-dim", "rank", "too-many-values",
        "field-for-dtype", "dtype", "string-values", "packed-size"])
def test_hostile_tensors_are_refused_before_allocation(tensor, message):
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        read_graph(bad_tensor(tensor))
    assert time.perf_counter() - t < 1.0


def test_typed_values_decode_as_tensorflow_does():
    """Typed value fields (float_val, int_val, packed or not, fewer values than elements: the last one repeats)."""
    from fastsr.sources.opencv_pb import Tensor

    def one(t: bytes) -> Tensor:
        return read_graph(bad_tensor(t)).nodes[0].attrs["value"]

    assert one(vi(1, DT_FLOAT) + ld(2, shape_proto([4])) + ld(5, struct.pack("<2f", 1.5, -2))).numpy().tolist() == [1.5, -2, -2, -2]
    unpacked = vi(1, DT_INT32) + ld(2, shape_proto([3])) + vi(7, 7) + vi(7, -3)  # int_val, one varint each
    assert one(unpacked).numpy().tolist() == [7, -3, -3]
    assert one(vi(1, DT_QUINT8) + ld(2, shape_proto([2])) + ld(7, varint(255) + varint(1))).numpy().tolist() == [255, 1]
    assert one(vi(1, DT_FLOAT) + ld(2, shape_proto([2, 2]))).numpy().tolist() == [[0, 0], [0, 0]]
    half = np.array([1.5], np.float16).view(np.uint16)[0]
    assert one(vi(1, 19) + ld(2, shape_proto([2])) + ld(13, varint(int(half)))).numpy().tolist() == [1.5, 1.5]
    bf16 = np.array([2.5], np.float32).view(np.uint32)[0] >> 16
    assert one(vi(1, 14) + ld(2, shape_proto([1])) + ld(13, varint(int(bf16)))).numpy().tolist() == [2.5]


def test_every_truncation_raises_checkpoint_error():
    data = EDSRGraph(blocks=1, feats=4).bytes()
    for n in range(0, len(data), 7):
        with pytest.raises(CheckpointError):
            load_opencv_pb(data[:n])


def test_many_nodes_are_refused_before_protobuf_parses_them():
    """MAX_NODES + 1 tiny nodes: the scan of the file's top level refuses them before protobuf builds a message
    (and the reader a Node) for each, so the memory taken stays a fraction of the file's size; MAX_NODES
    nodes are read."""
    import tracemalloc

    from fastsr.sources._graphdef import MAX_NODES

    one = node("n", "C")  # 8 bytes
    data = one * (MAX_NODES + 1)
    read_graph(one)  # (protobuf imported, the message classes built)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=f"more than {MAX_NODES} nodes"):
            read_graph(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(data) // 4, (peak, len(data))
    assert len(read_graph(one * MAX_NODES).nodes) == MAX_NODES


def _peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS, where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))


def test_fields_at_every_level_are_counted_before_protobuf_parses_them(monkeypatch):
    """One node holding 2^20 + 1 empty attribute entries (2 MiB): protobuf would build a message for each (about
    60 MiB, in its own arena, which tracemalloc does not see); the scan before parsing counts every level and
    refuses the file, taking less than twice its size in memory (peak RSS, where Linux can reset it; and the
    Python allocations, under a limit of 2^16, as tracemalloc slows the scan's loop over tenfold)."""
    import tracemalloc

    import fastsr.sources._graphdef as graphdef

    def crafted(n: int) -> tuple[bytes, str]:
        return ld(1, ld(1, b"n") + ld(2, b"C") + ld(5, b"") * n), (
            rf"node 0 at byte 0: {n} fields by byte \d+ \(every message, value and repeated element, at every "
            rf"level of the graph\), more than the reader's limit of {n - 1}")

    assert graphdef.MAX_FIELDS == 2**20
    data, message = crafted(2**20 + 1)  # (with the node, its name and op, the limit is passed 3 entries early)
    read_graph(node("n", "C"))  # (protobuf imported, the message classes built)
    rss = _peak_rss_reset()
    before, t = _peak_rss() if rss else 0, time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        read_graph(data)
    assert time.perf_counter() - t < 10.0
    if rss:
        assert _peak_rss() - before < 2 * len(data), (_peak_rss() - before, len(data))
    monkeypatch.setattr(graphdef, "MAX_FIELDS", 2**16)
    data, message = crafted(2**16 + 1)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=message):
            read_graph(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(data), (peak, len(data))


def test_the_field_limit_counts_each_level_exactly(monkeypatch):
    """A constant's 18 fields: the node, name, op; per attribute its entry, key and value; the value's tensor;
    the tensor's dtype, shape and content; the shape's two dims and their sizes; and the type of ``dtype``."""
    import fastsr.sources._graphdef as graphdef

    data = const("c", np.zeros((2, 3), np.float32))
    monkeypatch.setattr(graphdef, "MAX_FIELDS", 18)
    assert read_graph(data).nodes[0].attrs["value"].shape == (2, 3)
    monkeypatch.setattr(graphdef, "MAX_FIELDS", 17)
    with pytest.raises(CheckpointError, match="node 0 at byte 0: 18 fields by byte .* limit of 17"):
        read_graph(data)


@pytest.mark.parametrize("body,message", [
    (ld(5, ld(2, ld(7, ld(2, b"\x08\x80")))) + ld(1, b"x") + ld(2, b"C"),
     r"node 0 at byte 0: field at byte 10 runs past the end of its message \(byte 12\)"),
    (ld(1, b"x") + ld(2, b"C") + ld(5, ld(2, b"\x0b\x0c")), "node 0 at byte 0: field 1 at byte 12 has wire type 3"),
    (ld(1, b"x") + ld(5, ld(1, b"ab\x00") + b"\x12\x05ab"), "field 2 at byte 12 claims 5 bytes; only 2 remain in its"),
    (ld(1, b"x") + ld(2, b"C") + ld(5, ld(2, ld(8, b"\x00\x01"))), "node 0 at byte 0: field number 0 at byte 14"),
], ids=["past-message-end", "nested-group", "nested-length", "nested-field-0"])
def test_framing_inside_a_node_is_checked_before_parsing(body, message):
    with pytest.raises(CheckpointError, match=message):
        read_graph(ld(1, body))


def test_the_scan_is_bounded_by_the_schema():
    """The schema has no cycles (the scan's stack is at most its depth), and nesting outside it (AttrValue.func,
    NameAttrList.attr, ...: unknown fields here) is skipped unread, however deep."""
    from fastsr.sources._graphdef import _SUBMESSAGES

    def depth(entry, seen=()):
        assert id(entry) not in seen
        return 1 + max((depth(child, (*seen, id(entry))) for child in entry.values()), default=0)

    assert depth(_SUBMESSAGES["GraphDef"]) == 8  # GraphDef, NodeDef, entry, AttrValue, list, tensor, shape, dim
    func = ld(1, b"f")
    for _ in range(5000):  # NameAttrList{attr {key: "a", value: AttrValue{func: ...}}}
        func = ld(2, ld(1, b"a") + ld(2, ld(10, func)))
    t = time.perf_counter()
    assert read_graph(node("x", "C", f=ld(10, func))).nodes[0].attrs == {"f": None}
    assert time.perf_counter() - t < 1.0


def test_other_bounds_of_the_reader(monkeypatch):
    import fastsr.sources._graphdef as graphdef

    monkeypatch.setattr(graphdef, "MAX_ENTRIES", 3)
    with pytest.raises(CheckpointError, match="node 0: more than 3 inputs, attributes and list values"):
        read_graph(node("add", "AddN", ["a", "b", "c", "d"]))
    with pytest.raises(CheckpointError, match="more than 64 top-level fields that are not nodes"):
        read_graph(node("x", "Const") + vi(3, 1) * 65)
    with pytest.raises(CheckpointError, match="field number 0 at byte 0"):
        read_graph(b"\x02\x00" + node("x", "Const"))


def test_fields_outside_the_schema_are_ignored():
    """What the reader does not declare (GraphDef.versions and library, NodeDef.device, a list of funcs, an
    unknown field) is skipped as protobuf skips it, and the graph reads the same."""
    g = EDSRGraph(blocks=1)
    plain = opencv_pb_state_dict(g.bytes())[1]
    g.add("relu0", "Relu", ["b0c1"], T=a_type(DT_FLOAT), funcs=ld(1, ld(9, ld(1, b"f"))))
    extra = ld(4, vi(1, 27) + vi(2, 0)) + g.bytes() + ld(2, ld(1, ld(1, ld(1, b"fn")))) + vi(99, 5)
    fields, state = opencv_pb_state_dict(extra)
    assert fields["n_resblocks"] == 1 and all(torch.equal(v, state[k]) for k, v in plain.items())
    assert read_graph(extra).nodes[-1].name == "NCHW_output"
    node_with_device = ld(1, ld(1, b"x") + ld(2, b"Const") + ld(4, b"/device:CPU:0") + ld(6, b"\x0a\x00"))
    assert read_graph(node_with_device).nodes[0].attrs == {}


# ------------------------------------------------------------------------------------- OpenCV itself


@needs_opencv
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_opencv_agrees_on_written_graphs(scale, tmp_path):
    """OpenCV's own importer and dnn_superres pipeline on a graph written here: the same 8-bit image as
    fastsr.upscale (fp32) from the converted model, to within one level where two sums straddle a .5."""
    import cv2

    g = EDSRGraph(blocks=2, feats=8, scale=scale, seed=20 + scale)
    path = tmp_path / f"EDSR_x{scale}.pb"
    path.write_bytes(g.bytes())
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(path))
    sr.setModel("edsr", scale)
    rgb = np.random.default_rng(scale).integers(0, 256, (13, 10, 3), dtype=np.uint8)
    theirs = sr.upsample(np.ascontiguousarray(rgb[..., ::-1]))[..., ::-1]
    ours = fastsr.upscale(rgb, scale, model=load_opencv_pb(path), precision="fp32")
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert ours.shape == theirs.shape == (13 * scale, 10 * scale, 3)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert 10 < theirs.std()  # the image is not saturated: the comparison means something


# ------------------------------------------------------------------------------------ the real file


@pytest.fixture(scope="module")
def real_model():
    if not PB.is_file():
        pytest.skip(f"OpenCV's EDSR_x4.pb not found at {PB}")
    return load_opencv_pb(PB)


@pytest.fixture(scope="module")
def real_bytes():
    if not PB.is_file():
        pytest.skip(f"OpenCV's EDSR_x4.pb not found at {PB}")
    return PB.read_bytes()


@needs_pb
def test_real_file_layout(real_model):
    c = real_model.config
    assert (c.n_resblocks, c.n_feats, c.scale, c.tail, c.res_scale) == (32, 256, 4, "conv-shuffle", 0.1)
    # 65 convs 256 -> 256, the head 3 -> 256, the tail 256 -> 48, the two MeanShifts.
    assert sum(p.numel() for p in real_model.parameters()) == 65 * (256 * 256 * 9 + 256) + (3 * 9 * 256 + 256) \
        + (256 * 9 * 48 + 48) + 2 * 12
    from fastsr.tiling import receptive_field

    assert receptive_field(real_model, 4) == 67


@needs_pb
def test_real_file_through_the_engine(real_model, make_image):
    x = make_image(2, 9, 7)
    ref = run(real_model, x)
    # (fp32, atol 5e-3 on 0..255: 67 convs at 256 channels summed in another order)
    torch.testing.assert_close(run(fastsr.optimize(real_model, precision="fp32"), x), ref, atol=5e-3, rtol=0)


@needs_pb
@needs_opencv
def test_real_file_matches_opencv(real_model):
    """Two 40x40 crops of Set5 x4 LR images through OpenCV's DnnSuperResImpl (BGR) and fastsr (RGB; the
    reference and the fp32 engine): every value within one level, almost all identical."""
    import cv2
    from PIL import Image

    lr_dir = DATA_DIR / "Set5" / "LR_bicubic" / "X4"
    if not lr_dir.is_dir():
        pytest.skip(f"Set5 not found at {lr_dir}")
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(PB))
    sr.setModel("edsr", 4)
    engine = fastsr.optimize(real_model, precision="fp32")
    for name, (y, x) in (("baby", (44, 40)), ("butterfly", (12, 20))):
        rgb = np.ascontiguousarray(np.array(Image.open(lr_dir / f"{name}x4.png").convert("RGB"))[y : y + 40, x : x + 40])
        theirs = sr.upsample(np.ascontiguousarray(rgb[..., ::-1]))[..., ::-1].astype(int)
        t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
        for label, model in (("reference", real_model), ("engine fp32", engine)):
            ours = run(model, t).clamp(0, 255).round()[0].permute(1, 2, 0).numpy().astype(int)
            diff = np.abs(ours - theirs)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (name, label, diff.max(), (diff > 0).mean())


_NODE_OFFSETS: dict[str, list[int]] = {}


def _node_offsets(data: bytes, limit: int) -> list[int]:
    """Byte offsets of the top-level fields (GraphDef nodes) in ``data[:limit]``."""
    from fastsr.sources._graphdef import _top_level

    return list(itertools.takewhile(lambda at: at <= limit, (f[0] for f in _top_level(memoryview(data)))))


@needs_pb
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_file(real_bytes, data):
    """Mutations of the real file (bytes changed near the node and tensor headers, truncation, a spliced
    chunk): the reader and the layout check either succeed or raise CheckpointError, quickly."""
    offsets = _NODE_OFFSETS.setdefault("x4", _node_offsets(real_bytes, 200_000))
    buf = bytearray(real_bytes)
    kind = data.draw(st.sampled_from(["header", "bytes", "truncate", "splice"]))
    if kind == "header":  # a node's first bytes: lengths, names, dtype, shape, the tensor_content length
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.sampled_from(offsets)) + data.draw(st.integers(0, 80))
            buf[at] = data.draw(st.integers(0, 255))
    elif kind == "bytes":
        for _ in range(data.draw(st.integers(1, 8))):
            buf[data.draw(st.integers(0, 200_000))] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    else:
        src, dst = data.draw(st.integers(0, 200_000)), data.draw(st.integers(0, 200_000))
        n = data.draw(st.integers(1, 4096))
        buf[dst : dst + n] = real_bytes[src : src + n]
    t = time.perf_counter()
    try:
        fields, state = opencv_pb_state_dict(bytes(buf))
    except CheckpointError as e:
        assert str(e)
    else:
        assert fields["tail"] == "conv-shuffle" and all(torch.isfinite(v).all() for v in state.values())
    assert time.perf_counter() - t < 20.0


@needs_pb
def test_fastsr_load_reads_the_pb(real_model, make_image):
    loaded = fastsr.load(PB)
    x = make_image(1, 5, 5)
    assert loaded.config == real_model.config and torch.equal(run(loaded, x), run(real_model, x))
