"""``engine.tf_graph``, the GraphDef reader, on a tiny graph built here byte by byte with a
protobuf wire-format encoder of a few lines (field numbers from TensorFlow's .proto files:
see the module's docstring)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from engine.tf_graph import GraphFormatError, const_arrays, parse_graph_def

# ---------------------------------------------------------------- a minimal protobuf encoder


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: ten bytes, two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def int_field(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def bytes_field(number: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return key(number, 2) + varint(len(payload)) + payload


def float_field(number: int, value: float) -> bytes:
    return key(number, 5) + struct.pack("<f", value)


def packed_varints(number: int, values: list[int]) -> bytes:
    return bytes_field(number, b"".join(varint(v) for v in values))


def packed_floats(number: int, values: list[float]) -> bytes:
    return bytes_field(number, struct.pack(f"<{len(values)}f", *values))


def shape(*dims: int) -> bytes:
    return b"".join(bytes_field(2, int_field(1, d)) for d in dims)


def tensor(dtype: int, dims: tuple[int, ...], *fields: bytes) -> bytes:
    return int_field(1, dtype) + bytes_field(2, shape(*dims)) + b"".join(fields)


def attr(name: str, value: bytes) -> bytes:
    return bytes_field(5, bytes_field(1, name) + bytes_field(2, value))


def node(name: str, op: str, inputs: tuple[str, ...] = (), *attrs: bytes) -> bytes:
    body = bytes_field(1, name) + bytes_field(2, op)
    body += b"".join(bytes_field(3, i) for i in inputs)
    body += bytes_field(4, "/device:CPU:0")  # a field the reader skips
    return bytes_field(1, body + b"".join(attrs))


def const(name: str, tensor_bytes: bytes) -> bytes:
    return node(name, "Const", (), attr("value", bytes_field(8, tensor_bytes)))


DT_FLOAT, DT_INT32, DT_STRING, DT_INT64, DT_BOOL = 1, 3, 7, 9, 10
KERNEL = np.arange(2 * 2 * 3 * 4, dtype="<f4").reshape(2, 2, 3, 4) / 7


def tiny_graph() -> bytes:
    return b"".join([
        node("image", "Placeholder", (), attr("dtype", int_field(6, 4)),
             attr("shape", bytes_field(7, shape(-1, -1, -1, 3)))),
        const("net/conv/weights", tensor(DT_FLOAT, (2, 2, 3, 4), bytes_field(4, KERNEL.tobytes()))),
        const("net/bn/gamma", tensor(DT_FLOAT, (4,), packed_floats(5, [1.0, 2.0, 3.0, 4.0]))),
        const("net/bn/beta", tensor(DT_FLOAT, (3,), float_field(5, 0.5), float_field(5, -0.5),
                                    float_field(5, 1.5))),  # unpacked, one value per field
        const("net/bn/splat", tensor(DT_FLOAT, (2, 3), packed_floats(5, [0.25]))),
        const("net/ints", tensor(DT_INT32, (3,), packed_varints(7, [1, -2, 300]))),
        const("net/big", tensor(DT_INT64, (), packed_varints(10, [-(2**40)]))),
        const("net/flags", tensor(DT_BOOL, (2,), packed_varints(11, [1, 0]))),
        const("net/names", tensor(DT_STRING, (2,), bytes_field(8, b"cat"), bytes_field(8, b"dog"))),
        const("other/scalar", tensor(DT_FLOAT, (), packed_floats(5, [3.5]))),
        node("net/conv/Conv2D", "Conv2D", ("image", "net/conv/weights", "^net/bn/gamma"),
             attr("padding", bytes_field(2, "SAME")),
             attr("strides", bytes_field(1, packed_varints(3, [1, 2, 2, 1]))),
             attr("dilations", bytes_field(1, int_field(3, 1) + int_field(3, 1))),  # unpacked
             attr("epsilon", float_field(4, 0.001)),
             attr("offset", int_field(3, -7)),
             attr("use_cudnn", int_field(5, 1)),
             attr("ratios", bytes_field(1, packed_floats(4, [1.0, 0.5])))),
        bytes_field(4, int_field(1, 27)),  # GraphDef.versions: skipped
    ])  # fmt: skip


def test_nodes_ops_inputs_and_attrs():
    nodes = parse_graph_def(tiny_graph())
    assert list(nodes)[0] == "image" and len(nodes) == 11
    assert nodes["image"].op == "Placeholder"
    assert nodes["image"].attrs == {"dtype": 4, "shape": [-1, -1, -1, 3]}
    conv = nodes["net/conv/Conv2D"]
    assert conv.op == "Conv2D"
    assert conv.inputs == ["image", "net/conv/weights", "^net/bn/gamma"]
    assert conv.attrs["padding"] == "SAME"
    assert conv.attrs["strides"] == [1, 2, 2, 1]
    assert conv.attrs["dilations"] == [1, 1]
    assert conv.attrs["epsilon"] == pytest.approx(0.001)
    assert conv.attrs["offset"] == -7
    assert conv.attrs["use_cudnn"] is True
    assert conv.attrs["ratios"] == [1.0, 0.5]


def test_const_tensors():
    values = const_arrays(parse_graph_def(tiny_graph()))
    kernel = values["net/conv/weights"]
    assert kernel.dtype == np.float32 and kernel.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(kernel, KERNEL)
    np.testing.assert_array_equal(values["net/bn/gamma"], [1, 2, 3, 4])
    np.testing.assert_array_equal(values["net/bn/beta"], [0.5, -0.5, 1.5])
    np.testing.assert_array_equal(values["net/bn/splat"], np.full((2, 3), 0.25, np.float32))
    assert values["net/ints"].dtype == np.int32
    np.testing.assert_array_equal(values["net/ints"], [1, -2, 300])
    assert values["net/big"].shape == () and int(values["net/big"]) == -(2**40)
    np.testing.assert_array_equal(values["net/flags"], [True, False])
    assert values["net/names"].tolist() == [b"cat", b"dog"]
    assert float(values["other/scalar"]) == 3.5
    assert set(const_arrays(parse_graph_def(tiny_graph()), prefix="net/bn/")) == {
        "net/bn/gamma", "net/bn/beta", "net/bn/splat",
    }  # fmt: skip


def test_bad_bytes_are_refused():
    graph = tiny_graph()
    with pytest.raises(GraphFormatError, match="runs past the end"):
        parse_graph_def(graph + b"\x0a\x7f")  # a node of 127 bytes, none follow
    with pytest.raises(GraphFormatError, match="truncated varint"):
        parse_graph_def(b"\x0a\x80")
    with pytest.raises(GraphFormatError, match="wire type"):
        parse_graph_def(key(1, 3))
    wrong_size = const("x", tensor(DT_FLOAT, (3,), bytes_field(4, b"\0" * 8)))
    with pytest.raises(GraphFormatError, match="holds 2 values"):
        parse_graph_def(wrong_size)
