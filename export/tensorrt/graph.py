"""What the TensorRT files share: the fp16-safe attention mask, checks that mirror TensorRT's ONNX parser,
the fp32 islands and the optimization profiles.

The checks here are the parser's own assertions, run on CPU with ``onnx`` only, so that a file the parser
would refuse on the device is refused at export instead: only standard-domain ops (ONNX Runtime's contrib
ops such as ``Attention`` or ``SkipLayerNormalization`` have no TensorRT importer), opset 17 or newer with
``LayerNormalization``, and for Q/DQ files int8 with zero points of 0, per-channel scales only on weights.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mbert_edge.manifest import ShapeProfile
from mbert_edge_export.errors import ExportError

log = logging.getLogger(__name__)

#: what the attention mask's "minus infinity" becomes: fp16 holds it (max 65504), softmax still gives
#: exp(-1e4) == 0 for a padded position, and adding it to an fp16 score cannot overflow to -inf
MASK_VALUE = -1.0e4
FP16_MAX = 65504.0
MIN_OPSET = 17
#: ops TensorRT's parser does not import although they are standard ONNX (ONNX Runtime's dynamic INT8 uses them)
UNSUPPORTED_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv")
#: why each kind of node stays in fp32 in the fp16 file (recorded in the fidelity report)
FP32_REASONS = {
    "LayerNormalization": "mean and variance over the hidden size overflow or lose digits in fp16 (BERT's "
    "residual stream reaches values whose squares exceed 65504); TensorRT keeps opset-17 LayerNormalization "
    "accurate only when it runs in fp32",
    "Softmax": "attention probabilities: exp of fp16 scores loses precision for long sequences, and the row sum "
    "over up to max_length positions is more accurate in fp32",
    "head": "the pooling and classification head after the last LayerNorm: a handful of small matmuls, so fp32 "
    "costs nothing and keeps the logits (and the pooled embedding's input) at full precision",
}


def opset(model: Any) -> int:
    """The model's default-domain opset."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def foreign_ops(model: Any) -> list[str]:
    """``domain:op`` of every node TensorRT's parser cannot import: non-standard domains and the integer ops
    of ONNX Runtime's dynamic INT8 (sorted, unique)."""
    bad = {
        f"{n.domain or 'ai.onnx'}:{n.op_type}"
        for n in model.graph.node
        if n.domain not in ("", "ai.onnx") or n.op_type in UNSUPPORTED_OPS
    }
    return sorted(bad)


def check_plain(model: Any, what: str) -> None:
    """Raise :class:`ExportError` when ``model`` cannot be a TensorRT file's source: contrib or integer ops,
    an opset before 17, or a decomposed LayerNorm (no ``LayerNormalization`` node)."""
    bad = foreign_ops(model)
    if bad:
        raise ExportError(
            f"{what} holds ops TensorRT's ONNX parser cannot import: {', '.join(bad)}; the TensorRT files are made "
            "from the plain export, never from a graph fused or quantized for ONNX Runtime"
        )
    if opset(model) < MIN_OPSET:
        raise ExportError(
            f"{what} uses opset {opset(model)}; --target tensorrt needs opset {MIN_OPSET} or newer (its "
            "LayerNormalization op is what TensorRT keeps accurate in fp16): drop --opset or pass --opset 17"
        )
    if not any(n.op_type == "LayerNormalization" for n in model.graph.node):
        raise ExportError(f"{what} has no LayerNormalization node (decomposed LayerNorm); export with opset 17")


def clamp_mask_constants(model: Any, value: float = MASK_VALUE) -> list[dict[str, Any]]:
    """Replace float constants that fp16 cannot hold (-inf, +-3.4e38 from ``torch.finfo(float32).min``, any
    magnitude above 65504) by ``+-|value|``, in place; return what was changed.

    Only scalars and one-element tensors are touched: that is how the exporter writes the attention mask's
    "minus infinity" (``Where(mask, 0, -inf)`` or ``(1 - mask) * finfo.min``); weights are never scalars.
    """
    from onnx import numpy_helper

    changed: list[dict[str, Any]] = []

    def fix(tensor: Any, where: str) -> Any | None:
        arr = numpy_helper.to_array(tensor)
        if arr.dtype.kind != "f" or arr.size != 1:
            return None
        x = float(arr.reshape(-1)[0])
        if np.isfinite(x) and abs(x) <= FP16_MAX:
            return None
        if np.isnan(x):
            return None
        new = np.full(arr.shape, np.copysign(abs(value), x), dtype=arr.dtype)
        changed.append({"tensor": tensor.name or where, "was": str(x), "now": float(new.reshape(-1)[0])})
        return numpy_helper.from_array(new, tensor.name)

    for init in model.graph.initializer:
        new = fix(init, init.name)
        if new is not None:
            init.CopyFrom(new)
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value":
                new = fix(attr.t, node.output[0])
                if new is not None:
                    attr.t.CopyFrom(new)
    if changed:
        log.info("clamped %d attention-mask constant(s) to %g for fp16", len(changed), value)
    return changed


def inline_identity_initializers(model: Any) -> int:
    """Remove ``Identity`` nodes that only rename an initializer (the exporter's way of sharing one tensor),
    pointing their consumers at the initializer itself; return how many were removed.

    Converters decide a tensor's precision by its consumers: behind an Identity, a LayerNorm's gamma would
    pass through fp16 (rounded to 3 digits) before reaching the fp32 LayerNorm.
    """
    inits = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    rename = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs
    }
    if not rename:
        return 0
    keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in rename)]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(rename)


def fp32_islands(model: Any) -> dict[str, str]:
    """Nodes the fp16 file keeps in fp32, by name, with the reason (a key of :data:`FP32_REASONS`):
    every LayerNormalization and Softmax, and the head (every compute node after the last LayerNorm)."""
    nodes = list(model.graph.node)
    islands = {n.name: n.op_type for n in nodes if n.op_type in ("LayerNormalization", "Softmax")}
    last_ln = max((i for i, n in enumerate(nodes) if n.op_type == "LayerNormalization"), default=None)
    if last_ln is not None:
        for n in nodes[last_ln + 1 :]:
            if n.op_type in ("MatMul", "Gemm", "Tanh", "Add", "Gather", "Sigmoid", "Relu", "Erf", "Mul", "Div"):
                islands.setdefault(n.name, "head")
    return islands


def profile(max_batch: int, max_length: int, opt_batch: int = 1, opt_length: int = 128) -> ShapeProfile:
    """The optimization profile every input (batch x sequence) shares: from one token to ``max_length``, one
    text to ``max_batch``, tuned for ``opt_batch`` x ``opt_length`` (capped to the maxima)."""
    if max_batch < 1 or opt_batch < 1 or opt_length < 1:
        raise ExportError("--max-batch, --opt-batch and --opt-length must be positive")
    return ShapeProfile(
        min=(1, 1),
        opt=(min(opt_batch, max_batch), min(opt_length, max_length)),
        max=(max_batch, max_length),
    )


def lint_qdq(model: Any) -> list[str]:
    """Problems TensorRT's parser (or its Q/DQ fusion) would have with the Q/DQ nodes of ``model``: a non-int8
    or non-zero zero point, a per-axis activation scale, a quantized Gather (embeddings) or bias, a
    per-channel weight scale whose length is not the weight's output-channel count. Empty when fine."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    tensors = {**consts, **inits}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems: list[str] = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) < 3 or n.input[2] not in tensors:
            problems.append(f"{n.name}: no constant zero point (TensorRT needs an explicit int8 zero point of 0)")
            continue
        zp = tensors[n.input[2]]
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{n.name}: zero point of type {TensorProto.DataType.Name(zp.data_type)}, not INT8")
        if np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{n.name}: non-zero zero point (TensorRT supports symmetric quantization only)")
        scale = numpy_helper.to_array(tensors[n.input[1]]) if n.input[1] in tensors else None
        on_weight = n.input[0] in inits or (n.op_type == "DequantizeLinear" and _fed_by_weight_q(n, model, inits))
        if scale is not None and scale.size > 1:
            if not on_weight:
                problems.append(f"{n.name}: per-axis scale on an activation (TensorRT: per-tensor only)")
            else:
                w = _weight_of(n, model, inits)
                if w is not None:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                    if w.dims[axis] != scale.size:
                        problems.append(f"{n.name}: {scale.size} scales for {w.dims[axis]} output channels")
        if n.op_type == "DequantizeLinear":
            for c in consumers.get(n.output[0], []):
                if c.op_type == "Gather":
                    problems.append(f"{n.name}: quantizes a Gather's table (embeddings stay unquantized)")
                if c.op_type == "Gemm" and len(c.input) > 2 and c.input[2] == n.output[0]:
                    problems.append(f"{n.name}: quantizes {c.name}'s bias (bias stays unquantized)")
    return problems


def _fed_by_weight_q(dq: Any, model: Any, inits: dict[str, Any]) -> bool:
    return any(
        q.op_type == "QuantizeLinear" and q.output[0] == dq.input[0] and q.input[0] in inits for q in model.graph.node
    )


def _weight_of(n: Any, model: Any, inits: dict[str, Any]) -> Any | None:
    if n.input[0] in inits:
        return inits[n.input[0]]
    for q in model.graph.node:
        if q.op_type == "QuantizeLinear" and q.output[0] == n.input[0] and q.input[0] in inits:
            return inits[q.input[0]]
    return None
