"""Smoothing of the feed-forward input before INT8 (SmoothQuant, Xiao et al. 2022), for fixed-range INT8.

Fixed-range INT8 (:mod:`.fixed_ranges`) gives each quantized activation one uint8 range for the whole tensor.
The input of the first feed-forward matmul (the attention block's ``LayerNormalization`` output) is the
least even of them: in the 6-layer e5-small students one channel per layer reaches 19 to 31 while the median
channel's largest value is 1.6 to 2.2 (calibration text of 8 languages), so that tensor is rounded about
8 dB coarser (signal to quantization noise 23.7-27.3 dB) than the others (30-34 dB). Its channels are too
many and too close to each other for :mod:`.outlier_channels` (the widest is 2.5-3.4 times the next), and
that module splits only products a residual ``Sum`` adds anyway.

Here the spread moves from the activations into the weights, where per-channel INT8 absorbs it: for a
weight ``MatMul`` reading ``x``,

    x @ W = (x / s) @ (diag(s) W),    s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)

with ``max|x_j|`` from calibration text (real tokens only) and ``max|W_j|`` over the row ``j`` of every weight
that reads ``x``; ``s`` is scaled to a geometric mean of 1. The division is a ``Mul`` by ``1 / s`` on the
matmuls' branch only: the same ``LayerNormalization`` output is also the block's residual, which must stay as it
is (a post-LN encoder cannot fold ``1 / s`` into the ``LayerNormalization``'s scale, which is what SmoothQuant
does in pre-LN models). In float32 the smoothed graph computes what the original does (to rounding); only the
INT8 file's rounding changes. ``alpha = 0.5`` is the paper's default (0.75 measured the same on a student).

Only inputs of weight ``MatMul``s that a ``LayerNormalization`` writes are smoothed. In the fused graph that
is the first feed-forward matmul of each layer; the fused ``Attention`` (Q, K and V) reads a
``LayerNormalization`` output too, but smoothing its input as well removed no more of the students' retrieval
loss (docs/int8.md) and adds a pass per layer.

Measured on the three 6-layer students of ``--preset long`` (docs/int8.md, "Smoothing the feed-forward
input"): 1 - cosine of the INT8 file to its fp32 file 0.00083-0.00103 -> 0.00063-0.00079 on the parallel
sentences, and the cross-lingual retrieval the INT8 file loses against its fp32 file from 0.48-0.94 to
0.11-0.37 points (mean of seven kept languages, 700 sentence pairs each both ways); six ``Mul``s cost about 1-3%.
On the 12-layer teacher the error falls by a third but its retrieval loss does not move.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge_export.quantize import fixed_ranges
from mbert_edge_export.quantize.outlier_channels import matmul_sites

log = logging.getLogger(__name__)

#: SmoothQuant's migration strength: 0 leaves the activations as they are, 1 moves all their spread into the
#: weights
ALPHA = 0.5
#: the ops whose output is smoothed where weight matmuls read it
NORMALIZATIONS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization")


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Per input channel: ``s_j = act_absmax_j^alpha / weight_absmax_j^(1 - alpha)``, scaled to a geometric mean
    of 1; channels where either is 0 (never active, or read by zero weights) keep 1."""
    a = np.asarray(act_absmax, dtype=np.float64)
    w = np.asarray(weight_absmax, dtype=np.float64)
    live = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    s = np.ones_like(a)
    if live.any():
        s[live] = np.power(a[live], alpha) / np.power(w[live], 1.0 - alpha)
        s[live] /= np.exp(np.log(s[live]).mean())
    return s


def _spread(absmax: np.ndarray) -> float:
    """Largest channel maximum over the median one: how much coarser one range makes the typical channel."""
    median = float(np.median(absmax))
    return round(float(absmax.max()) / median, 2) if median > 0 else float("inf")


def smooth(src: Path, dst: Path, batches: Sequence[dict[str, np.ndarray]], alpha: float = ALPHA) -> dict[str, Any]:
    """Write ``src`` (an fp32 graph) to ``dst`` with the input of every weight ``MatMul`` that a normalization
    writes divided by its smoothing scales and the matmuls' weight rows multiplied by them (see the module's
    docstring); the graph computes the same function. Returns a report: ``alpha`` and, per smoothed tensor,
    the matmuls that read it and the spread (largest over median channel maximum) before and after."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    writers = {o: n for n in graph.node for o in n.output}
    sites: dict[str, list[Any]] = {}
    for node in matmul_sites(model):
        writer = writers.get(node.input[0])
        if writer is not None and writer.op_type in NORMALIZATIONS and node.input[0] == writer.output[0]:
            sites.setdefault(node.input[0], []).append(node)
    report: dict[str, Any] = {"alpha": alpha, "tensors": []}
    if not sites:
        onnx.save_model(model, str(dst), save_as_external_data=True, location=f"{dst.name}.data")
        log.info("smoothing: no weight matmul reads a normalization's output")
        return report
    ranges = fixed_ranges.channel_ranges(src, batches, sorted(sites))
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    inserts: dict[str, Any] = {}  # name of the normalization -> the Mul to insert after it
    for k, (x, matmuls) in enumerate(sorted(sites.items())):
        if x not in ranges:
            continue  # no real token reached it
        lo, hi = ranges[x]
        act = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
        weights = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float64) for n in matmuls]
        s = smoothing_scales(act, np.max([np.abs(w).max(1) for w in weights], axis=0), alpha)
        tag = f"{x}/smoothing"
        for j, (node, w) in enumerate(zip(matmuls, weights, strict=True)):
            scaled = numpy_helper.from_array((w * s[:, None]).astype(np.float32), node.input[1])
            if readers.get(node.input[1], 0) > 1:  # a shared weight: give this MatMul its own copy
                scaled.name = f"{tag}/weight_{j}"
                graph.initializer.append(scaled)
                node.input[1] = scaled.name
            else:
                inits[node.input[1]].CopyFrom(scaled)
            node.input[0] = f"{tag}/x"
        inv = numpy_helper.from_array((1.0 / s).astype(np.float32), f"{tag}/inverse_scales")
        graph.initializer.append(inv)
        writer = writers[x]
        inserts[writer.name or writer.output[0]] = helper.make_node(
            "Mul", [x, inv.name], [f"{tag}/x"], name=f"{tag}/Mul_{k}"
        )
        report["tensors"].append(
            {
                "tensor": x,
                "matmuls": [n.name or n.output[0] for n in matmuls],
                "spread_before": _spread(act),
                "spread_after": _spread(act / s),
            }
        )
    ordered = []
    for node in graph.node:
        ordered.append(node)
        if (node.name or node.output[0]) in inserts:
            ordered.append(inserts[node.name or node.output[0]])
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.save_model(model, str(dst), save_as_external_data=True, location=f"{dst.name}.data")
    spreads = [(t["spread_before"], t["spread_after"]) for t in report["tensors"]]
    log.info(
        "smoothed the input of %d normalization-fed weight matmul(s) (alpha %.2f): spread %s",
        sum(len(t["matmuls"]) for t in report["tensors"]),
        alpha,
        ", ".join(f"{a:.1f}->{b:.1f}" for a, b in spreads),
    )
    return report
