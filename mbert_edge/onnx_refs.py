"""Which files an ONNX graph reads its tensors from (external data), found without the ``onnx`` package.

A bundle's checksums cover the files its manifest lists. An ONNX graph may name other files for its tensor data
("external data", by a path relative to the graph); a graph that names any file other than the manifest's
``external_data`` weights file would make the runtime read bytes that no checksum covers. The bundle check
(:meth:`mbert_edge.bundle.Bundle.check_model_references`) uses :func:`external_data_locations` to refuse that.

This walks the protobuf wire format of ``ModelProto`` directly (the runtime does not depend on ``onnx``): the
graph's initializers and sparse initializers, tensors held in node attributes (``Constant``), subgraphs of
control-flow nodes, and the model's local functions. Tensor payloads are skipped, never copied: the file is
memory-mapped, so a graph of several hundred MB is scanned in constant memory.
"""

from __future__ import annotations

import mmap
from pathlib import Path

# field numbers of onnx.proto3 (ONNX IR version 3 and later; stable since then)
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_FUNCTION_NODE = 7
_MAX_DEPTH = 64  # nested subgraphs deeper than this are not a model anyone exports


class OnnxParseError(ValueError):
    """The file is not a well-formed ONNX protobuf."""


def external_data_locations(path: str | Path) -> set[str]:
    """The ``location`` of every external-data tensor in the ONNX file at ``path`` (empty: self-contained).

    Raises :class:`OnnxParseError` when the file is not a well-formed protobuf.
    """
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            raise OnnxParseError("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                found: set[str] = set()
                for field, start, end in _fields(view, 0, len(view)):
                    if field == _MODEL_GRAPH:
                        _graph(view, start, end, found, 0)
                    elif field == _MODEL_FUNCTIONS:
                        _nodes_of(view, start, end, _FUNCTION_NODE, found, 0)
                return found
            finally:
                view.release()


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise OnnxParseError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, pos: int, end: int):
    """Yield (field number, payload start, payload end) of the length-delimited fields in buf[pos:end]."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise OnnxParseError("a field runs past the end of its message")
            yield field, pos, pos + length
            pos += length
        else:
            raise OnnxParseError(f"unsupported wire type {wire}")
    if pos != end:
        raise OnnxParseError("a fixed-size field runs past the end of its message")


def _graph(buf: memoryview, start: int, end: int, found: set[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxParseError("subgraphs nested too deeply")
    for field, s, e in _fields(buf, start, end):
        if field == _GRAPH_INITIALIZER:
            _tensor(buf, s, e, found)
        elif field == _GRAPH_SPARSE_INITIALIZER:
            _sparse(buf, s, e, found)
        elif field == _GRAPH_NODE:
            _node(buf, s, e, found, depth)


def _nodes_of(buf: memoryview, start: int, end: int, node_field: int, found: set[str], depth: int) -> None:
    for field, s, e in _fields(buf, start, end):
        if field == node_field:
            _node(buf, s, e, found, depth)


def _node(buf: memoryview, start: int, end: int, found: set[str], depth: int) -> None:
    for field, s, e in _fields(buf, start, end):
        if field != _NODE_ATTRIBUTE:
            continue
        for afield, a, b in _fields(buf, s, e):
            if afield in (_ATTR_T, _ATTR_TENSORS):
                _tensor(buf, a, b, found)
            elif afield in (_ATTR_G, _ATTR_GRAPHS):
                _graph(buf, a, b, found, depth + 1)
            elif afield in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(buf, a, b, found)


def _sparse(buf: memoryview, start: int, end: int, found: set[str]) -> None:
    for field, s, e in _fields(buf, start, end):
        if field in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(buf, s, e, found)


def _tensor(buf: memoryview, start: int, end: int, found: set[str]) -> None:
    for field, s, e in _fields(buf, start, end):
        if field != _TENSOR_EXTERNAL_DATA:
            continue
        key = value = None
        for efield, a, b in _fields(buf, s, e):
            if efield == _ENTRY_KEY:
                key = bytes(buf[a:b])
            elif efield == _ENTRY_VALUE:
                value = bytes(buf[a:b])
        if key == b"location":
            try:
                found.add((value or b"").decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise OnnxParseError("an external-data location is not UTF-8") from exc
