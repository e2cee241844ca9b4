"""TensorRT-ready ONNX files (``export --target tensorrt --precision fp16|int8``).

Both files start from the plain opset-17 export (``model.onnx``), never from the graph fused into ONNX
Runtime's contrib ops, which TensorRT's ONNX parser cannot read:

* :mod:`.fp16` — half precision with fp32 islands (LayerNorm, softmax, the head), I/O types kept;
* :mod:`.int8` — explicit, symmetric Q/DQ on MatMul/Gemm inputs (per-channel weights, per-tensor activations);
* :mod:`.graph` — what both share: the attention-mask clamp, the checks that mirror TensorRT's parser, the
  optimization profiles recorded in the manifest;
* :mod:`.standin` — ONNX Runtime's CPU provider as the numerical stand-in that the accuracy gate runs at export.

No TensorRT is needed here: engines are built on the device that runs them (``mbert-edge build-engine``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mbert_edge_export.quantize import gate

FP16_FILE = "model.trt-fp16.onnx"
INT8_FILE = "model.trt-int8.onnx"
PRECISIONS = ("fp16", "int8")
FILES = {"fp16": FP16_FILE, "int8": INT8_FILE}
#: oldest TensorRT that parses these files as intended: 8.6 maps opset-17 LayerNormalization to its
#: normalization layer (8.5 decomposes it; see docs/gpu.md)
MIN_TENSORRT = "8.6"
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass
class TensorRTSettings:
    """What the TensorRT stage writes and the ranges its engines will accept."""

    precisions: tuple[str, ...] = ("fp16",)
    max_batch: int = 32
    opt_batch: int = 1
    opt_length: int = 128
    calibration_method: str = "minmax"
    thresholds: gate.Thresholds = field(default_factory=gate.Thresholds)


__all__ = [
    "CALIBRATION_METHODS",
    "FILES",
    "FP16_FILE",
    "INT8_FILE",
    "MIN_TENSORRT",
    "PRECISIONS",
    "TensorRTSettings",
]
