"""OpenCV ``dnn_superres``'s EDSR files (``EDSR_x2.pb``, ``EDSR_x3.pb``, ``EDSR_x4.pb``) as fastsr networks.

Those files are TensorFlow frozen ``GraphDef`` protobufs (trained by the Saafke/EDSR_Tensorflow project,
distributed through OpenCV's model zoo). :func:`load_opencv_pb` reads one without TensorFlow (on the protobuf
runtime, within the bounds of :mod:`fastsr.sources._graphdef`), checks that the graph is that EDSR layout, and
returns the equivalent fastsr :class:`~fastsr.models.EDSR` (eval mode, fp32, CPU), which ``fastsr.optimize``
and ``fastsr.upscale`` then run like any other fastsr model. A file that is truncated, malformed or out of
the reader's bounds raises :class:`fastsr.CheckpointError`, and so does a well-formed graph that is not the
EDSR layout (OpenCV's ESPCN, FSRCNN and LapSRN files), with what was found.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from .._errors import CheckpointError
from ..models.config import EDSRConfig
from ..models.networks import EDSR
from ._graphdef import DT_FLOAT, DT_QUINT8, Graph, Node, Tensor, dtype_name, read_graph
from .layout import MEAN_KEYS, build_checked
from .raw import Raw

__all__ = ["Graph", "Node", "Tensor", "dtype_name", "read_graph", "load_opencv_pb", "opencv_pb_state_dict",
           "OPENCV_BGR_MEAN"]

# dnn_superres's EDSR preprocessing (``DnnSuperResImpl::upsample`` with ``setModel("edsr", s)``): this BGR
# mean (0..255, the DIV2K mean) is subtracted from the BGR image outside the graph and added back to its
# output, which is then saturated and rounded to 8 bits. The graph itself has no mean and no clipping.
OPENCV_BGR_MEAN = (103.1545782, 111.561547, 114.35629928)

_ALLOWED_OPS = {"Const", "Identity", "Dequantize", "Placeholder", "Conv2D", "Add", "AddV2", "BiasAdd", "Relu",
                "Mul", "DepthToSpace", "Transpose"}
_ADDS = ("Add", "AddV2", "BiasAdd")
EXPECTED_LAYOUT = (
    "expected the EDSR layout of OpenCV's dnn_superres EDSR_x2/x3/x4.pb: one float Placeholder (NHWC), a 3x3 "
    "Conv2D 3 -> F + bias, B residual blocks (Conv2D + bias, Relu, Conv2D + bias, Mul by a scalar, Add), a "
    "Conv2D F -> F + bias added to the head's output, one Conv2D F -> 3 s^2 + bias and one DepthToSpace(s) "
    "(2B + 3 Conv2D ops in all; weights float32 or quint8 through Dequantize MIN_FIRST)"
)


class _LayoutError(Exception):
    pass


def _ints(value: Any) -> list[int] | None:
    """The ints of a list attribute (``AttrValue.list.i``), or None for anything else."""
    return value if isinstance(value, list) and all(type(v) is int for v in value) else None


def _scalar(value: np.ndarray, positive: bool = False) -> float | None:
    """The one finite (``positive``: and > 0) value of ``value``, or None."""
    ok = value.size == 1 and np.isfinite(value).all() and (not positive or float(value.reshape(())) > 0)
    return float(value.reshape(())) if ok else None


class _EDSRWalk:
    """Follows the EDSR chain from the Placeholder to the DepthToSpace, collecting the weights."""

    def __init__(self, graph: Graph) -> None:
        self.nodes: dict[str, Node] = {}
        self.consumers: dict[str, list[Node]] = {}
        self.visited: set[str] = set()
        for n in graph.nodes:
            if n.name in self.nodes:
                raise _LayoutError(f"two nodes are named {n.name!r}")
            self.nodes[n.name] = n
            for name in n.data_inputs():
                self.consumers.setdefault(name, []).append(n)

    def node(self, name: str) -> Node:
        """The node ``name`` names, through Identity nodes."""
        for _ in range(len(self.nodes) + 1):
            if name not in self.nodes:
                raise _LayoutError(f"input {name!r} names no node")
            n = self.nodes[name]
            self.visited.add(n.name)
            if n.op != "Identity":
                return n
            ins = n.data_inputs()
            if len(ins) != 1:
                raise _LayoutError(f"Identity node {n.name!r} has {len(ins)} inputs")
            name = ins[0]
        raise _LayoutError("a cycle of Identity nodes")

    def users(self, node: Node) -> list[Node]:
        """The nodes that consume ``node``'s output, through Identity nodes."""
        out: list[Node] = []
        stack, seen = [node.name], {node.name}
        while stack:
            for c in self.consumers.get(stack.pop(), []):
                if c.name not in seen:
                    seen.add(c.name)
                    if c.op == "Identity":
                        self.visited.add(c.name)
                        stack.append(c.name)
                    else:
                        out.append(c)
        return out

    def user(self, node: Node, ops: str | tuple[str, ...], what: str, *, among: bool = False) -> Node:
        """The one user of ``node``, of op ``ops`` (``among``: the one of that op among its users)."""
        ops = (ops,) if isinstance(ops, str) else ops
        users = self.users(node)
        found = [u for u in users if u.op in ops] if among else users
        if len(found) != 1 or found[0].op not in ops:
            listed = ", ".join(f"{u.name!r} ({u.op})" for u in users) or "nothing"
            raise _LayoutError(f"{what}: node {node.name!r} should feed exactly one {'/'.join(ops)}; it feeds {listed}")
        self.visited.add(found[0].name)
        return found[0]

    def const(self, name: str, what: str, *, dequantize: bool = True) -> np.ndarray:
        """A float constant: a float Const, or (``dequantize``) a quint8 Const through Dequantize (MIN_FIRST)."""
        n = self.node(name)
        if n.op == "Dequantize" and dequantize:
            return self.dequantize(n, what)
        if n.op != "Const":
            raise _LayoutError(f"{what}: {n.name!r} is a {n.op}, not a constant")
        value = self.tensor(n, what)
        if value.dtype.kind != "f":
            raise _LayoutError(f"{what}: Const {n.name!r} holds {value.dtype} values, not floats")
        return value.astype(np.float32)

    def tensor(self, n: Node, what: str) -> np.ndarray:
        t = n.attrs.get("value")
        if not isinstance(t, Tensor):
            raise _LayoutError(f"{what}: Const {n.name!r} has no tensor value")
        try:
            return t.numpy()
        except CheckpointError as e:
            raise _LayoutError(f"{what}: Const {n.name!r}: {e}") from None

    def dequantize(self, n: Node, what: str) -> np.ndarray:
        """TensorFlow's Dequantize, mode MIN_FIRST, quint8, as OpenCV's TF importer evaluates it: ``q * step +
        step * round(min / step)``, ``step = (max - min) / 255`` in float32 (0.0 exactly representable)."""
        ins = n.data_inputs()
        if len(ins) != 3:
            raise _LayoutError(f"{what}: Dequantize {n.name!r} has {len(ins)} inputs, expected 3")
        mode = n.attrs.get("mode", b"MIN_COMBINED")
        if mode != b"MIN_FIRST":
            raise _LayoutError(f"{what}: Dequantize {n.name!r} has mode {mode!r}; only MIN_FIRST is supported")
        q_node = self.node(ins[0])
        if q_node.op != "Const":
            raise _LayoutError(f"{what}: Dequantize {n.name!r} input {ins[0]!r} is a {q_node.op}, not a Const")
        t = q_node.attrs.get("value")
        if not isinstance(t, Tensor) or t.dtype != DT_QUINT8 or n.attrs.get("T", DT_QUINT8) != DT_QUINT8:
            found = dtype_name(t.dtype) if isinstance(t, Tensor) else "no tensor"
            raise _LayoutError(f"{what}: Dequantize {n.name!r} reads {found}; only quint8 is supported")
        q = self.tensor(q_node, what)
        lo, hi = (_scalar(self.const(name, what, dequantize=False)) for name in ins[1:])
        if lo is None or hi is None:
            raise _LayoutError(f"{what}: Dequantize {n.name!r} range input {ins[1 if lo is None else 2]!r} is not "
                               "one finite float")
        lo, hi = np.float32(lo), np.float32(hi)
        if hi < lo:
            raise _LayoutError(f"{what}: Dequantize {n.name!r} has max {hi} < min {lo}")
        if hi == lo:
            return np.full(q.shape, lo, np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # extreme ranges give inf: refused by conv()
            step = np.float32((hi - lo) / np.float32(255))
            return q.astype(np.float32) * step + np.float32(step * np.round(np.float32(lo / step)))

    def conv(self, conv: Node, src: Node, c_in: int | None, what: str) -> tuple[np.ndarray, np.ndarray, Node]:
        """(OIHW weight, bias, the bias-add node) of a 3x3 SAME stride-1 Conv2D reading ``src``."""
        if conv.op != "Conv2D":
            raise _LayoutError(f"{what}: expected a Conv2D, found {conv.name!r} ({conv.op})")
        ins = conv.data_inputs()
        if len(ins) != 2 or self.node(ins[0]) is not src:
            raise _LayoutError(f"{what}: Conv2D {conv.name!r} should read {src.name!r} and a weight")
        a = conv.attrs
        for name, got, want in [("padding", a.get("padding"), b"SAME"), ("data_format", a.get("data_format", b"NHWC"),
                                b"NHWC"), ("strides", _ints(a.get("strides")), [1, 1, 1, 1]),
                                ("dilations", _ints(a.get("dilations", [1, 1, 1, 1])), [1, 1, 1, 1])]:
            if got != want:
                raise _LayoutError(f"{what}: Conv2D {conv.name!r} has {name} {got!r}, expected {want!r}")
        w = self.const(ins[1], what)
        if w.ndim != 4 or w.shape[:2] != (3, 3) or (c_in is not None and w.shape[2] != c_in):
            raise _LayoutError(f"{what}: Conv2D {conv.name!r} has a weight of shape {w.shape}, expected "
                               f"(3, 3, {'C_in' if c_in is None else c_in}, C_out) (HWIO)")
        add = self.user(conv, _ADDS, f"{what} bias")
        other = [i for i in add.data_inputs() if self.node(i) is not conv]
        if len(add.data_inputs()) != 2 or len(other) != 1:
            raise _LayoutError(f"{what}: {add.op} {add.name!r} should add a bias to {conv.name!r}")
        if add.op == "BiasAdd" and add.attrs.get("data_format", b"NHWC") != b"NHWC":
            raise _LayoutError(f"{what}: BiasAdd {add.name!r} is not NHWC")
        b = self.const(other[0], f"{what} bias")
        if b.shape != (w.shape[3],):
            raise _LayoutError(f"{what}: bias {other[0]!r} has shape {b.shape}, expected ({w.shape[3]},)")
        for name, value in (("weight", w), ("bias", b)):
            if not np.isfinite(value).all():
                raise _LayoutError(f"{what}: the {name} of {conv.name!r} has NaN or infinite values")
        self.visited.add(conv.name)
        return np.ascontiguousarray(w.transpose(3, 2, 0, 1)), b, add

    def add_of(self, a: Node, b: Node, what: str) -> Node:
        """The Add node whose two inputs are ``a`` and ``b`` (either order)."""
        add = self.user(a, ("Add", "AddV2"), what)
        ins = [self.node(i) for i in add.data_inputs()]
        if len(ins) != 2 or {id(x) for x in ins} != {id(a), id(b)}:
            raise _LayoutError(f"{what}: {add.op} {add.name!r} should add {a.name!r} and {b.name!r}")
        return add

    def block(self, x: Node, n_feats: int, what: str) -> tuple[np.ndarray, np.ndarray, Node, tuple | None]:
        """``(w1, b1, the bias add, (w2, b2, scale, the residual Add))`` of the residual block reading ``x``;
        ``(w1, b1, the bias add, None)`` when its conv feeds no Relu: the body's closing conv."""
        conv1 = self.user(x, "Conv2D", what, among=True)
        w1, b1, a1 = self.conv(conv1, x, n_feats, what)
        if w1.shape[0] != n_feats:
            raise _LayoutError(f"{what}: Conv2D {conv1.name!r} has {w1.shape[0]} outputs, expected {n_feats}")
        nxt = self.users(a1)
        if len(nxt) != 1 or nxt[0].op != "Relu":
            return w1, b1, a1, None
        relu = self.user(a1, "Relu", what)
        w2, b2, a2 = self.conv(self.user(relu, "Conv2D", what), relu, n_feats, what)
        if w2.shape[0] != n_feats:
            raise _LayoutError(f"{what}: its second Conv2D has {w2.shape[0]} outputs, expected {n_feats}")
        mul = self.user(a2, "Mul", what)
        factor = [i for i in mul.data_inputs() if self.node(i) is not a2]
        if len(mul.data_inputs()) != 2 or len(factor) != 1:
            raise _LayoutError(f"{what}: Mul {mul.name!r} should scale {a2.name!r} by a constant")
        s = _scalar(self.const(factor[0], f"{what} residual scale"), positive=True)
        if s is None:
            raise _LayoutError(f"{what}: the residual scale {factor[0]!r} is not one finite positive float")
        return w1, b1, a1, (w2, b2, s, self.add_of(mul, x, f"{what} residual"))


def _walk(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(EDSRConfig fields, OIHW weights and biases in TensorFlow's channel orders) of the EDSR chain."""
    walk = _EDSRWalk(graph)
    image = next(n for n in graph.nodes if n.op == "Placeholder")
    walk.visited.add(image.name)
    if image.attrs.get("dtype", DT_FLOAT) != DT_FLOAT:
        raise _LayoutError(f"the input {image.name!r} is {dtype_name(image.attrs['dtype'])}, not float32")
    w, b, head = walk.conv(walk.user(image, "Conv2D", "head", among=True), image, 3, "head")
    n_feats = w.shape[0]
    weights = {"head.0.weight": w, "head.0.bias": b}
    x, blocks, scales, seen = head, 0, set(), {head.name}
    while True:
        w1, b1, a1, rest = walk.block(x, n_feats, f"block {blocks}")
        if rest is None:  # the body's closing conv, with the global skip from the head
            skip = walk.add_of(a1, head, "global skip")
            weights[f"body.{blocks}.weight"], weights[f"body.{blocks}.bias"] = w1, b1
            break
        w2, b2, s, x = rest
        scales.add(s)
        weights.update({f"body.{blocks}.body.0.weight": w1, f"body.{blocks}.body.0.bias": b1,
                        f"body.{blocks}.body.2.weight": w2, f"body.{blocks}.body.2.bias": b2})
        if x.name in seen:
            raise _LayoutError(f"the graph has a cycle through {x.name!r}")
        seen.add(x.name)
        blocks += 1
    if blocks == 0:
        raise _LayoutError("the graph has no residual blocks")
    if len(scales) != 1:
        raise _LayoutError(f"the residual blocks scale by different factors: {sorted(scales)}")

    wt, bt, at = walk.conv(walk.user(skip, "Conv2D", "tail"), skip, n_feats, "tail")
    shuffle = walk.user(at, "DepthToSpace", "tail")
    s = shuffle.attrs.get("block_size")
    if type(s) is not int or s < 2 or s > 16:
        raise _LayoutError(f"DepthToSpace {shuffle.name!r} has block_size {s!r}")
    if shuffle.attrs.get("data_format", b"NHWC") != b"NHWC":
        raise _LayoutError(f"DepthToSpace {shuffle.name!r} is not NHWC")
    if wt.shape[0] != 3 * s * s:
        raise _LayoutError(f"the tail Conv2D {at.name!r} has {wt.shape[0]} outputs; DepthToSpace({s}) of a "
                           f"3-colour image needs {3 * s * s}")
    weights["tail.0.weight"], weights["tail.0.bias"] = wt, bt
    out = walk.users(shuffle)
    if out:  # OpenCV's files end with a Transpose to NCHW
        if len(out) != 1 or out[0].op != "Transpose" or walk.users(out[0]):
            found = ", ".join(f"{u.name!r} ({u.op})" for u in out)
            raise _LayoutError(f"the DepthToSpace output feeds {found}; expected the output or one final Transpose")
        walk.visited.add(out[0].name)
        ins = out[0].data_inputs()
        perm = walk.node(ins[1]) if len(ins) == 2 else None
        if perm is None or perm.op != "Const" or walk.tensor(perm, "output Transpose").tolist() != [0, 3, 1, 2]:
            raise _LayoutError(f"the final Transpose {out[0].name!r} should permute NHWC to NCHW (0, 3, 1, 2)")
    stray = [n for n in graph.nodes if n.op != "Const" and n.name not in walk.visited]
    if stray:
        listed = ", ".join(f"{n.name!r} ({n.op})" for n in stray[:8])
        raise _LayoutError(f"{len(stray)} nodes are not part of the chain: {listed}")
    res_scale = float(str(np.float32(scales.pop())))  # float32's shortest decimal: 0.1, not 0.10000000149
    return dict(n_resblocks=blocks, n_feats=n_feats, n_colors=3, scale=s, res_scale=res_scale,
                tail="conv-shuffle"), weights


def _tf_to_fastsr_order(weights: dict[str, np.ndarray], scale: int) -> dict[str, np.ndarray]:
    """BGR -> RGB at both ends, and TensorFlow's DepthToSpace channel order -> PyTorch's PixelShuffle order.

    The head reads BGR: its input channels are reversed. The tail conv's output channel ``(i s + j) C + c``
    (DepthToSpace, NHWC: ``out[h s + i, w s + j, c] = in[h, w, (i s + j) C + c]``, c in BGR order) becomes
    channel ``c' s^2 + i s + j`` (PixelShuffle: ``out[c', h s + i, w s + j] = in[c' s^2 + i s + j]``) with
    ``c' = 2 - c`` in RGB order.
    """
    out = dict(weights)
    out["head.0.weight"] = np.ascontiguousarray(weights["head.0.weight"][:, ::-1])
    m = np.arange(3 * scale * scale)
    source = (m % (scale * scale)) * 3 + (2 - m // (scale * scale))  # torch channel m <- TensorFlow's source[m]
    out["tail.0.weight"] = np.ascontiguousarray(weights["tail.0.weight"][source])
    out["tail.0.bias"] = np.ascontiguousarray(weights["tail.0.bias"][source])
    return out


def opencv_pb_state_dict(source: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[dict[str, Any], dict[str, Any]]:
    """(EDSRConfig fields, fastsr state dict without the MeanShift entries) of an OpenCV EDSR ``.pb``.

    The fields describe fastsr's equivalent network: ``tail="conv-shuffle"``, the graph's residual scale, RGB
    input and output in [0, 255] with OpenCV's mean (RGB order, / 255) as ``rgb_mean``. Raises
    FileNotFoundError for a missing path and :class:`CheckpointError` for anything else that goes wrong.
    """
    import torch

    graph = read_graph(source)
    where = graph.source
    counts = Counter(n.op for n in graph.nodes)
    n_conv, n_d2s, n_in = counts["Conv2D"], counts["DepthToSpace"], counts["Placeholder"]
    other = sorted(set(counts) - _ALLOWED_OPS)
    if other or n_in != 1 or n_d2s != 1 or n_conv < 5 or n_conv % 2 == 0:
        why = f"it has op types EDSR has not: {', '.join(other[:8])}; " if other else ""
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        summary = ", ".join(f"{op} x{n}" for op, n in items[:12]) + (
            f", ... ({len(items) - 12} more op types)" if len(items) > 12 else "")
        raise CheckpointError(f"{where} is not an OpenCV EDSR graph: found {n_conv} Conv2D ops, {n_d2s} DepthToSpace, "
                              f"{n_in} Placeholder ({len(graph.nodes)} nodes: {summary}); {why}{EXPECTED_LAYOUT}")
    try:
        fields, weights = _walk(graph)
    except _LayoutError as e:
        raise CheckpointError(f"{where} is not an OpenCV EDSR graph: {e}; {EXPECTED_LAYOUT}") from None
    del graph  # the tensors are decoded: the file's copies can go
    weights = _tf_to_fastsr_order(weights, fields["scale"])
    fields.update(rgb_mean=tuple(m / 255.0 for m in reversed(OPENCV_BGR_MEAN)), rgb_std=(1.0, 1.0, 1.0),
                  rgb_range=255.0)
    return fields, {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}


def _config(fields: dict[str, Any], overrides: dict[str, Any]) -> EDSRConfig:
    try:
        return EDSRConfig(**{**fields, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the OpenCV EDSR graph gives an invalid fastsr config: {e}") from e


def load_opencv_pb(source: str | os.PathLike | bytes | bytearray | memoryview, **overrides: Any) -> EDSR:
    """The fastsr :class:`~fastsr.models.EDSR` (eval mode, fp32, CPU) of an OpenCV ``dnn_superres`` EDSR file
    (``EDSR_x2.pb``, ``EDSR_x3.pb``, ``EDSR_x4.pb``), given as a path or as the file's bytes.

    The model takes and returns RGB (NCHW float in [0, 255], like every fastsr model): ``fastsr.upscale(rgb,
    s, model=model)`` gives what ``DnnSuperResImpl.upsample`` gives for the same image in BGR. ``overrides``
    replace config fields (e.g. ``res_scale``), as in :func:`fastsr.load`.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for a file that is truncated,
    malformed, out of the reader's bounds, or another graph than this EDSR layout (ESPCN, FSRCNN and
    LapSRN files included), with what was found.
    """
    fields, state = opencv_pb_state_dict(source)
    return build_checked(_config(fields, overrides), state, "the OpenCV EDSR graph", layout="edsr",
                         optional=set(MEAN_KEYS))


# ------------------------------------------------------------------------------- the format's interface

NAME = "opencv-pb"
CARRIES_CONFIG = True  # the graph fixes the network: overrides may change only what it does not hold
MEAN_IN_CONFIG = True  # OpenCV's mean is a constant of the graph, applied by the config's MeanShift


def detect(raw: Raw) -> bool:
    return raw.obj is None and raw.path is not None and raw.path.suffix.lower() == ".pb"


def convert(raw: Raw, *, arch: str | None = None, **overrides: Any) -> tuple[EDSRConfig, dict[str, Any]]:
    if arch not in (None, "edsr"):
        raise CheckpointError(f"arch={arch!r} was requested but a .pb file is read as OpenCV's EDSR (arch 'edsr')")
    fields, state = opencv_pb_state_dict(raw.path)
    return _config(fields, overrides), state
