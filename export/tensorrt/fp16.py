"""The fp16 TensorRT file: half precision with fp32 islands, int64 ids in and fp32 outputs kept.

Precision is written into the graph itself, so that TensorRT builds it the same way under both typing
modes: strongly typed (10.x opt-in, the only mode of 11.x, which removed the FP16 builder flag) follows the
graph's types exactly; weakly typed (8.5-10.x, FP16 flag on) may choose fp16 where the graph says fp16 and
keeps the graph's fp32 islands for the layers that need them when the runtime asks it to obey them.

The conversion is ONNX Runtime's ``onnxruntime.transformers.float16`` (the same converter as
``onnxconverter-common``'s, shipped with the onnxruntime package the export stage already needs), with
LayerNormalization and Softmax blocked by op type and the head blocked by node; the attention mask's
``-inf`` is clamped to ``-1e4`` first (:func:`graph.clamp_mask_constants`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mbert_edge_export.tensorrt import graph

log = logging.getLogger(__name__)


def write_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """Write the fp16 file ``dst`` made from the plain fp32 export ``src``; return the graph report (fp32
    islands with their reasons, clamped mask constants, converter)."""
    import onnx
    import onnxruntime
    from onnxruntime.transformers import float16

    model = onnx.load(str(src))
    graph.check_plain(model, src.name)
    graph.inline_identity_initializers(model)
    clamped = graph.clamp_mask_constants(model)
    islands = graph.fp32_islands(model)
    ops = ["LayerNormalization", "Softmax"]
    head = sorted(name for name, why in islands.items() if why == "head")
    quiet = logging.getLogger(float16.__name__)  # it logs whole protobuf nodes at INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *ops],
            node_block_list=head,
        )
    finally:
        quiet.setLevel(level)
    onnx.save(converted, str(dst))
    counts = Counter(islands.values())
    report = {
        "source": f"{src.name} (plain opset-{graph.opset(model)} export, not the ONNX Runtime-fused graph)",
        "converter": f"onnxruntime.transformers.float16 (onnxruntime {onnxruntime.__version__}), keep_io_types",
        "io": "inputs int64 as exported, outputs fp32",
        "fp32_islands": [
            {"kind": kind, "nodes": counts[kind], "reason": graph.FP32_REASONS[kind]}
            for kind in ("LayerNormalization", "Softmax", "head")
            if counts[kind]
        ],
        "fp32_nodes": sorted(islands),
        "mask_constants_clamped": clamped,
    }
    log.info(
        "fp16 TensorRT file: %d fp32 island node(s) (%s), %d mask constant(s) clamped",
        len(islands),
        dict(counts),
        len(clamped),
    )
    return report
