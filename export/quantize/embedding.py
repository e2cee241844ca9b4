"""The word-embedding table in 4 bits, read with standard ONNX ops (blocks along hidden).

A multilingual encoder is mostly embedding table: 92 of mBERT-base's 178M parameters, 96 of e5-small's 118M.
In INT8 the table alone is half of mBERT's bundle and 80% of e5-small's. Only the rows of the tokens in a
text are read, so a smaller table costs no compute, and only those rows are dequantized.
Symmetric 4-bit values with one fp32 scale per block of up to 128 values (about 4.25 bits per weight) take
the table from 8 to ~4 bits: measured on e5-small over 200 multilingual sentences, cosine to fp32 0.9960 mean /
0.9896 min with the 4-bit table against 0.9962 / 0.9857 with the int8 one (the encoder's INT8 matmuls
dominate the error), for a bundle of 74 instead of 118 MB. Position and token-type tables (small, and read
for every token) stay as they are.

The table is a ``uint8`` initializer of two values per byte (low nibble first, each stored as value + 8),
and the rows are decoded by a dozen standard ops: ``Gather`` of the packed rows and of their block scales,
``BitShift`` to split the nibbles, ``Concat``, ``Cast``, ``Sub`` 8, ``Mul`` by the scales, ``Reshape``.
ONNX Runtime's ``GatherBlockQuantized`` contrib op, which read these tables before, gives the same numbers
(``(q - 8) * scale`` in float32 either way) but took 390 us for 128 tokens of 384 values on this project's
2-core CPU (4.4% of the 6-layer student's time at b1 x s128; 53 us at s16) against 75 us (17 us) for the
ops; they also run on every runtime that reads ONNX, contrib ops or not.

Some models lose more in the 4-bit table (all-MiniLM-L6-v2, an English model, on multilingual text): when
the accuracy gate's fallback picks the embedding group, the table goes to 8 bits instead — one fp32 scale
per row, read with standard ops (Gather of the int8 rows and of their scales, Cast, Mul).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BITS = 4
BLOCK_SIZES = (128, 64, 32, 16)  # the largest that divides the hidden size; ONNX Runtime needs >= 16


def word_embedding_node(path: Path) -> str | None:
    """Name of the Gather that reads the word-embedding table: the largest 2-D float initializer gathered
    along axis 0. None when the graph has none (e.g. a fused ``EmbedLayerNormalization``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    best, best_size = None, 0
    for node in graph.node:
        if node.op_type != "Gather" or node.input[0] not in shapes or len(shapes[node.input[0]]) != 2:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        size = int(np.prod(shapes[node.input[0]]))
        if axis == 0 and size > best_size:
            best, best_size = node.name, size
    return best


def quantize_blocks(table: np.ndarray, block: int) -> tuple[bytes, np.ndarray]:
    """Symmetric 4-bit values (-8..7) per block of ``block`` values along the last axis: packed bytes (two
    values a byte, low nibble first, each stored as value + 8) and the fp32 scales, shape
    ``(rows, hidden // block)``."""
    rows, hidden = table.shape
    blocks = table.reshape(rows, hidden // block, block)
    scales = np.abs(blocks).max(axis=-1, keepdims=True) / 7.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(blocks / scales), -8, 7).astype(np.int8).reshape(rows, hidden)
    nibbles = (q + 8).astype(np.uint8)
    packed = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)
    return packed.tobytes(), scales.reshape(rows, hidden // block).astype(np.float32)


def compress_word_embedding(path: Path, node_name: str, bits: int = BITS) -> dict[str, Any] | None:
    """Rewrite ``path`` in place: the Gather ``node_name`` reads a 4-bit table (``GatherBlockQuantized``) or,
    with ``bits=8``, an int8 table with a scale per row. Returns what was done, or None when nothing was
    (4 bits and a hidden size with no usable block size)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    index, node = next((i, n) for i, n in enumerate(graph.node) if n.name == node_name)
    init = next(t for t in graph.initializer if t.name == node.input[0])
    table = numpy_helper.to_array(init)
    if bits == 8:
        return _int8_rows(model, index, node, init, table, path)
    block = next((b for b in BLOCK_SIZES if table.shape[1] % b == 0), None)
    if block is None:
        log.info("embedding table %s: hidden size %d has no block size; kept as is", init.name, table.shape[1])
        return None
    packed, scales = quantize_blocks(table.astype(np.float32), block)
    rows, hidden = table.shape
    nodes, inits = _int4_rows(
        node, init.name, np.frombuffer(packed, np.uint8).reshape(rows, hidden // 2), scales, block
    )
    graph.node.remove(node)
    for offset, n in enumerate(nodes):
        graph.node.insert(index + offset, n)
    graph.initializer.remove(init)
    graph.initializer.extend(inits)
    onnx.save_model(model, str(path))
    log.info("embedding table %s %s: 4 bits in blocks of %d", init.name, list(table.shape), block)
    return {"node": node_name, "shape": list(table.shape), "bits": BITS, "block_size": block, "scales": "fp32"}


def _int4_rows(node: Any, name: str, packed: np.ndarray, scales: np.ndarray, block: int) -> tuple[list, list]:
    """The nodes and initializers that read rows of the packed 4-bit table in place of the Gather ``node``:
    ``ids.shape + [hidden]`` floats, ``(nibble - 8) * scale``, for ids of any rank."""
    from onnx import helper, numpy_helper

    rows, half = packed.shape
    hidden, blocks = 2 * half, scales.shape[1]
    out, ids, p = node.output[0], node.input[1], node.name
    c = {
        "four": np.array(4, np.uint8),
        "eight": np.array(8.0, np.float32),
        "last": np.array([-1], np.int64),
        "blocks": np.array([blocks, block], np.int64),
        "hidden": np.array([hidden], np.int64),
    }
    inits = [
        numpy_helper.from_array(packed, name + "_uint4x2"),
        numpy_helper.from_array(scales.reshape(rows, blocks, 1), name + "_scales"),
        *(numpy_helper.from_array(v, f"{p}/{k}") for k, v in c.items()),
    ]

    def op(kind: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        return helper.make_node(kind, inputs, [output], name=f"{p}/{output.rsplit('/', 1)[-1]}", **attrs)

    nodes = [
        helper.make_node("Gather", [name + "_uint4x2", ids], [p + "/packed"], name=p),
        op("BitShift", [p + "/packed", p + "/four"], p + "/high", direction="RIGHT"),
        op("BitShift", [p + "/packed", p + "/four"], p + "/low_up", direction="LEFT"),
        op("BitShift", [p + "/low_up", p + "/four"], p + "/low", direction="RIGHT"),
        op("Unsqueeze", [p + "/low", p + "/last"], p + "/low1"),
        op("Unsqueeze", [p + "/high", p + "/last"], p + "/high1"),
        op("Concat", [p + "/low1", p + "/high1"], p + "/nibbles", axis=-1),
        op("Cast", [p + "/nibbles"], p + "/nibbles_f", to=1),
        op("Sub", [p + "/nibbles_f", p + "/eight"], p + "/values"),
        op("Shape", [ids], p + "/ids_shape"),
        op("Concat", [p + "/ids_shape", p + "/blocks"], p + "/block_shape", axis=0),
        op("Reshape", [p + "/values", p + "/block_shape"], p + "/value_blocks"),
        op("Gather", [name + "_scales", ids], p + "/block_scales"),
        op("Mul", [p + "/value_blocks", p + "/block_scales"], p + "/scaled"),
        op("Concat", [p + "/ids_shape", p + "/hidden"], p + "/out_shape", axis=0),
        op("Reshape", [p + "/scaled", p + "/out_shape"], out),
    ]
    return nodes, inits


def _int8_rows(model: Any, index: int, node: Any, init: Any, table: np.ndarray, path: Path) -> dict[str, Any]:
    """Symmetric int8 per row; the gathered rows are scaled back with their gathered scales."""
    import onnx
    from onnx import helper, numpy_helper

    scales = np.abs(table).max(axis=1, keepdims=True).astype(np.float32) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(table / scales), -127, 127).astype(np.int8)
    data, scale = numpy_helper.from_array(q, init.name + "_int8"), numpy_helper.from_array(scales, init.name + "_scale")
    out, ids, prefix = node.output[0], node.input[1], node.name
    nodes = [
        helper.make_node("Gather", [data.name, ids], [prefix + "/rows_int8"], name=prefix),
        helper.make_node("Cast", [prefix + "/rows_int8"], [prefix + "/rows"], name=prefix + "/Cast", to=1),
        helper.make_node("Gather", [scale.name, ids], [prefix + "/row_scales"], name=prefix + "/GatherScales"),
        helper.make_node("Mul", [prefix + "/rows", prefix + "/row_scales"], [out], name=prefix + "/Scale"),
    ]
    graph = model.graph
    graph.node.remove(node)
    for offset, n in enumerate(nodes):
        graph.node.insert(index + offset, n)
    graph.initializer.remove(init)
    graph.initializer.extend([data, scale])
    onnx.save_model(model, str(path))
    log.info("embedding table %s %s: int8 with a scale per row", init.name, list(table.shape))
    return {
        "node": node.name,
        "shape": list(table.shape),
        "bits": 8,
        "block_size": int(table.shape[1]),
        "scales": "fp32",
    }
