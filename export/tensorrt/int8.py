"""The int8 TensorRT file: explicit quantization (Q/DQ) in the form TensorRT's parser accepts and fuses.

TensorRT 11 accepts only explicit int8 (it removed implicit INT8 and its calibrators), and its parser
requires symmetric quantization: int8 with zero points of 0. The file is made by ONNX Runtime's static
quantizer, which runs on CPU and needs nothing beyond the export stage's packages, with these settings:

* QDQ format, ``QInt8`` activations and weights, ``ActivationSymmetric`` and ``WeightSymmetric``: every zero
  point is an int8 0 (the CPU INT8 recipe uses asymmetric uint8 activations, which TensorRT rejects);
* per-channel weight scales (one per output channel), per-tensor activation scales (TensorRT supports no
  per-axis activation scale);
* only ``MatMul``/``Gemm`` inputs with a constant weight (``MatMulConstBOnly``): the encoder's projections and
  feed-forward layers, nearly all of its work; attention's two activation-by-activation matmuls, softmax,
  LayerNorm, GELU and the embedding Gathers stay in floating point, and biases are not quantized
  (``QuantizeBias`` off);
* weights stay fp32 behind a QuantizeLinear/DequantizeLinear pair (``AddQDQPairToWeight``): the form every
  TensorRT from 8.5 on folds into int8 weights at build time.

NVIDIA's Model Optimizer (``nvidia-modelopt``) applies the same rules, but its ONNX extra pulls
``onnxruntime-gpu`` (which replaces the CPU ``onnxruntime`` package this project pins) and torch >= 2.6, and it
quantizes with random scales when given no calibration data; it is not used (see docs/gpu.md).

The non-quantized part of the graph stays fp32: on TensorRT 8.5-10 (weakly typed, INT8 and FP16 flags on) the
builder runs it in fp16 where faster; strongly typed (TensorRT 11) it runs as written, in fp32.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge_export.errors import ExportError
from mbert_edge_export.quantize import static
from mbert_edge_export.tensorrt import graph

log = logging.getLogger(__name__)

OP_TYPES = ("MatMul", "Gemm")
EXTRA_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "MatMulConstBOnly": True,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": False,
    # inputs only: a Q/DQ on a MatMul's output would sit between it and its bias Add, which TensorRT fuses
    "OpTypesToExcludeOutputQuantization": list(OP_TYPES),
}


def prepare(src: Path, dst: Path) -> dict[str, Any]:
    """Write the plain export ``src`` with its mask constants clamped and shared-initializer Identities
    inlined to ``dst`` (what is quantized); return what changed."""
    import onnx

    model = onnx.load(str(src))
    graph.check_plain(model, src.name)
    inlined = graph.inline_identity_initializers(model)
    clamped = graph.clamp_mask_constants(model)
    onnx.save(model, str(dst))
    return {"mask_constants_clamped": clamped, "identities_inlined": inlined}


def quantizable_nodes(path: Path) -> list[str]:
    """The MatMul/Gemm nodes with a constant weight, in graph order: what :func:`write_int8` quantizes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in OP_TYPES and len(n.input) > 1 and n.input[1] in weights]


def write_int8(
    prepared: Path,
    dst: Path,
    batches: Sequence[dict[str, np.ndarray]],
    method: str = "minmax",
    nodes_to_exclude: Sequence[str] = (),
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Calibrate on ``batches`` and write the Q/DQ file ``dst`` from ``prepared`` (see :func:`prepare`);
    return the recipe. Raises :class:`ExportError` when the result breaks a TensorRT Q/DQ rule."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    calibrate, reader = static.calibration_reader(batches, method)
    extra = dict(EXTRA_OPTIONS)
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with contextlib.ExitStack() as stack:
        work = work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mbert-edge-trt-int8-")))
        work.mkdir(parents=True, exist_ok=True)
        ort_quantize_static(
            str(prepared),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            # by name, not only by op type: MatMulConstBOnly alone does not keep ONNX Runtime's QDQ quantizer off
            # attention's activation-by-activation matmuls
            nodes_to_quantize=[n for n in quantizable_nodes(prepared) if n not in set(nodes_to_exclude)],
            nodes_to_exclude=list(nodes_to_exclude),
            op_types_to_quantize=list(OP_TYPES),
            extra_options=extra,
            calibration_providers=["CPUExecutionProvider"],
            calibration_cache_path=work / f"ranges-{method}.json",
        )
    model = onnx.load(str(dst))
    if _unquantize_other_consumers(model):
        onnx.save(model, str(dst))
    problems = graph.lint_qdq(model) + [f"op {op}" for op in graph.foreign_ops(model)]
    if problems:
        raise ExportError(f"the int8 TensorRT file breaks TensorRT's Q/DQ rules: {'; '.join(problems[:5])}")
    n_q = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    return {
        "mode": "explicit Q/DQ (static)",
        "quantizer": "onnxruntime.quantization.quantize_static",
        "calibration_method": method,
        "calibration_batches": len(batches),
        "weights": "int8, symmetric, per-channel (one scale per output channel), fp32 behind a Q/DQ pair",
        "activations": "int8, symmetric, per-tensor",
        "zero_points": "int8 0 everywhere",
        "quantized_ops": "MatMul/Gemm with a constant weight; bias, embeddings, attention matmuls not quantized",
        "quantize_nodes": n_q,
        "fp32_nodes": list(nodes_to_exclude),
    }


def _unquantize_other_consumers(model: Any) -> int:
    """Point every consumer of a dequantized activation other than a MatMul/Gemm back at the unquantized
    tensor; return how many inputs changed.

    ONNX Runtime's quantizer shares one Q/DQ pair among all consumers of a tensor, so the residual ``Add`` that
    reads the same LayerNorm output as the next layer's projections would read it rounded to int8. TensorRT
    (and the recipe) quantize only the matmuls' inputs: the residual stream stays in floating point.
    """
    quantized_inputs = {
        n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"
    }  # Q output -> its float input
    inits = {i.name for i in model.graph.initializer}
    restore = {
        n.output[0]: quantized_inputs[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in quantized_inputs
        and quantized_inputs[n.input[0]] not in inits
    }
    changed = 0
    for n in model.graph.node:
        if n.op_type in OP_TYPES:
            continue
        for i, name in enumerate(n.input):
            if name in restore:
                n.input[i] = restore[name]
                changed += 1
    return changed
