"""TensorFlow frozen ``GraphDef`` files (``.pb``) read on the ``protobuf`` runtime, within explicit bounds.

The runtime parses the file against the part of TensorFlow's schema that a frozen graph needs (:data:`_SCHEMA`:
``GraphDef.node``, ``NodeDef``, ``AttrValue``, ``TensorProto``, ``TensorShapeProto``, with TensorFlow's field
numbers), built at run time from a descriptor: no TensorFlow, no protoc, no generated code (so no tie to one
protobuf major version). Other fields (``GraphDef.versions`` and ``library``, ``AttrValue.func``, ...) stay
unknown fields and are ignored. Around the parser, the bounds that protobuf itself does not have:

* the file is at most :data:`MAX_FILE_BYTES`; before protobuf parses it all at once (and allocates for every
  message and repeated element), a scan of every level that the schema declares (keys and lengths; payloads
  that are not sub-messages skipped unread) checks the framing and refuses more than :data:`MAX_NODES`
  nodes or more than :data:`MAX_FIELDS` fields in all: what protobuf allocates is then bounded by that count
  and by the bytes (packed values, strings, tensor contents, unknown fields) that the file holds;
* a known field in another wire type (which protobuf would set aside) is refused, and so are string, complex
  and resource tensor values; node inputs, attributes and list values are at most :data:`MAX_ENTRIES`;
* a tensor's element count comes from its shape and is checked -- at most :data:`MAX_DIMS` dims, each >= 0,
  at most :data:`MAX_ELEMENTS` elements, ``tensor_content`` exactly ``elements x itemsize`` bytes, no more
  typed values than elements -- before anything is allocated; the elements of all tensors together may take
  at most the file size (plus 1 MiB for the constants that TensorFlow stores as one value repeated).

Anything truncated, malformed or out of bounds raises :class:`fastsr.CheckpointError` naming the node.
:mod:`fastsr.sources.opencv_pb` turns OpenCV's EDSR graphs into fastsr networks.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import CheckpointError, first_line

__all__ = ["Graph", "Node", "Tensor", "dtype_name", "read_graph"]

MAX_FILE_BYTES = 2**31 - 1  # protobuf's own limit on a serialized message
MAX_NODES = 10_000  # OpenCV's EDSR_x4.pb has 602
MAX_OTHER_FIELDS = 64  # top-level fields that are not nodes (TensorFlow writes versions and library once each)
MAX_ENTRIES = 2**20  # node inputs + attributes + list attribute values, in the whole graph
# Fields on the wire at every level (each message, value and repeated element; packed values are one field):
# protobuf takes at most ~130 bytes for each (measured: an empty TensorProto in a list). EDSR_x4.pb has 9,382.
MAX_FIELDS = 2**20
MAX_ELEMENTS = 2**31  # per tensor
MAX_DIMS = 8
SPLAT_ALLOWANCE = 2**20  # bytes of tensors beyond the file size (constants stored as one repeated value)

# TensorFlow's DataType values: name, numpy storage (little-endian; None: not decoded). bfloat16 is read as
# its 16 bits, quantized types as their integer type.
_DTYPES = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"), 5: ("int16", "<i2"),
    6: ("int8", "i1"), 7: ("string", None), 8: ("complex64", None), 9: ("int64", "<i8"), 10: ("bool", "?"),
    11: ("qint8", "i1"), 12: ("quint8", "u1"), 13: ("qint32", "<i4"), 14: ("bfloat16", "<u2"),
    15: ("qint16", "<i2"), 16: ("quint16", "<u2"), 17: ("uint16", "<u2"), 18: ("complex128", None),
    19: ("float16", "<f2"), 20: ("resource", None), 21: ("variant", None), 22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
}
_NUMPY = {k: v for k, (_, v) in _DTYPES.items() if v}
DT_FLOAT, DT_STRING, DT_QUINT8, DT_BFLOAT16, DT_HALF = 1, 7, 12, 14, 19
# TensorProto's typed value fields: name -> (number, protobuf type, the dtypes it holds). int_val and half_val
# are int32: TensorFlow keeps int_val's low bits for narrower types, and half_val holds fp16 / bf16 bits.
_TYPED = {
    "float_val": (5, "float", {1}), "double_val": (6, "double", {2}),
    "int_val": (7, "int32", {3, 4, 5, 6, 11, 12, 13, 15, 16, 17}), "int64_val": (10, "int64", {9}),
    "bool_val": (11, "bool", {10}), "half_val": (13, "int32", {14, 19}), "uint32_val": (16, "uint32", {22}),
    "uint64_val": (17, "uint64", {23}),
}
_UNSUPPORTED_VALUES = {8: "string_val", 9: "scomplex_val", 12: "dcomplex_val", 14: "resource_handle_val",
                       15: "variant_val"}
# message -> [(field, number, type)]; "*" repeated, "|" in the oneof ``value``. NodeDef.attr is a
# map<string, AttrValue>: on the wire, repeated key/value entries. Strings are bytes, decoded here.
_SCHEMA = {
    "GraphDef": [("node", 1, "*NodeDef")],
    "NodeDef": [("name", 1, "bytes"), ("op", 2, "bytes"), ("input", 3, "*bytes"), ("device", 4, "bytes"),
                ("attr", 5, "*AttrEntry")],
    "AttrEntry": [("key", 1, "bytes"), ("value", 2, "AttrValue")],
    "AttrValue": [("list", 1, "|ListValue"), ("s", 2, "|bytes"), ("i", 3, "|int64"), ("f", 4, "|float"),
                  ("b", 5, "|bool"), ("type", 6, "|int32"), ("shape", 7, "|TensorShapeProto"),
                  ("tensor", 8, "|TensorProto"), ("placeholder", 9, "|bytes")],
    "ListValue": [("s", 2, "*bytes"), ("i", 3, "*int64"), ("f", 4, "*float"), ("b", 5, "*bool"),
                  ("type", 6, "*int32"), ("shape", 7, "*TensorShapeProto"), ("tensor", 8, "*TensorProto")],
    "TensorProto": [("dtype", 1, "int32"), ("tensor_shape", 2, "TensorShapeProto"), ("version_number", 3, "int32"),
                    ("tensor_content", 4, "bytes")] + [(k, n, "*" + t) for k, (n, t, _) in _TYPED.items()],
    "TensorShapeProto": [("dim", 2, "*Dim"), ("unknown_rank", 3, "bool")],
    "Dim": [("size", 1, "int64"), ("name", 2, "bytes")],
}
# message -> {field number: the sub-message's own entry} for its sub-message fields: where the scan before
# parsing descends (the schema has no cycles, so the scan's stack is at most its depth, GraphDef ... Dim)
_SUBMESSAGES: dict[str, dict[int, dict]] = {m: {} for m in _SCHEMA}
for _m, _fields in _SCHEMA.items():
    _SUBMESSAGES[_m].update((n, _SUBMESSAGES[t.lstrip("*|")]) for _, n, t in _fields if t.lstrip("*|") in _SCHEMA)
del _m, _fields
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "a group", 4: "a group end", 5: "fixed32"}


@functools.cache
def _messages() -> dict[str, type]:
    """The message classes of :data:`_SCHEMA`, in a descriptor pool of their own."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="fastsr/opencv_pb.proto", package="fastsr_pb", syntax="proto3")
    for name, fields in _SCHEMA.items():
        message = file.message_type.add(name=name)
        for fname, number, ftype in fields:
            kind = ftype.lstrip("*|")
            f = message.field.add(name=fname, number=number,
                                  label=F.LABEL_REPEATED if ftype[0] == "*" else F.LABEL_OPTIONAL)
            if kind in _SCHEMA:
                f.type, f.type_name = F.TYPE_MESSAGE, f".fastsr_pb.{kind}"
            else:
                f.type = getattr(F, f"TYPE_{kind.upper()}")
            if ftype[0] == "|":
                f.oneof_index = 0
        if any(t[0] == "|" for _, _, t in fields):
            message.oneof_decl.add(name="value")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"fastsr_pb.{n}")) for n in _SCHEMA}


def dtype_name(dtype: Any) -> str:
    return _DTYPES.get(dtype, (f"DataType {dtype}",))[0] if isinstance(dtype, int) else repr(dtype)


class _Malformed(Exception):
    """A wire-format or schema violation; :func:`read_graph` turns it into a CheckpointError."""


@dataclass
class Tensor:
    """A ``TensorProto``: dtype, shape and either ``tensor_content`` (raw little-endian values) or the values of
    its typed field (fewer than the elements when TensorFlow repeats the last one)."""

    dtype: int
    shape: tuple[int, ...]
    content: bytes | None = None
    values: np.ndarray | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def numpy(self) -> np.ndarray:
        """The values as an array of ``shape`` (native byte order); bfloat16 as float32, quantized types as
        their integer storage type."""
        if self.dtype not in _NUMPY:
            raise CheckpointError(f"a {dtype_name(self.dtype)} tensor cannot be decoded")
        native, n = np.dtype(_NUMPY[self.dtype]).newbyteorder("="), self.size
        if self.content is not None:
            values = np.frombuffer(self.content, _NUMPY[self.dtype]).astype(native)
        elif self.values is None or not self.values.size:
            values = np.zeros(n, native)
        else:
            values = self.values.astype(np.uint16).view(np.float16) if self.dtype == DT_HALF else self.values
            values = values.astype(native)  # (int_val: the low bits; half_val for bf16: its 16 bits)
            values = np.concatenate([values, np.full(n - values.size, values[-1], native)])
        if self.dtype == DT_BFLOAT16:
            values = (values.astype(np.uint32) << 16).view(np.float32)
        if values.size != n:  # guarded at read time; a last check before the reshape
            raise CheckpointError(f"tensor has {values.size} values for shape {self.shape}")
        return values.reshape(self.shape)


@dataclass
class Node:
    """A ``NodeDef``: name, op, inputs (``"name"``, ``"name:1"``, ``"^control"``) and attributes as Python
    values: bytes (s), int (i, type), float (f), bool (b), tuple of ints or None (shape; None: unknown rank),
    :class:`Tensor` (tensor), list (list: the values of its one non-empty field) or None (no value)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def data_inputs(self) -> list[str]:
        """The data inputs (no control inputs), as node names (the ``:0`` output index dropped)."""
        out = []
        for s in self.inputs:
            if not s.startswith("^"):
                name, _, index = s.rpartition(":")
                out.append(name if index.isdigit() and name else s)
        return out


@dataclass
class Graph:
    nodes: list[Node]
    source: str = "the given bytes"  # what was read, for messages: a path or "the given bytes"


# ------------------------------------------------------------------------------------- reading a GraphDef


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    for i in range(10):
        if pos + i >= len(data):
            raise _Malformed(f"truncated varint at byte {pos}")
        b = data[pos + i]
        result |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            if i == 9 and b > 1:
                raise _Malformed(f"varint over 64 bits at byte {pos}")
            return result, pos + i + 1
    raise _Malformed(f"varint longer than 10 bytes at byte {pos}")


def _top_level(data: memoryview):
    """``(offset, field number, payload start, end)`` of each top-level field of a GraphDef, its framing checked
    and its payload skipped: what bounds the nodes before protobuf parses (and allocates for) them all at once."""
    pos = nodes = others = 0
    while pos < len(data):
        at = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0 or wire not in (0, 1, 2, 5):  # 3, 4: groups (no GraphDef field is one); 6, 7: none
            raise _Malformed(f"field number 0 at byte {at}" if number == 0 else
                             f"field {number} at byte {at} has wire type {wire}, which a GraphDef never uses")
        if number == 1 and wire != 2:
            raise _Malformed(f"a GraphDef node is {_WIRE_NAMES[wire]}, expected length-delimited (near byte {at})")
        start = pos
        if wire == 2:
            length, pos = _varint(data, pos)
            start = pos
            if length > len(data) - pos:
                raise _Malformed(f"field {number} at byte {at} claims {length} bytes; only {len(data) - pos} "
                                 "remain in the file")
            pos += length
        elif wire == 0:
            pos = _varint(data, pos)[1]
        elif pos + (8 if wire == 1 else 4) > len(data):
            raise _Malformed(f"truncated fixed{64 if wire == 1 else 32} field {number} at byte {at}")
        else:
            pos += 8 if wire == 1 else 4
        nodes, others = nodes + (number == 1), others + (number != 1)
        if nodes > MAX_NODES:
            raise _Malformed(f"more than {MAX_NODES} nodes (the reader's limit; OpenCV's EDSR graphs have ~600)")
        if others > MAX_OTHER_FIELDS:
            raise _Malformed(f"more than {MAX_OTHER_FIELDS} top-level fields that are not nodes")
        yield at, number, start, pos


def _count_fields(data: memoryview, pos: int, end: int, counted: int) -> int:
    """``counted`` plus the fields of the NodeDef in ``data[pos:end]`` at every level, their framing checked.
    Iterative (a stack of the enclosing messages' ends); payloads that are not sub-messages are skipped unread."""
    stack, sub, at, limit = [], _SUBMESSAGES["NodeDef"], pos, MAX_FIELDS
    while True:
        while pos < end:
            at, key = pos, data[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = _varint(data, pos)
            counted += 1
            if counted > limit or key < 8:
                raise _Malformed(f"field number 0 at byte {at}" if key < 8 else
                                 f"{counted} fields by byte {at} (every message, value and repeated element, at "
                                 f"every level of the graph), more than the reader's limit of {limit}; OpenCV's "
                                 "EDSR_x4.pb has 9,382")
            wire = key & 7
            if wire == 2:
                if pos < end and data[pos] < 0x80:
                    length, pos = data[pos], pos + 1
                else:
                    length, pos = _varint(data, pos)
                if length > end - pos:
                    raise _Malformed(f"field {key >> 3} at byte {at} claims {length} bytes; only "
                                     f"{max(end - pos, 0)} remain in its message")
                child = sub.get(key >> 3)
                if child is None:
                    pos += length
                else:
                    stack.append((sub, end))
                    sub, end = child, pos + length
            elif wire == 0:
                if pos < end and data[pos] < 0x80:
                    pos += 1
                else:
                    pos = _varint(data, pos)[1]
            elif wire == 5 or wire == 1:
                pos += 4 if wire == 5 else 8
            else:
                raise _Malformed(f"field {key >> 3} at byte {at} has wire type {wire}, which a GraphDef never uses")
        if pos > end:
            raise _Malformed(f"field at byte {at} runs past the end of its message (byte {end})")
        if not stack:
            return counted
        sub, end = stack.pop()


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.entries = limit, 0, 0

    def take(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise _Malformed(f"{what}: the tensors' elements add up to more than {self.limit} bytes, more than a "
                             "file of this size can describe")

    def count(self, entries: int, what: str) -> None:
        self.entries += entries
        if self.entries > MAX_ENTRIES:
            raise _Malformed(f"{what}: more than {MAX_ENTRIES} inputs, attributes and list values in the graph")


def _strict(msg: Any, what: str, refused: dict[int, str] | None = None) -> None:
    """Refuse the unknown fields of ``msg`` that have a known field's number (in another wire type, which
    protobuf sets aside) or a number in ``refused``."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    for u in UnknownFieldSet(msg):
        if refused and u.field_number in refused:
            raise _Malformed(f"{what}: field {u.field_number} ({refused[u.field_number]}: string, complex or "
                             "resource values) is not supported")
        for name, number, ftype in _SCHEMA[type(msg).__name__]:
            if number == u.field_number:
                kind = ftype.lstrip("*|")
                want = {"float": "fixed32", "double": "fixed64"}.get(kind, "varint")
                want = "length-delimited" if kind == "bytes" or kind in _SCHEMA else want
                raise _Malformed(f"{what}: {name} is {_WIRE_NAMES.get(u.wire_type, u.wire_type)}, expected {want}"
                                 + (" or packed" if ftype[0] == "*" and want != "length-delimited" else ""))


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{what} is not UTF-8 text") from None


def _shape(msg: Any, what: str) -> tuple[int, ...] | None:
    _strict(msg, f"{what}: shape")
    if len(msg.dim) > MAX_DIMS:
        raise _Malformed(f"{what}: a shape with more than {MAX_DIMS} dims")
    for d in msg.dim:
        _strict(d, f"{what}: dim")
    return None if msg.unknown_rank else tuple(d.size for d in msg.dim)


def _tensor(msg: Any, budget: _Budget, what: str) -> Tensor:
    _strict(msg, what, _UNSUPPORTED_VALUES)
    dtype, shape = msg.dtype, _shape(msg.tensor_shape, what)
    if shape is None:
        raise _Malformed(f"{what}: a constant tensor of unknown rank")
    typed = [k for k in _TYPED if len(getattr(msg, k))]
    if len(typed) > 1:
        raise _Malformed(f"{what}: values in two typed fields ({typed[0]} and {typed[1]})")
    if dtype not in _NUMPY and dtype != DT_STRING:
        raise _Malformed(f"{what}: unsupported dtype {dtype_name(dtype)}")
    if any(d < 0 for d in shape):
        raise _Malformed(f"{what}: negative dim in shape {shape}")
    n = 1
    for d in shape:
        n *= d
        if n > MAX_ELEMENTS:
            raise _Malformed(f"{what}: shape {shape} has more than {MAX_ELEMENTS} elements")
    if dtype == DT_STRING:  # string tensors: kept as a shape only (their values are never needed)
        return Tensor(dtype, shape)
    itemsize, content, values = np.dtype(_NUMPY[dtype]).itemsize, msg.tensor_content, None  # (read once: a copy)
    if content:
        if typed:
            raise _Malformed(f"{what}: both tensor_content and typed values")
        if len(content) != n * itemsize:
            raise _Malformed(f"{what}: tensor_content has {len(content)} bytes; a {dtype_name(dtype)} tensor "
                             f"of shape {shape} needs {n * itemsize}")
    elif typed:
        _, ptype, holds = _TYPED[typed[0]]
        if dtype not in holds:
            raise _Malformed(f"{what}: {typed[0]} cannot hold {dtype_name(dtype)} values")
        source = getattr(msg, typed[0])
        if len(source) > n:
            raise _Malformed(f"{what}: {len(source)} values for shape {shape} ({n} elements)")
        values = np.fromiter(source, {"float": np.float32, "double": np.float64, "bool": np.bool_}.get(ptype, ptype),
                             count=len(source))
    budget.take(n * itemsize, what)
    return Tensor(dtype, shape, content or None, values)


def _attr(msg: Any, budget: _Budget, what: str) -> Any:
    _strict(msg, what)
    kind = msg.WhichOneof("value")
    if kind == "list":
        _strict(msg.list, f"{what}: list")
        filled = [k for k in ("s", "i", "f", "b", "type", "shape", "tensor") if len(getattr(msg.list, k))]
        if len(filled) > 1:
            raise _Malformed(f"{what}: a list attribute with values of two kinds ({filled[0]} and {filled[1]})")
        values = getattr(msg.list, filled[0]) if filled else []
        budget.count(len(values), what)
        if filled == ["shape"]:
            return [_shape(v, what) for v in values]
        return [_tensor(v, budget, what) for v in values] if filled == ["tensor"] else list(values)
    if kind == "shape":
        return _shape(msg.shape, what)
    if kind == "tensor":
        return _tensor(msg.tensor, budget, what)
    return None if kind is None else getattr(msg, kind)


def _node(msg: Any, budget: _Budget, index: int) -> Node:
    _strict(msg, f"node {index}")
    budget.count(len(msg.input) + len(msg.attr), f"node {index}")
    name, op = _text(msg.name, f"node {index}'s name"), _text(msg.op, f"node {index}'s op")
    node = Node(name, op, [_text(s, f"node {index}'s input") for s in msg.input])
    for entry in msg.attr:
        _strict(entry, f"node {index}: attr")
        key = _text(entry.key, f"node {index}'s attr key")
        node.attrs[key] = _attr(entry.value, budget, f"node {index} ({name or '?'}) attr {key!r}")
    if not node.name or not node.op:
        raise _Malformed(f"node {index} has no {'name' if not node.name else 'op'}")
    return node


def _source_bytes(source: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[memoryview, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")
        if len(data) > MAX_FILE_BYTES:
            raise CheckpointError(f"{len(data)} bytes; a protobuf (GraphDef) has at most {MAX_FILE_BYTES}")
        return data, "the given bytes"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a path or bytes, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"model path is not a file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path} has {size} bytes; a protobuf (GraphDef) has at most {MAX_FILE_BYTES}")
    return memoryview(path.read_bytes()), str(path)


def _read(data: memoryview, where: str) -> Graph:
    try:
        if len(data) == 0:
            raise _Malformed("the file is empty")
        counted = nodes = 0
        for at, number, start, end in _top_level(data):
            counted += 1
            if number == 1:
                try:
                    counted = _count_fields(data, start, end, counted)
                except _Malformed as e:
                    raise _Malformed(f"node {nodes} at byte {at}: {e}") from None
                nodes += 1
        if not nodes:
            raise _Malformed("no nodes")
        from google.protobuf.message import DecodeError

        graph = _messages()["GraphDef"]()
        try:
            graph.ParseFromString(data)
        except DecodeError as e:  # which node: each parsed alone (protobuf's message names none)
            nodes = (field for field in _top_level(data) if field[1] == 1)
            for i, (at, _, start, end) in enumerate(nodes):
                try:
                    _messages()["NodeDef"]().ParseFromString(data[start:end])
                except DecodeError as e_node:
                    raise _Malformed(f"node {i} at byte {at}: the protobuf parser refused it ({first_line(e_node)})"
                                     ) from None
            raise _Malformed(f"the protobuf parser refused it ({first_line(e)})") from None
        budget = _Budget(len(data) + SPLAT_ALLOWANCE)
        return Graph([_node(n, budget, i) for i, n in enumerate(graph.node)], where)
    except _Malformed as e:
        raise CheckpointError(f"cannot read {where} as a TensorFlow GraphDef (truncated or not a frozen graph?): "
                              f"{e}") from None


def read_graph(source: str | os.PathLike | bytes | bytearray | memoryview) -> Graph:
    """The nodes of a TensorFlow frozen ``GraphDef`` (a ``.pb`` path or its bytes), tensors not decoded.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for anything that is not a
    well-formed GraphDef within the reader's bounds (see the module docstring).
    """
    return _read(*_source_bytes(source))
