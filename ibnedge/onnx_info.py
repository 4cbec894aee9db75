"""The graph inputs of an ONNX file (names and dimensions) and its ``metadata_props``,
without the ``onnx`` package.

``ibnedge convert`` needs the input's name for the converter's ``input_shape`` setting,
and ``ibnedge`` the model metadata embedded in the file (:mod:`ibnedge.metadata`), on
boxes where only the runtime is installed. An ONNX file is a protobuf ``ModelProto``;
this walks its wire format just far enough: ModelProto.graph (field 7) -> GraphProto.input
(11) -> ValueInfoProto.name (1) / type (2) -> TypeProto.tensor_type (1) -> shape (2) ->
dim (1) -> dim_value (1) | dim_param (2), skipping inputs that are initializers
(GraphProto.initializer, 5 -> TensorProto.name, 8), as files of IR version < 4 list them;
ModelProto.metadata_props (14) -> StringStringEntryProto.key (1) / value (2).
Field numbers: onnx/onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class OnnxFormatError(ValueError):
    """The file is not a readable ONNX model."""


def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def _int64(value: int) -> int:
    """A varint as the int64 it encodes: protobuf writes a negative int64 as its 64-bit two's
    complement (an exporter's ``dim_value: -1`` is 2**64 - 1 on the wire)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _fields(buf: memoryview) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value): an int for varints, a memoryview for bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == _BYTES:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise OnnxFormatError("truncated field %d" % number)
            yield number, wire, buf[pos:pos + size]
            pos += size
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
        else:
            raise OnnxFormatError("unsupported wire type %d" % wire)


def _sub(buf: memoryview, number: int) -> Iterator[memoryview]:
    for n, wire, value in _fields(buf):
        if n == number and wire == _BYTES:
            yield value  # type: ignore[misc]


def _dims(value_info: memoryview) -> List[Union[int, str]]:
    dims = []  # type: List[Union[int, str]]
    for type_proto in _sub(value_info, 2):
        for tensor in _sub(type_proto, 1):
            for shape in _sub(tensor, 2):
                for dim in _sub(shape, 1):
                    entry = "?"  # type: Union[int, str]
                    for n, wire, value in _fields(dim):
                        if n == 1 and wire == _VARINT:
                            entry = _int64(value)  # type: ignore[arg-type]
                        elif n == 2 and wire == _BYTES:
                            entry = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
                    dims.append(entry)
    return dims


def graph_inputs(path: PathLike) -> List[Tuple[str, List[Union[int, str]]]]:
    """[(name, dims)] of the graph's real inputs, in order; a dim is an int (as written: some
    exporters write -1 or 0 for "unknown"), or the name of a symbolic dimension ("N"), or
    "?" when the file leaves it unnamed."""
    path = Path(path)
    try:
        buf = memoryview(path.read_bytes())
        graphs = list(_sub(buf, 7))
        if len(graphs) != 1:
            raise OnnxFormatError("no graph")
        graph = graphs[0]
        initializers = set()
        for tensor in _sub(graph, 5):
            for n, wire, value in _fields(tensor):
                if n == 8 and wire == _BYTES:
                    initializers.add(bytes(value).decode("utf-8", "replace"))  # type: ignore[arg-type]
        inputs = []
        for value_info in _sub(graph, 11):
            names = [bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value_info) if n == 1 and w == _BYTES]  # type: ignore[arg-type]
            if names and names[0] not in initializers:
                inputs.append((names[0], _dims(value_info)))
    except OnnxFormatError as exc:
        raise OnnxFormatError("%s is not a readable ONNX model (%s): export it again" % (path, exc))
    return inputs


def metadata_props(path: PathLike) -> Dict[str, str]:
    """{key: value} of the model's ``metadata_props`` (a repeated key: the last one wins).

    Only the top-level fields are walked, and only ``metadata_props`` entries are read: the
    graph (field 7, the weights) and every other field are skipped by seeking past them, so
    the cost does not grow with the model."""
    path = Path(path)
    props = {}  # type: Dict[str, str]
    try:
        with open(str(path), "rb") as f:
            for entry in _top_level_bytes(f, os.fstat(f.fileno()).st_size, _METADATA_PROPS):
                pair = {n: bytes(v) for n, wire, v in _fields(memoryview(entry)) if wire == _BYTES}  # type: ignore[arg-type]
                try:
                    props[pair.get(1, b"").decode("utf-8")] = pair.get(2, b"").decode("utf-8")
                except UnicodeDecodeError:
                    raise OnnxFormatError("a metadata_props entry is not UTF-8 text")
    except OnnxFormatError as exc:
        raise OnnxFormatError("%s is not a readable ONNX model (%s): export it again" % (path, exc))
    return props


_METADATA_PROPS = 14  # ModelProto.metadata_props


def _stream_varint(f: BinaryIO) -> Optional[int]:
    """The varint at ``f``'s position, or None at the end of the file (before its first byte)."""
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            if shift:
                raise OnnxFormatError("truncated varint")
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def _top_level_bytes(f: BinaryIO, size: int, number: int) -> Iterator[bytes]:
    """The payloads of the length-delimited top-level fields ``number`` of the message that
    fills ``f`` (``size`` bytes); every other field is skipped without being read."""
    while True:
        key = _stream_varint(f)
        if key is None:
            return
        field_number, wire = key >> 3, key & 7
        if wire == _VARINT:
            if _stream_varint(f) is None:
                raise OnnxFormatError("truncated field %d" % field_number)
            continue
        if wire == _BYTES:
            length = _stream_varint(f)
            if length is None:
                raise OnnxFormatError("truncated field %d" % field_number)
        elif wire in (_FIXED64, _FIXED32):
            length = 8 if wire == _FIXED64 else 4
        else:
            raise OnnxFormatError("unsupported wire type %d" % wire)
        if f.tell() + length > size:  # checked before reading: a claimed length is not trusted
            raise OnnxFormatError("truncated field %d" % field_number)
        if wire == _BYTES and field_number == number:
            yield f.read(length)
        else:
            f.seek(length, os.SEEK_CUR)


__all__ = ["OnnxFormatError", "graph_inputs", "metadata_props"]
