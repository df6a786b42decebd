"""A TensorFlow ``GraphDef`` (a frozen ``.pb`` graph) read without TensorFlow: a small
protocol-buffer wire-format decoder, written with the standard library, for the few
messages a frozen graph is made of. Enough to take the weights out of a graph (the ``Const``
nodes) and to read the attributes of its ops; the graph is never executed.

    graph = read_graph_def(path)          # -> {node name: Node}
    weights = const_arrays(graph)         # -> {node name: numpy array} of every Const node

What is decoded (field numbers from tensorflow/core/framework/*.proto):

- ``GraphDef``: ``node`` (1, repeated ``NodeDef``); ``versions`` and ``library`` skipped;
- ``NodeDef``: ``name`` (1), ``op`` (2), ``input`` (3, repeated), ``device`` (4) skipped,
  ``attr`` (5, map<string, AttrValue>: entries with ``key`` 1 and ``value`` 2);
- ``AttrValue``: ``list`` (1), ``s`` (2), ``i`` (3), ``f`` (4), ``b`` (5), ``type`` (6),
  ``shape`` (7), ``tensor`` (8); a ``ListValue`` has the same numbers (``s`` 2, ``i`` 3,
  ``f`` 4, ``b`` 5, ``type`` 6, ``shape`` 7, ``tensor`` 8), each repeated;
- ``TensorProto``: ``dtype`` (1), ``tensor_shape`` (2), ``tensor_content`` (4, raw
  little-endian bytes), the typed repeated fields ``float_val`` (5), ``double_val`` (6),
  ``int_val`` (7), ``string_val`` (8, a numpy object array of ``bytes``), ``int64_val``
  (10), ``bool_val`` (11);
- ``TensorShapeProto``: ``dim`` (2, each with ``size`` 1), ``unknown_rank`` (3).

Repeated numbers are accepted packed (proto3's default) and unpacked, as any protobuf
parser must. A tensor whose typed field holds fewer values than its shape has elements is
filled with its last value (TensorFlow's rule for splat constants: ``float_val: 0.0`` with
shape [64] is 64 zeros).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Wire types of the protobuf encoding.
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

DT_STRING = 7
# TensorFlow's DataType enum -> numpy dtype, for the types weights and attributes use.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}


class GraphFormatError(ValueError):
    """The bytes are not a GraphDef this reader understands."""


@dataclass
class Node:
    """One ``NodeDef``: ``name``, ``op`` (the op type, e.g. ``Conv2D``), ``inputs`` (names of
    the nodes it reads, ``^name`` for a control input, ``name:1`` for a second output) and
    ``attrs``: attribute name -> its value, already decoded (``str`` for ``s``, ``int``,
    ``float``, ``bool``, a numpy array for ``tensor``, a list of ints (dims, -1 unknown)
    for ``shape``, a list for ``list``)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------- wire format


def read_varint(data: memoryview, position: int) -> tuple[int, int]:
    """The unsigned varint at ``position``: (value, position after it)."""
    value = shift = 0
    while True:
        if position >= len(data):
            raise GraphFormatError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise GraphFormatError("varint longer than 10 bytes")


def signed64(value: int) -> int:
    """A varint read as int64 (negative numbers are encoded in ten bytes, two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(data: memoryview):
    """Yield ``(field number, wire type, value)`` for each field of one message: an ``int``
    for varints, a ``memoryview`` of the bytes for the other wire types (8 bytes for
    fixed64, 4 for fixed32, the payload for length-delimited)."""
    position, end = 0, len(data)
    while position < end:
        key, position = read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, position = read_varint(data, position)
        elif wire_type == LENGTH_DELIMITED:
            length, position = read_varint(data, position)
            if position + length > end:
                raise GraphFormatError(f"field {number} runs past the end of its message")
            value, position = data[position : position + length], position + length
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if position + width > end:
                raise GraphFormatError(f"field {number} runs past the end of its message")
            value, position = data[position : position + width], position + width
        else:  # 3 and 4 are proto2 groups, which no TensorFlow message uses
            raise GraphFormatError(f"unsupported wire type {wire_type} (field {number})")
        yield number, wire_type, value


def repeated_varints(wire_type: int, value) -> list[int]:
    """The values of a repeated varint field: one (unpacked) or a packed run."""
    if wire_type == VARINT:
        return [value]
    values, position = [], 0
    while position < len(value):
        item, position = read_varint(value, position)
        values.append(item)
    return values


def repeated_fixed(wire_type: int, value, fmt: str) -> list:
    """The values of a repeated fixed-width field (``fmt``: ``f`` float, ``d`` double):
    one (unpacked) or a packed run."""
    width = struct.calcsize(fmt)
    if wire_type != LENGTH_DELIMITED:
        return [struct.unpack("<" + fmt, value)[0]]
    if len(value) % width:
        raise GraphFormatError("packed field length is not a multiple of its width")
    return list(struct.unpack(f"<{len(value) // width}{fmt}", value))


# --------------------------------------------------------------------------- messages


def decode_shape(data: memoryview) -> list[int]:
    """A ``TensorShapeProto``: its dims' sizes (-1 unknown); an unknown rank is ``[]``."""
    dims = []
    for number, _, value in iter_fields(data):
        if number == 2:
            size = 0  # proto3 leaves zeros out
            for dim_number, _, dim_value in iter_fields(value):
                if dim_number == 1:
                    size = signed64(dim_value)
            dims.append(size)
    return dims


def decode_tensor(data: memoryview) -> np.ndarray:
    """A ``TensorProto`` as a numpy array of its dtype and shape."""
    dtype_code, shape, content = 0, [], None
    values: list = []
    strings: list[bytes] = []
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            dtype_code = value
        elif number == 2:
            shape = decode_shape(value)
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            values += repeated_fixed(wire_type, value, "f")
        elif number == 6:
            values += repeated_fixed(wire_type, value, "d")
        elif number == 8:
            strings.append(bytes(value))
        elif number in (7, 10, 11):  # int_val (also int8/16, uint8, half bits), int64, bool
            values += [signed64(v) for v in repeated_varints(wire_type, value)]
    count = int(np.prod(shape)) if shape else 1
    if dtype_code == DT_STRING:
        array = np.empty(len(strings), dtype=object)
        array[:] = strings
        return array.reshape(shape) if array.size == count else array
    if dtype_code not in DTYPES:
        raise GraphFormatError(f"tensor of unsupported dtype {dtype_code}")
    dtype = DTYPES[dtype_code]
    if content is not None:
        array = np.frombuffer(content, dtype=dtype)
    elif dtype_code == 19:  # DT_HALF: int_val holds the bit patterns
        array = np.array(values, dtype="<u2").view(dtype)
    else:
        array = np.array(values, dtype=dtype)
    if array.size != count:
        if array.size == 0:
            array = np.zeros(count, dtype)
        elif content is None and array.size < count:
            array = np.concatenate([array, np.full(count - array.size, array[-1], dtype)])
        else:
            raise GraphFormatError(f"tensor holds {array.size} values, its shape {shape} wants {count}")  # fmt: skip
    return array.reshape(shape).copy()  # a copy: writable, not tied to the file's buffer


def decode_list(data: memoryview) -> list:
    """An ``AttrValue.ListValue``: whichever of its repeated fields is set, decoded."""
    items: list = []
    for number, wire_type, value in iter_fields(data):
        if number == 2:
            items.append(bytes(value).decode("utf-8", "replace"))
        elif number == 3:
            items += [signed64(v) for v in repeated_varints(wire_type, value)]
        elif number == 4:
            items += repeated_fixed(wire_type, value, "f")
        elif number == 5:
            items += [bool(v) for v in repeated_varints(wire_type, value)]
        elif number == 6:
            items += repeated_varints(wire_type, value)
        elif number == 7:
            items.append(decode_shape(value))
        elif number == 8:
            items.append(decode_tensor(value))
    return items


def decode_attr_value(data: memoryview) -> object:
    """An ``AttrValue``: the one field set (see ``Node.attrs``); ``None`` for the kinds this
    reader skips (functions, placeholders)."""
    result: object = None
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            result = decode_list(value)
        elif number == 2:
            result = bytes(value).decode("utf-8", "replace")
        elif number == 3:
            result = signed64(value)
        elif number == 4:
            result = repeated_fixed(wire_type, value, "f")[0]
        elif number == 5:
            result = bool(value)
        elif number == 6:
            result = value  # a DataType code
        elif number == 7:
            result = decode_shape(value)
        elif number == 8:
            result = decode_tensor(value)
    return result


def decode_node(data: memoryview) -> Node:
    node = Node(name="", op="")
    for number, _, value in iter_fields(data):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            node.inputs.append(bytes(value).decode())
        elif number == 5:
            key, attr = "", None
            for entry_number, _, entry_value in iter_fields(value):
                if entry_number == 1:
                    key = bytes(entry_value).decode()
                elif entry_number == 2:
                    attr = decode_attr_value(entry_value)
            node.attrs[key] = attr
    return node


def parse_graph_def(data: bytes) -> dict[str, Node]:
    """The nodes of a serialized ``GraphDef``, by name, in the graph's order."""
    nodes: dict[str, Node] = {}
    for number, wire_type, value in iter_fields(memoryview(data)):
        if number == 1:
            if wire_type != LENGTH_DELIMITED:
                raise GraphFormatError("GraphDef.node is not a message")
            node = decode_node(value)
            nodes[node.name] = node
    return nodes


def read_graph_def(path: str | Path) -> dict[str, Node]:
    """``parse_graph_def`` of a ``.pb`` file."""
    return parse_graph_def(Path(path).read_bytes())


def const_arrays(nodes: dict[str, Node], prefix: str = "") -> dict[str, np.ndarray]:
    """The value of every ``Const`` node whose name starts with ``prefix``, by node name."""
    return {
        name: node.attrs["value"]
        for name, node in nodes.items()
        if node.op == "Const" and name.startswith(prefix) and isinstance(node.attrs.get("value"), np.ndarray)
    }  # fmt: skip
