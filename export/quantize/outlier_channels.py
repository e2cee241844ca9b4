"""Outlier channels of INT8 activations: kept in float32 beside the integer GEMM.

Fixed-range INT8 (:mod:`.fixed_ranges`) gives each quantized activation one uint8 range for the whole tensor.
In BERT-family encoders a few neurons take values far outside everyone else's: in multilingual-e5-small's
feed-forward (the ``Gelu`` output that the second feed-forward matmul reads), one neuron in each of 8 of the
12 layers reaches 11 to 71 on one or two tokens of every text (``<s>``, and in some layers ``</s>``), while
the other 1,535 stay under ~6 (calibration text of 38 languages). With one range per tensor, that one neuron sets the
rounding step of all of them, up to 12 times coarser than they need, and that product was the largest share
of the INT8 file's error (each matmul class quantized alone against fp32, on the teacher: 1 - cosine 0.0019
for the second feed-forward matmul, 0.0009 for the first, 0.0007 for Q/K/V, 0.0003 for the attention output).

Here such channels leave the integer product (the decomposition of LLM.int8(), Dettmers et al. 2022, with
the channels chosen once from calibration text instead of at run time):

    x @ W = x[:, rest] @ W[rest] + x[:, outliers] @ W[outliers]

The outlier rows of ``W`` are zeroed before quantization, so the INT8 path multiplies whatever its saturated
outlier channels hold by 0, and the range of ``x`` is calibrated on the other channels only (the override this
module returns for :func:`.fixed_ranges.make_batch_invariant`). The outlier channels go through a ``Gather``
and a float32 ``MatMul`` of ``k`` rows (k <= :data:`MAX_CHANNELS`), whose result joins the residual ``Sum``
that already adds the product (one more input to it, no extra pass over the activations).

Only products that a residual ``Sum`` adds are split: the attention output and the second feed-forward
matmul. The first feed-forward matmul's input (a LayerNorm output) has outlier channels too (e5-small:
channels 15, 35 and 321, 10 to 44 against ~5-10), but its product goes through ``Gelu``, so its float32 part
would need an ``Add`` over the 4x wider feed-forward activations: measured on a 6-layer student, splitting
those as well took the INT8 file from 3% to 7.5% slower at b32 x s128 for a further 1 - cosine of 0.0002.
Those are reported as ``not_split``. The fused ``Attention``'s input is not a ``MatMul`` here at all.

A channel is an outlier when its largest magnitude on real tokens of calibration text is more than
:data:`RATIO` times that of every channel that is not, at most :data:`MAX_CHANNELS` per tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge_export.quantize import fixed_ranges

log = logging.getLogger(__name__)

#: a channel is an outlier when its largest |value| exceeds RATIO times every remaining channel's (measured on a
#: 6-layer e5 student: 2.0 split 4 products and 4.0 two, for 1 - cosine to fp32 0.0008 against 0.0009, and all
#: in INT8 0.0021; each split costs ~1% at b1 x s128)
RATIO = 4.0
#: at most this many outlier channels per tensor (the float32 side product stays tiny)
MAX_CHANNELS = 4


def outlier_channels(absmax: np.ndarray, ratio: float = RATIO, max_channels: int = MAX_CHANNELS) -> list[int]:
    """Channels whose largest magnitude is above ``ratio`` times that of every channel not picked, largest
    first, at most ``max_channels``. ``absmax``: each channel's largest |value|."""
    order = np.argsort(-absmax, kind="stable")
    picked: list[int] = []
    for i in range(min(max_channels, len(order) - 1)):
        if absmax[order[i]] > ratio * absmax[order[i + 1]]:
            picked = [int(c) for c in order[: i + 1]]  # everything up to the widest gap goes
    return picked


def matmul_sites(model: Any) -> list[Any]:
    """The ``MatMul`` nodes of ``model`` whose second input is a 2-D float initializer (the weight products
    that dynamic INT8 quantizes)."""
    from onnx import TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n.domain in ("", "ai.onnx")
        and n.input[1] in inits
        and len(inits[n.input[1]].dims) == 2
        and inits[n.input[1]].data_type == TensorProto.FLOAT
    ]


def split_outliers(
    src: Path,
    dst: Path,
    batches: Sequence[dict[str, np.ndarray]],
    ratio: float = RATIO,
    max_channels: int = MAX_CHANNELS,
) -> tuple[dict[str, tuple[float, float]], dict[str, Any]]:
    """Write ``src`` (an fp32 graph) to ``dst`` with the outlier input channels of each weight ``MatMul`` taken
    out of its weight and computed in float32 beside it (see the module's docstring); the graph computes the
    same function. Returns the activation ranges to fix for the INT8 file (each split tensor's range over its
    other channels) and a report."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    sites = matmul_sites(model)
    ranges = fixed_ranges.channel_ranges(src, batches, sorted({n.input[0] for n in sites}))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    overrides: dict[str, tuple[float, float]] = {}
    split: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    side_matmuls: list[str] = []  # the float32 side products: dynamic INT8 must leave them alone
    new_nodes: dict[str, list[Any]] = {}  # name of the node to insert after -> nodes
    for node in sites:
        x, w_name = node.input[0], node.input[1]
        if x not in ranges:
            continue
        lo, hi = ranges[x]
        absmax = np.maximum(np.abs(lo), np.abs(hi))
        chans = outlier_channels(absmax, ratio, max_channels)
        if not chans:
            continue
        rest = np.ones(len(absmax), dtype=bool)
        rest[chans] = False
        entry = {
            "matmul": node.name or node.output[0],
            "channels": chans,
            "absmax": [round(float(absmax[c]), 3) for c in chans],
            "others_absmax": round(float(absmax[rest].max()), 3),
        }
        y, anchor = _product_output(node, readers, inits)
        users = readers.get(y, [])
        if y in outputs or len(users) != 1 or users[0].op_type != "Sum":
            skipped.append(entry)  # adding the float32 part would cost a pass of its own: left in INT8
            continue
        tag = f"{entry['matmul']}/outliers"
        users[0].input.append(f"{tag}/product")  # the residual Sum adds it: no extra pass
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        idx = numpy_helper.from_array(np.asarray(chans, dtype=np.int64), f"{tag}/channels")
        rows = numpy_helper.from_array(w[chans], f"{tag}/weight")
        zeroed = w.copy()
        zeroed[chans] = 0.0
        if len(readers.get(w_name, [])) != 1:  # a shared weight: give this MatMul its own copy
            w_name = f"{tag}/rest_weight"
            node.input[1] = w_name
            graph.initializer.append(numpy_helper.from_array(zeroed, w_name))
        else:
            inits[w_name].CopyFrom(numpy_helper.from_array(zeroed, w_name))
        graph.initializer.extend([idx, rows])
        side_matmuls.append(f"{tag}/MatMul")
        new_nodes.setdefault(anchor, []).extend(
            [
                helper.make_node("Gather", [x, idx.name], [f"{tag}/x"], name=f"{tag}/Gather", axis=-1),
                helper.make_node("MatMul", [f"{tag}/x", rows.name], [f"{tag}/product"], name=side_matmuls[-1]),
            ]
        )
        overrides[x] = (float(lo[rest].min()), float(hi[rest].max()))
        split.append(entry)
    if split:
        ordered = []
        for node in graph.node:
            ordered.append(node)
            ordered.extend(new_nodes.get(node.name or node.output[0], []))
        del graph.node[:]
        graph.node.extend(ordered)
    onnx.save_model(model, str(dst), save_as_external_data=True, location=f"{dst.name}.data")
    kept = sum(len(s["channels"]) for s in split)
    log.info("kept %d outlier channels of %d weight matmuls in float32", kept, len(split))
    report = {
        "ratio": ratio,
        "max_channels": max_channels,
        "matmuls": split,
        "not_split": skipped,
        "fp32_matmuls": side_matmuls,
    }
    return overrides, report


def _product_output(node: Any, readers: dict[str, list[Any]], inits: dict[str, Any]) -> tuple[str, str]:
    """The tensor holding ``node``'s product with its bias added, when a bias ``Add`` (of a 1-D constant)
    alone reads it; and the name of the node that writes it (the side product is inserted after it)."""
    y = node.output[0]
    users = readers.get(y, [])
    if len(users) == 1 and users[0].op_type == "Add":
        other = next((i for i in users[0].input if i != y), None)
        if other in inits and len(inits[other].dims) == 1:
            return users[0].output[0], users[0].name or users[0].output[0]
    return y, node.name or y
