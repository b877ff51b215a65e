"""OpenCV ``dnn_superres``'s EDSR files (``EDSR_x2.pb``, ``EDSR_x3.pb``, ``EDSR_x4.pb``) as fastsr networks.

Those files are TensorFlow frozen ``GraphDef`` protobufs (trained by the Saafke/EDSR_Tensorflow project,
distributed through OpenCV's model zoo). :func:`load_opencv_pb` reads one without TensorFlow, checks that
the graph is that EDSR layout, and returns the equivalent fastsr :class:`~fastsr.models.EDSR` (eval mode,
fp32, CPU), which ``fastsr.optimize`` and ``fastsr.upscale`` then run like any other fastsr model.

Why a hand-written protobuf reader. The ``protobuf`` package can parse the wire format, but it needs the
compiled ``GraphDef`` schema (``tensorflow/core/framework/*.proto``), which only TensorFlow and its
satellites ship; vendoring generated ``*_pb2`` modules ties fastsr to the protobuf runtime version they were
generated for (protobuf refuses gencode from another major version), and protobuf's parser itself has no
budget on what a file may make it allocate. The part of the schema a frozen graph needs is small
(``NodeDef`` name / op / input / attr; ``AttrValue``; ``TensorProto``; ``TensorShapeProto``), so this module
reads exactly that, with explicit bounds, and skips every other field:

* varints are at most 10 bytes; every length-delimited field must fit in what is left of its parent;
* nesting is bounded by the schema (at most :data:`MAX_DEPTH` levels; group wire types are refused);
* a tensor's element count comes from its shape and is checked -- dims >= 0, the product at most
  :data:`MAX_ELEMENTS`, ``tensor_content`` exactly ``elements x itemsize`` bytes, no more typed values than
  elements -- before anything is allocated; the elements of all tensors together may take at most the file
  size (plus 1 MiB for the small constants that TensorFlow stores as one value repeated over the shape);
* tensors are decoded lazily, with numpy, from the file's bytes: the reader copies nothing it is not asked for.

Anything truncated, malformed or out of bounds raises :class:`fastsr.CheckpointError` naming the place in
the file; so does a well-formed graph that is not the EDSR layout (other OpenCV models: ESPCN, FSRCNN,
LapSRN), with what was found.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import CheckpointError

__all__ = ["Graph", "Node", "Tensor", "read_graph", "load_opencv_pb", "opencv_pb_state_dict", "OPENCV_BGR_MEAN"]

# Bounds of the reader.
MAX_VARINT_BYTES = 10
MAX_FILE_BYTES = 2**31 - 1  # protobuf's own limit on a serialized message
MAX_DEPTH = 8  # GraphDef > NodeDef > attr entry > AttrValue > ListValue > TensorProto > shape > dim
MAX_ELEMENTS = 2**31  # per tensor
MAX_DIMS = 8
SPLAT_ALLOWANCE = 2**20  # bytes of tensors beyond the file size (constants stored as one repeated value)

# TensorFlow DataType enum values this reader decodes, with their numpy dtype (little-endian).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8 = 1, 2, 3, 4, 5, 6
DT_INT64, DT_BOOL, DT_QINT8, DT_QUINT8, DT_QINT32 = 9, 10, 11, 12, 13
DT_BFLOAT16, DT_QINT16, DT_QUINT16, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 14, 15, 16, 17, 19, 22, 23
_NUMPY = {
    DT_FLOAT: "<f4", DT_DOUBLE: "<f8", DT_INT32: "<i4", DT_UINT8: "u1", DT_INT16: "<i2", DT_INT8: "i1",
    DT_INT64: "<i8", DT_BOOL: "?", DT_QINT8: "i1", DT_QUINT8: "u1", DT_QINT32: "<i4", DT_QINT16: "<i2",
    DT_QUINT16: "<u2", DT_UINT16: "<u2", DT_HALF: "<f2", DT_BFLOAT16: "<u2", DT_UINT32: "<u4", DT_UINT64: "<u8",
}
_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
    9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
    16: "quint16", 17: "uint16", 18: "complex128", 19: "float16", 20: "resource", 21: "variant",
    22: "uint32", 23: "uint64",
}
# TensorProto's typed value fields: field number -> (wire encoding, the dtypes it holds).
_VARINT, _FIXED32, _FIXED64 = "varint", "fixed32", "fixed64"
_TYPED_FIELDS = {
    5: (_FIXED32, {DT_FLOAT}),  # float_val
    6: (_FIXED64, {DT_DOUBLE}),  # double_val
    7: (_VARINT, {DT_INT32, DT_INT16, DT_INT8, DT_UINT8, DT_QINT8, DT_QUINT8, DT_QINT32, DT_QINT16,
                  DT_QUINT16, DT_UINT16}),  # int_val
    10: (_VARINT, {DT_INT64}),  # int64_val
    11: (_VARINT, {DT_BOOL}),  # bool_val
    13: (_VARINT, {DT_HALF, DT_BFLOAT16}),  # half_val (the 16 bits of each value)
    16: (_VARINT, {DT_UINT32}),  # uint32_val
    17: (_VARINT, {DT_UINT64}),  # uint64_val
}


def dtype_name(dtype: Any) -> str:
    return _DTYPE_NAMES.get(dtype, f"DataType {dtype}") if isinstance(dtype, int) else repr(dtype)


def _ints(value: Any) -> list[int] | None:
    """The ints of a list attribute (``AttrValue.list.i``), or None for anything else."""
    return value.get("i") if isinstance(value, dict) else None


class _Malformed(Exception):
    """A wire-format or schema violation; :func:`read_graph` turns it into a CheckpointError."""


# ------------------------------------------------------------------------------------ the wire format


class _Fields:
    """The fields of one message, ``data[start:end]``: ``(number, wire type, value)`` with ``value`` an int
    (varint) or the ``(start, end)`` span of the field's bytes in ``data`` (length-delimited, fixed32,
    fixed64)."""

    def __init__(self, data: memoryview, start: int, end: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _Malformed(f"messages nested deeper than {MAX_DEPTH} levels")
        self.data, self.pos, self.end, self.depth = data, start, end, depth

    def varint(self) -> int:
        data, pos, end = self.data, self.pos, self.end
        result = shift = 0
        for i in range(MAX_VARINT_BYTES):
            if pos >= end:
                raise _Malformed(f"truncated varint at byte {pos}")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                if i == MAX_VARINT_BYTES - 1 and b > 1:
                    raise _Malformed(f"varint over 64 bits at byte {self.pos}")
                self.pos = pos
                return result
            shift += 7
        raise _Malformed(f"varint longer than {MAX_VARINT_BYTES} bytes at byte {self.pos}")

    def __iter__(self):
        while self.pos < self.end:
            at = self.pos
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Malformed(f"field number 0 at byte {at}")
            if wire == 0:
                yield number, wire, self.varint()
            elif wire == 2:
                length = self.varint()
                if length > self.end - self.pos:
                    raise _Malformed(f"field {number} at byte {at} claims {length} bytes; "
                                     f"only {self.end - self.pos} remain in its message")
                start = self.pos
                self.pos += length
                yield number, wire, (start, self.pos)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if size > self.end - self.pos:
                    raise _Malformed(f"truncated fixed{size * 8} field {number} at byte {at}")
                start = self.pos
                self.pos += size
                yield number, wire, (start, self.pos)
            else:  # 3, 4: groups (no GraphDef field is one); 6, 7: not wire types
                raise _Malformed(f"field {number} at byte {at} has wire type {wire}, which a GraphDef never uses")

    def sub(self, span: tuple[int, int]) -> _Fields:
        return _Fields(self.data, span[0], span[1], self.depth + 1)

    def text(self, span: tuple[int, int], what: str) -> str:
        try:
            return bytes(self.data[span[0]:span[1]]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} at byte {span[0]} is not UTF-8 text") from None


def _expect(wire: int, want: int, what: str, at: Any) -> None:
    if wire != want:
        names = {0: "varint", 1: "fixed64", 2: "length-delimited", 5: "fixed32"}
        raise _Malformed(f"{what} is {names.get(wire, wire)}, expected {names[want]} (near byte {at})")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


_VARINT_CHUNK = 1 << 20  # bytes decoded at once: the temporaries stay a few tens of MiB whatever the field size


def _decode_varints(raw: np.ndarray, limit: int, what: str, dtype: Any = np.uint64) -> np.ndarray:
    """A packed run of varints -> values of ``dtype`` (vectorised, in chunks; each varint at most 10 bytes):
    bool is "not zero"; other types keep the low bits of the 64-bit two's complement (TensorFlow's
    truncation of int_val to the tensor's type)."""
    count = int(np.count_nonzero(raw < 0x80))
    if count > limit:
        raise _Malformed(f"{what}: {count} values for {limit} elements")
    if raw.size and raw[-1] >= 0x80:
        raise _Malformed(f"{what}: truncated packed varint")
    dtype = np.dtype(dtype)
    out = np.empty(count, dtype)
    start, done = 0, 0
    while start < raw.size:
        stop = min(raw.size, start + _VARINT_CHUNK)
        chunk = raw[start:stop]
        ends = np.flatnonzero(chunk < 0x80)
        if ends.size == 0:  # 1 MiB without a terminator: longer than any varint
            raise _Malformed(f"{what}: varint longer than {MAX_VARINT_BYTES} bytes")
        chunk = chunk[: ends[-1] + 1]
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        if int(lengths.max()) > MAX_VARINT_BYTES or (chunk[ends[lengths == MAX_VARINT_BYTES]] > 1).any():
            raise _Malformed(f"{what}: varint longer than {MAX_VARINT_BYTES} bytes or over 64 bits")
        pos = (np.arange(chunk.size) - np.repeat(starts, lengths)).astype(np.uint64)
        parts = (chunk.astype(np.uint64) & np.uint64(0x7F)) << (np.uint64(7) * pos)
        # The 7-bit groups do not overlap: their sum is their bitwise or.
        values = np.add.reduceat(parts, starts)
        if dtype == np.bool_:
            values = values != 0
        elif dtype != np.uint64:
            values = values.view(np.int64).astype(dtype, casting="unsafe")
        out[done : done + ends.size] = values
        done += ends.size
        start += chunk.size
    return out


# ------------------------------------------------------------------------------------------ the schema


@dataclass
class Tensor:
    """A ``TensorProto``: dtype, shape and the (not yet decoded) bytes of its values."""

    dtype: int
    shape: tuple[int, ...]
    content: memoryview | None = None  # tensor_content: raw little-endian values
    typed: list[memoryview] = field(default_factory=list)  # the typed field's packed runs / single values
    typed_encoding: str | None = None
    typed_count: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def numpy(self) -> np.ndarray:
        """The values as a numpy array of ``shape`` (a copy, in native byte order). bfloat16 comes back as
        float32; quantized types as their integer storage type."""
        if self.dtype not in _NUMPY:
            raise CheckpointError(f"a {dtype_name(self.dtype)} tensor cannot be decoded")
        np_dtype = np.dtype(_NUMPY[self.dtype])
        n = self.size
        if self.content is not None:
            values = np.frombuffer(self.content, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
        elif self.typed_encoding is None:
            values = np.zeros(n, np_dtype)
        else:
            raw = b"".join(bytes(m) for m in self.typed)
            if self.typed_encoding == _FIXED32:
                values = np.frombuffer(raw, "<f4")
            elif self.typed_encoding == _FIXED64:
                values = np.frombuffer(raw, "<f8")
            else:  # half_val holds the 16 bits of each fp16 / bf16 value
                bits = self.dtype in (DT_HALF, DT_BFLOAT16)
                store = np.dtype(np.uint16) if bits else np_dtype.newbyteorder("=")
                values = _decode_varints(np.frombuffer(raw, np.uint8), n, "typed values", store)
                if self.dtype == DT_HALF:
                    values = values.view(np.float16)
            values = values.astype(np_dtype.newbyteorder("="), copy=False)
            if 0 < values.size < n:  # TensorFlow repeats the last value over the rest of the shape
                values = np.concatenate([values, np.full(n - values.size, values[-1], values.dtype)])
            elif values.size == 0:
                values = np.zeros(n, np_dtype.newbyteorder("="))
        if self.dtype == DT_BFLOAT16:
            values = (values.astype(np.uint32) << 16).view(np.float32)
        if values.size != n:  # guarded at parse time; a last check before the reshape
            raise CheckpointError(f"tensor has {values.size} values for shape {self.shape}")
        return values.reshape(self.shape)


@dataclass
class Node:
    """A ``NodeDef``: name, op, inputs (``"name"``, ``"name:1"``, ``"^control"``) and attributes as Python
    values: bytes (s), int (i, type), float (f), bool (b), tuple of ints or None (shape; None: unknown rank),
    :class:`Tensor` (tensor), or a dict of lists (list)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def data_inputs(self) -> list[str]:
        """The data inputs (no control inputs), as node names (the ``:0`` output index dropped)."""
        out = []
        for s in self.inputs:
            if s.startswith("^"):
                continue
            name, _, index = s.rpartition(":")
            out.append(name if index.isdigit() and name else s)
        return out


@dataclass
class Graph:
    nodes: list[Node]

    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise _Malformed(f"{what}: the tensors' elements add up to more than {self.limit} bytes, more than a "
                             "file of this size can describe")


def _shape(f: _Fields) -> tuple[int, ...] | None:
    dims: list[int] = []
    unknown_rank = False
    for number, wire, value in f:
        if number == 2:  # dim
            _expect(wire, 2, "a shape's dim", value)
            size = 0
            for n2, w2, v2 in f.sub(value):
                if n2 == 1:
                    _expect(w2, 0, "a dim's size", f.pos)
                    size = _signed64(v2)
            dims.append(size)
            if len(dims) > MAX_DIMS:
                raise _Malformed(f"a shape with more than {MAX_DIMS} dims")
        elif number == 3:
            _expect(wire, 0, "a shape's unknown_rank", f.pos)
            unknown_rank = bool(value)
    return None if unknown_rank else tuple(dims)


def _tensor(f: _Fields, budget: _Budget, what: str) -> Tensor:
    dtype, shape = 0, ()
    content = None
    typed: list[memoryview] = []
    typed_field = None
    typed_count = 0
    for number, wire, value in f:
        if number == 1:
            _expect(wire, 0, f"{what}: dtype", f.pos)
            dtype = value
        elif number == 2:
            _expect(wire, 2, f"{what}: tensor_shape", value)
            s = _shape(f.sub(value))
            if s is None:
                raise _Malformed(f"{what}: a constant tensor of unknown rank")
            shape = s
        elif number == 4:
            _expect(wire, 2, f"{what}: tensor_content", value)
            content = f.data[value[0]:value[1]]
        elif number in _TYPED_FIELDS or number in (8, 9, 12, 14, 15):  # 8 string, 9/12 complex, 14/15 handles
            if number not in _TYPED_FIELDS:
                raise _Malformed(f"{what}: field {number} (string, complex or resource values) is not supported")
            if typed_field is not None and number != typed_field:
                raise _Malformed(f"{what}: values in two typed fields ({typed_field} and {number})")
            typed_field = number
            encoding = _TYPED_FIELDS[number][0]
            size = {_FIXED32: 4, _FIXED64: 8}.get(encoding)
            start, stop = value if wire != 0 else (None, None)
            if wire == 2:  # packed
                raw = f.data[start:stop]
                if size is not None:
                    if len(raw) % size:
                        raise _Malformed(f"{what}: packed fixed{size * 8} values of {len(raw)} bytes")
                    typed_count += len(raw) // size
                else:
                    typed_count += int(np.count_nonzero(np.frombuffer(raw, np.uint8) < 0x80))
                typed.append(raw)
            elif (wire == 5 and size == 4) or (wire == 1 and size == 8):
                typed.append(f.data[start:stop])
                typed_count += 1
            elif wire == 0 and size is None:  # one unpacked varint: re-encoded for the packed decoder
                typed.append(memoryview(_encode_varint(value)))
                typed_count += 1
            else:
                raise _Malformed(f"{what}: typed field {number} has wire type {wire}")
    if dtype not in _NUMPY and dtype != 7:
        raise _Malformed(f"{what}: unsupported dtype {dtype_name(dtype)}")
    if any(d < 0 for d in shape):
        raise _Malformed(f"{what}: negative dim in shape {shape}")
    n = 1
    for d in shape:
        n *= d
        if n > MAX_ELEMENTS:
            raise _Malformed(f"{what}: shape {shape} has more than {MAX_ELEMENTS} elements")
    if dtype == 7:  # string tensors: kept as a shape only (their values are never needed)
        return Tensor(dtype, shape)
    itemsize = np.dtype(_NUMPY[dtype]).itemsize
    if content is not None and len(content) > 0:
        if typed:
            raise _Malformed(f"{what}: both tensor_content and typed values")
        if len(content) != n * itemsize:
            raise _Malformed(f"{what}: tensor_content has {len(content)} bytes; a {dtype_name(dtype)} tensor "
                             f"of shape {shape} needs {n * itemsize}")
    else:
        content = None
        if typed_field is not None and dtype not in _TYPED_FIELDS[typed_field][1]:
            raise _Malformed(f"{what}: typed field {typed_field} cannot hold {dtype_name(dtype)} values")
        if typed_count > n:
            raise _Malformed(f"{what}: {typed_count} values for shape {shape} ({n} elements)")
    budget.take(n * itemsize, what)
    return Tensor(dtype, shape, content, typed, _TYPED_FIELDS[typed_field][0] if typed_field else None, typed_count)


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _list_value(f: _Fields, budget: _Budget, what: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for number, wire, value in f:
        if number == 2:
            _expect(wire, 2, f"{what}: list s", value)
            out.setdefault("s", []).append(bytes(f.data[value[0]:value[1]]))
        elif number in (3, 5, 6):  # i, b, type: varints, packed or not
            key = {3: "i", 5: "b", 6: "type"}[number]
            if wire == 0:
                vals = [value]
            else:
                _expect(wire, 2, f"{what}: list {key}", value)
                vals = [int(v) for v in _decode_varints(np.frombuffer(f.data[value[0]:value[1]], np.uint8),
                                                        value[1] - value[0], f"{what}: list {key}")]
            if key == "i":
                vals = [_signed64(v) for v in vals]
            elif key == "b":
                vals = [bool(v) for v in vals]
            out.setdefault(key, []).extend(vals)
        elif number == 4:  # f: floats, packed or not
            if wire == 5:
                out.setdefault("f", []).append(float(np.frombuffer(f.data[value[0]:value[1]], "<f4")[0]))
            else:
                _expect(wire, 2, f"{what}: list f", value)
                raw = f.data[value[0]:value[1]]
                if len(raw) % 4:
                    raise _Malformed(f"{what}: packed floats of {len(raw)} bytes")
                out.setdefault("f", []).extend(float(v) for v in np.frombuffer(raw, "<f4"))
        elif number == 7:
            _expect(wire, 2, f"{what}: list shape", value)
            out.setdefault("shape", []).append(_shape(f.sub(value)))
        elif number == 8:
            _expect(wire, 2, f"{what}: list tensor", value)
            out.setdefault("tensor", []).append(_tensor(f.sub(value), budget, what))
    return out


def _attr_value(f: _Fields, budget: _Budget, what: str) -> Any:
    result: Any = None
    for number, wire, value in f:
        if number == 1:
            _expect(wire, 2, f"{what}: list", value)
            result = _list_value(f.sub(value), budget, what)
        elif number in (2, 9):  # s, placeholder
            _expect(wire, 2, f"{what}: s", value)
            result = bytes(f.data[value[0]:value[1]])
        elif number in (3, 6):  # i, type
            _expect(wire, 0, f"{what}: i", f.pos)
            result = _signed64(value)
        elif number == 4:
            _expect(wire, 5, f"{what}: f", f.pos)
            result = float(np.frombuffer(f.data[value[0]:value[1]], "<f4")[0])
        elif number == 5:
            _expect(wire, 0, f"{what}: b", f.pos)
            result = bool(value)
        elif number == 7:
            _expect(wire, 2, f"{what}: shape", value)
            result = _shape(f.sub(value))
        elif number == 8:
            _expect(wire, 2, f"{what}: tensor", value)
            result = _tensor(f.sub(value), budget, what)
    return result


def _node(f: _Fields, budget: _Budget, index: int) -> Node:
    node = Node(name="", op="")
    for number, wire, value in f:
        if number in (1, 2, 3):
            _expect(wire, 2, f"node {index}: field {number}", value)
            text = f.text(value, f"node {index}'s {('name', 'op', 'input')[number - 1]}")
            if number == 1:
                node.name = text
            elif number == 2:
                node.op = text
            else:
                node.inputs.append(text)
        elif number == 5:  # attr: map<string, AttrValue>, one entry message each
            _expect(wire, 2, f"node {index}: attr", value)
            key, attr = "", None
            entry = f.sub(value)
            for n2, w2, v2 in entry:
                if n2 == 1:
                    _expect(w2, 2, f"node {index}: attr key", v2)
                    key = entry.text(v2, f"node {index}'s attr key")
                elif n2 == 2:
                    _expect(w2, 2, f"node {index}: attr value", v2)
                    attr = _attr_value(entry.sub(v2), budget, f"node {index} ({node.name or '?'}) attr {key!r}")
            node.attrs[key] = attr
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


def read_graph(source: str | os.PathLike | bytes | bytearray | memoryview) -> Graph:
    """The nodes of a TensorFlow frozen ``GraphDef`` (a ``.pb`` path or its bytes), tensors not decoded.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for anything that is not a
    well-formed GraphDef within the reader's bounds (see the module docstring).
    """
    data, where = _source_bytes(source)
    try:
        return _read(data)
    except _Malformed as e:
        raise CheckpointError(f"cannot read {where} as a TensorFlow GraphDef (truncated or not a frozen graph?): {e}") from None


def _read(data: memoryview) -> Graph:
    if len(data) == 0:
        raise _Malformed("the file is empty")
    budget = _Budget(len(data) + SPLAT_ALLOWANCE)
    top = _Fields(data, 0, len(data), 0)
    nodes = []
    for number, wire, value in top:
        if number == 1:
            _expect(wire, 2, "a GraphDef node", value)
            nodes.append(_node(top.sub(value), budget, len(nodes)))
        # 2 library, 3 version, 4 versions: not needed (but well-formed, or the loop above refuses them)
    if not nodes:
        raise _Malformed("no nodes")
    return Graph(nodes)


# ------------------------------------------------------------------------------- the EDSR layout, converted

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


def _summary(counts: dict[str, int], limit: int = 12) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{op} x{n}" for op, n in items[:limit])
    return text + (f", ... ({len(items) - limit} more op types)" if len(items) > limit else "")


class _EDSRWalk:
    """Follows the EDSR chain from the Placeholder to the DepthToSpace, collecting the weights."""

    def __init__(self, graph: Graph) -> None:
        self.nodes = {}
        for n in graph.nodes:
            if n.name in self.nodes:
                raise _LayoutError(f"two nodes are named {n.name!r}")
            self.nodes[n.name] = n
        self.consumers: dict[str, list[Node]] = {}
        for n in graph.nodes:
            for name in n.data_inputs():
                self.consumers.setdefault(name, []).append(n)
        self.visited: set[str] = set()

    # -- navigation
    def node(self, name: str) -> Node:
        """The node ``name`` names, through Identity nodes."""
        seen = 0
        while True:
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
            seen += 1
            if seen > len(self.nodes):
                raise _LayoutError("a cycle of Identity nodes")

    def users(self, node: Node) -> list[Node]:
        """The nodes that consume ``node``'s output, through Identity nodes."""
        out: list[Node] = []
        stack, seen = [node.name], {node.name}
        while stack:
            for c in self.consumers.get(stack.pop(), []):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if c.op == "Identity":
                    self.visited.add(c.name)
                    stack.append(c.name)
                else:
                    out.append(c)
        return out

    def only_user(self, node: Node, op: str | tuple[str, ...], what: str) -> Node:
        ops = (op,) if isinstance(op, str) else op
        users = self.users(node)
        if len(users) != 1 or users[0].op not in ops:
            found = ", ".join(f"{u.name!r} ({u.op})" for u in users) or "nothing"
            raise _LayoutError(f"{what}: node {node.name!r} should feed exactly one {'/'.join(ops)}; it feeds {found}")
        self.visited.add(users[0].name)
        return users[0]

    def user_of_op(self, node: Node, op: str, what: str) -> Node:
        users = [u for u in self.users(node) if u.op == op]
        if len(users) != 1:
            raise _LayoutError(f"{what}: node {node.name!r} should feed exactly one {op}; it feeds {len(users)}")
        self.visited.add(users[0].name)
        return users[0]

    # -- values
    def const(self, name: str, what: str, *, dequantize: bool = True) -> np.ndarray:
        """A float constant: a float Const, or (``dequantize``) a quint8 Const through Dequantize (MIN_FIRST)."""
        n = self.node(name)
        if n.op == "Const":
            value = self._tensor(n, what)
            if value.dtype.kind != "f":
                raise _LayoutError(f"{what}: Const {n.name!r} holds {value.dtype} values, not floats")
            return value.astype(np.float32)
        if n.op == "Dequantize" and dequantize:
            return self._dequantize(n, what)
        raise _LayoutError(f"{what}: {n.name!r} is a {n.op}, not a constant")

    def _tensor(self, n: Node, what: str) -> np.ndarray:
        t = n.attrs.get("value")
        if not isinstance(t, Tensor):
            raise _LayoutError(f"{what}: Const {n.name!r} has no tensor value")
        try:
            return t.numpy()
        except CheckpointError as e:
            raise _LayoutError(f"{what}: Const {n.name!r}: {e}") from None

    def _dequantize(self, n: Node, what: str) -> np.ndarray:
        """TensorFlow's Dequantize, mode MIN_FIRST, quint8 -- as OpenCV's TF importer evaluates it:
        ``q * step + step * round(min / step)`` with ``step = (max - min) / 255`` in float32 (min rounded to a
        whole number of steps, so that 0.0 is exactly representable)."""
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
        q = self._tensor(q_node, what)
        bounds = []
        for name in ins[1:]:
            b = self.const(name, what, dequantize=False)
            if b.size != 1 or not np.isfinite(b).all():
                raise _LayoutError(f"{what}: Dequantize {n.name!r} range input {name!r} is not one finite float")
            bounds.append(np.float32(b.reshape(())))
        lo, hi = bounds
        if hi < lo:
            raise _LayoutError(f"{what}: Dequantize {n.name!r} has max {hi} < min {lo}")
        if hi == lo:
            return np.full(q.shape, lo, np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # extreme ranges give inf: refused by conv()
            step = np.float32((hi - lo) / np.float32(255))
            offset = np.float32(step * np.round(np.float32(lo / step)))
            return q.astype(np.float32) * step + offset  # float32, as OpenCV's convertTo computes it

    # -- the layers
    def conv(self, conv: Node, src: Node, c_in: int | None, what: str) -> tuple[np.ndarray, np.ndarray, Node]:
        """(OIHW weight, bias, the bias-add node) of a 3x3 SAME stride-1 Conv2D reading ``src``."""
        if conv.op != "Conv2D":
            raise _LayoutError(f"{what}: expected a Conv2D, found {conv.name!r} ({conv.op})")
        ins = conv.data_inputs()
        if len(ins) != 2 or self.node(ins[0]) is not src:
            raise _LayoutError(f"{what}: Conv2D {conv.name!r} should read {src.name!r} and a weight")
        attrs = conv.attrs
        checks = [
            ("padding", attrs.get("padding"), b"SAME"),
            ("data_format", attrs.get("data_format", b"NHWC"), b"NHWC"),
            ("strides", _ints(attrs.get("strides")), [1, 1, 1, 1]),
            ("dilations", _ints(attrs.get("dilations", {"i": [1, 1, 1, 1]})), [1, 1, 1, 1]),
        ]
        for name, got, want in checks:
            if got != want:
                raise _LayoutError(f"{what}: Conv2D {conv.name!r} has {name} {got!r}, expected {want!r}")
        w = self.const(ins[1], what)
        if w.ndim != 4 or w.shape[:2] != (3, 3) or (c_in is not None and w.shape[2] != c_in):
            want_in = "C_in" if c_in is None else str(c_in)
            raise _LayoutError(f"{what}: Conv2D {conv.name!r} has a weight of shape {w.shape}, expected "
                               f"(3, 3, {want_in}, C_out) (HWIO)")
        add = self.only_user(conv, _ADDS, f"{what} bias")
        other = [i for i in add.data_inputs() if self.node(i) is not conv]
        if len(add.data_inputs()) != 2 or len(other) != 1:
            raise _LayoutError(f"{what}: {add.op} {add.name!r} should add a bias to {conv.name!r}")
        if add.op == "BiasAdd" and add.attrs.get("data_format", b"NHWC") != b"NHWC":
            raise _LayoutError(f"{what}: BiasAdd {add.name!r} is not NHWC")
        b = self.const(other[0], f"{what} bias")
        c_out = w.shape[3]
        if b.shape != (c_out,):
            raise _LayoutError(f"{what}: bias {other[0]!r} has shape {b.shape}, expected ({c_out},)")
        for name, value in (("weight", w), ("bias", b)):
            if not np.isfinite(value).all():
                raise _LayoutError(f"{what}: the {name} of {conv.name!r} has NaN or infinite values")
        self.visited.add(conv.name)
        return np.ascontiguousarray(w.transpose(3, 2, 0, 1)), b, add

    def add_of(self, a: Node, b: Node, what: str) -> Node:
        """The Add node whose two inputs are ``a`` and ``b`` (either order)."""
        add = self.only_user(a, ("Add", "AddV2"), what)
        ins = [self.node(i) for i in add.data_inputs()]
        if len(ins) != 2 or {id(x) for x in ins} != {id(a), id(b)}:
            raise _LayoutError(f"{what}: {add.op} {add.name!r} should add {a.name!r} and {b.name!r}")
        return add


def _walk(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(EDSRConfig fields, OIHW weights and biases in TensorFlow's channel orders) of the EDSR chain."""
    walk = _EDSRWalk(graph)
    inputs = [n for n in graph.nodes if n.op == "Placeholder"]
    image = inputs[0]
    walk.visited.add(image.name)
    if image.attrs.get("dtype", DT_FLOAT) != DT_FLOAT:
        raise _LayoutError(f"the input {image.name!r} is {dtype_name(image.attrs['dtype'])}, not float32")
    weights: dict[str, np.ndarray] = {}

    w, b, head = walk.conv(walk.user_of_op(image, "Conv2D", "head"), image, 3, "head")
    n_feats = w.shape[0]
    weights["head.0.weight"], weights["head.0.bias"] = w, b
    x, blocks, scales, seen = head, 0, set(), {head.name}
    while True:
        what = f"block {blocks}"
        conv1 = walk.user_of_op(x, "Conv2D", what)
        w1, b1, a1 = walk.conv(conv1, x, n_feats, what)
        if w1.shape[0] != n_feats:
            raise _LayoutError(f"{what}: Conv2D {conv1.name!r} has {w1.shape[0]} outputs, expected {n_feats}")
        nxt = walk.users(a1)
        if len(nxt) == 1 and nxt[0].op == "Relu":
            relu = walk.only_user(a1, "Relu", what)
            w2, b2, a2 = walk.conv(walk.only_user(relu, "Conv2D", what), relu, n_feats, what)
            if w2.shape[0] != n_feats:
                raise _LayoutError(f"{what}: its second Conv2D has {w2.shape[0]} outputs, expected {n_feats}")
            mul = walk.only_user(a2, "Mul", what)
            factor = [i for i in mul.data_inputs() if walk.node(i) is not a2]
            if len(mul.data_inputs()) != 2 or len(factor) != 1:
                raise _LayoutError(f"{what}: Mul {mul.name!r} should scale {a2.name!r} by a constant")
            s = walk.const(factor[0], f"{what} residual scale")
            if s.size != 1 or not np.isfinite(s).all() or float(s.reshape(())) <= 0:
                raise _LayoutError(f"{what}: the residual scale {factor[0]!r} is not one finite positive float")
            scales.add(float(s.reshape(())))
            weights[f"body.{blocks}.body.0.weight"], weights[f"body.{blocks}.body.0.bias"] = w1, b1
            weights[f"body.{blocks}.body.2.weight"], weights[f"body.{blocks}.body.2.bias"] = w2, b2
            x = walk.add_of(mul, x, f"{what} residual")
            if x.name in seen:
                raise _LayoutError(f"the graph has a cycle through {x.name!r}")
            seen.add(x.name)
            blocks += 1
            continue
        # The body's closing conv, with the global skip from the head.
        skip = walk.add_of(a1, head, "global skip")
        weights[f"body.{blocks}.weight"], weights[f"body.{blocks}.bias"] = w1, b1
        break
    if blocks == 0:
        raise _LayoutError("the graph has no residual blocks")
    if len(scales) != 1:
        raise _LayoutError(f"the residual blocks scale by different factors: {sorted(scales)}")

    wt, bt, at = walk.conv(walk.only_user(skip, "Conv2D", "tail"), skip, n_feats, "tail")
    shuffle = walk.only_user(at, "DepthToSpace", "tail")
    s = shuffle.attrs.get("block_size")
    if isinstance(s, bool) or not isinstance(s, int) or s < 2 or s > 16:
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
        values = walk._tensor(perm, "output Transpose") if perm is not None and perm.op == "Const" else None
        if values is None or values.tolist() != [0, 3, 1, 2]:
            raise _LayoutError(f"the final Transpose {out[0].name!r} should permute NHWC to NCHW (0, 3, 1, 2)")
    stray = [n for n in graph.nodes if n.op != "Const" and n.name not in walk.visited]
    if stray:
        listed = ", ".join(f"{n.name!r} ({n.op})" for n in stray[:8])
        raise _LayoutError(f"{len(stray)} nodes are not part of the chain: {listed}")
    res_scale = float(str(np.float32(scales.pop())))  # float32's shortest decimal: 0.1, not 0.10000000149
    fields = dict(n_resblocks=blocks, n_feats=n_feats, n_colors=3, scale=s, res_scale=res_scale,
                  tail="conv-shuffle")
    return fields, weights


def _tf_to_fastsr_order(weights: dict[str, np.ndarray], scale: int) -> dict[str, np.ndarray]:
    """BGR -> RGB at both ends, and TensorFlow's DepthToSpace channel order -> PyTorch's PixelShuffle order.

    The head reads BGR: its input channels are reversed. The tail conv's output channel ``(i s + j) C + c``
    (DepthToSpace, NHWC: ``out[h s + i, w s + j, c] = in[h, w, (i s + j) C + c]``, c in BGR order) becomes
    channel ``c' s^2 + i s + j`` (PixelShuffle: ``out[c', h s + i, w s + j] = in[c' s^2 + i s + j]``) with
    ``c' = 2 - c`` in RGB order.
    """
    out = dict(weights)
    out["head.0.weight"] = np.ascontiguousarray(weights["head.0.weight"][:, ::-1])
    colors, s2 = 3, scale * scale
    m = np.arange(colors * s2)
    rgb, phase = m // s2, m % s2
    source = phase * colors + (colors - 1 - rgb)  # torch channel m <- TensorFlow channel source[m]
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

    data, where = _source_bytes(source)
    try:
        graph = _read(data)
    except _Malformed as e:
        raise CheckpointError(f"cannot read {where} as a TensorFlow GraphDef (truncated or not a frozen graph?): {e}") from None
    counts = graph.op_counts()
    n_conv, n_d2s, n_in = counts.get("Conv2D", 0), counts.get("DepthToSpace", 0), counts.get("Placeholder", 0)
    other = sorted(set(counts) - _ALLOWED_OPS)
    if other or n_in != 1 or n_d2s != 1 or n_conv < 5 or n_conv % 2 == 0:
        why = f"it has op types EDSR has not: {', '.join(other[:8])}; " if other else ""
        raise CheckpointError(
            f"{where} is not an OpenCV EDSR graph: found {n_conv} Conv2D ops, {n_d2s} DepthToSpace, "
            f"{n_in} Placeholder ({len(graph.nodes)} nodes: {_summary(counts)}); {why}{EXPECTED_LAYOUT}"
        )
    try:
        fields, weights = _walk(graph)
    except _LayoutError as e:
        raise CheckpointError(f"{where} is not an OpenCV EDSR graph: {e}; {EXPECTED_LAYOUT}") from None
    del graph, data  # the tensors are decoded: the file's bytes can go
    weights = _tf_to_fastsr_order(weights, fields["scale"])
    fields["rgb_mean"] = tuple(m / 255.0 for m in reversed(OPENCV_BGR_MEAN))
    fields["rgb_std"] = (1.0, 1.0, 1.0)
    fields["rgb_range"] = 255.0
    return fields, {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}


def load_opencv_pb(source: str | os.PathLike | bytes | bytearray | memoryview, **overrides: Any):
    """The fastsr :class:`~fastsr.models.EDSR` (eval mode, fp32, CPU) of an OpenCV ``dnn_superres`` EDSR file
    (``EDSR_x2.pb``, ``EDSR_x3.pb``, ``EDSR_x4.pb``), given as a path or as the file's bytes.

    The model takes and returns RGB (NCHW float in [0, 255], like every fastsr model): ``fastsr.upscale(rgb,
    s, model=model)`` gives what ``DnnSuperResImpl.upsample`` gives for the same image in BGR. ``overrides``
    replace config fields (e.g. ``res_scale``), as in :func:`fastsr.load`.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for a file that is truncated,
    malformed, out of the reader's bounds, or another graph than this EDSR layout (ESPCN, FSRCNN and
    LapSRN files included), with what was found.
    """
    from .models import EDSRConfig, build

    fields, state = opencv_pb_state_dict(source)
    try:
        config = EDSRConfig(**{**fields, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the OpenCV EDSR graph gives an invalid fastsr config: {e}") from e
    model = build(config)
    full = model.state_dict()
    missing = sorted(set(full) - set(state) - {k for k in full if k.startswith(("sub_mean.", "add_mean."))})
    wrong = [k for k, v in state.items() if k not in full or tuple(full[k].shape) != tuple(v.shape)]
    if missing or wrong:
        raise CheckpointError(f"the OpenCV EDSR graph does not fit {config}: missing {missing[:6]}, "
                              f"unexpected or mis-shaped {wrong[:6]}")
    full.update(state)
    model.load_state_dict(full, strict=True)
    return model.eval()
