"""Dynamic INT8: weights quantized once (signed INT8, per output channel), activations at run time.

On the fused graph ONNX Runtime turns ``Attention`` into ``QAttention``, the position and token-type
embedding ``Gather``s into INT8 tables, and the remaining ``MatMul``s into ``DynamicQuantizeMatMul`` after
its own load-time fusion. The word-embedding table is left to quantize/embedding.py (4 bits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def quantize_dynamic(
    src: Path, dst: Path, per_channel: bool = True, nodes_to_exclude: Sequence[str] = ()
) -> dict[str, Any]:
    """Quantize ``src`` into ``dst``; return the settings used."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=list(nodes_to_exclude),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    return {
        "mode": "dynamic",
        "weights": "int8 (signed)",
        "per_channel": per_channel,
        "activations": "uint8, quantized at run time",
        "fp32_nodes": list(nodes_to_exclude),
    }
