"""Just enough of the protobuf wire format to read an ONNX file's metadata and graph I/O, without ``onnx``.

An OpenVINO-only or TensorRT-only install has no ``onnx`` package, yet the loader must
read what the export recorded in every graph. :func:`read_onnx_header` skips through
``ModelProto`` (mapped, never copied): field 14 ``metadata_props`` and field 7 ``graph``,
where only ``input`` (11) and ``output`` (12) are decoded, and every initializer and node
is stepped over by its length. Repeated embedded messages merge as protobuf defines
(repeated fields concatenate, the last scalar wins). Tested against onnx's own parser.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Field numbers, from onnx/onnx.proto (stable since IR version 3).
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_INPUT, _GRAPH_OUTPUT = 11, 12
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_ELEM_TYPE, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
#: TensorProto.DataType FLOAT.
FLOAT = 1


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected kind."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: element type (TensorProto.DataType) and dims (int, or str for a symbol)."""

    name: str
    elem_type: int | None
    dims: tuple[int | str | None, ...] | None  # None: no shape recorded


@dataclass(frozen=True)
class OnnxHeader:
    """What the loader needs of an ONNX file: its metadata (key -> every value given) and graph I/O."""

    metadata: dict[str, list[str]]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) of each field of the message in ``buf[start:end]``.

    Varints give their value as the third item; length-delimited fields give the span of their bytes.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
        elif wire == _BYTES:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise ProtobufError(f"field {number} of {length} bytes at byte {pos} runs past its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise ProtobufError(f"truncated fixed-width field {number}")
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            raise ProtobufError(f"unsupported wire type {wire} for field {number} at byte {pos}")


def _text(buf: mmap.mmap | bytes, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError(f"a string field at byte {start} is not UTF-8") from None


def _spans(buf: mmap.mmap | bytes, start: int, end: int, number: int) -> list[tuple[int, int]]:
    """The byte spans of every occurrence of the length-delimited field ``number``."""
    found = []
    for field, wire, a, b in _fields(buf, start, end):
        if field == number:
            if wire != _BYTES:
                raise ProtobufError(f"field {number} has wire type {wire}, expected a message")
            found.append((a, b))
    return found


def _value_info(buf: mmap.mmap | bytes, start: int, end: int) -> TensorInfo:
    name, elem_type, dims, is_tensor = "", None, None, False
    for field, wire, a, b in _fields(buf, start, end):
        if field == _VALUE_NAME and wire == _BYTES:
            name = _text(buf, a, b)
        elif field == _VALUE_TYPE and wire == _BYTES:
            for kind, kind_wire, c, d in _fields(buf, a, b):
                if kind_wire != _BYTES:
                    continue
                is_tensor = kind == _TYPE_TENSOR  # a oneof: the last member given is the one set
                if not is_tensor:
                    continue
                for item, item_wire, e, f in _fields(buf, c, d):
                    if item == _TENSOR_ELEM_TYPE and item_wire == _VARINT:
                        elem_type = e
                    elif item == _TENSOR_SHAPE and item_wire == _BYTES:
                        dims = [] if dims is None else dims
                        for g, h in _spans(buf, e, f, _SHAPE_DIM):
                            dims.append(_dimension(buf, g, h))
    if not is_tensor:
        return TensorInfo(name, None, None)
    return TensorInfo(name, elem_type, None if dims is None else tuple(dims))


def _dimension(buf: mmap.mmap | bytes, start: int, end: int) -> int | str | None:
    value: int | str | None = None
    for field, wire, a, b in _fields(buf, start, end):
        if field == _DIM_VALUE and wire == _VARINT:
            value = a - (1 << 64) if a >= 1 << 63 else a  # int64, two's complement
        elif field == _DIM_PARAM and wire == _BYTES:
            value = _text(buf, a, b)
    return value


def parse_onnx_header(buf: mmap.mmap | bytes) -> OnnxHeader:
    """Metadata and graph I/O of the serialized ``ModelProto`` in ``buf`` (ProtobufError if malformed)."""
    metadata: dict[str, list[str]] = {}
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    graphs = 0
    for field, wire, a, b in _fields(buf, 0, len(buf)):
        if field == _MODEL_METADATA and wire == _BYTES:
            key = value = ""
            for item, item_wire, c, d in _fields(buf, a, b):
                if item == _ENTRY_KEY and item_wire == _BYTES:
                    key = _text(buf, c, d)
                elif item == _ENTRY_VALUE and item_wire == _BYTES:
                    value = _text(buf, c, d)
            metadata.setdefault(key, []).append(value)
        elif field == _MODEL_GRAPH and wire == _BYTES:
            graphs += 1
            for item, item_wire, c, d in _fields(buf, a, b):
                if item in (_GRAPH_INPUT, _GRAPH_OUTPUT) and item_wire == _BYTES:
                    (inputs if item == _GRAPH_INPUT else outputs).append(_value_info(buf, c, d))
    if not graphs:
        raise ProtobufError("no graph (ModelProto field 7)")
    return OnnxHeader(metadata, tuple(inputs), tuple(outputs))


def read_onnx_header(path: str | Path) -> OnnxHeader:
    """:func:`parse_onnx_header` of a file, memory-mapped (the weights are skipped, not read)."""
    with open(path, "rb") as handle:
        if handle.seek(0, 2) == 0:
            raise ProtobufError("the file is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return parse_onnx_header(buf)
