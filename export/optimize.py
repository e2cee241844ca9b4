"""Graph optimization with ONNX Runtime's transformer optimizer, before quantization.

The optimizer fuses BERT's subgraphs into ONNX Runtime's contrib ops: ``Attention`` (Q, K and V in one
matmul, softmax and context in one kernel), ``SkipLayerNormalization`` (residual add + LayerNorm) and
``BiasGelu``. Fewer, bigger kernels mean fewer passes over activations, which is where most of a quantized
BERT's time goes on a CPU. The fused fp32 graph is checked against PyTorch like the plain export.

The embeddings are left unfused (no ``EmbedLayerNormalization``): its INT8 form holds the word table in 8
bits and its QDQ form does not exist (static bundles kept the table in fp32), while an unfused word-embedding
``Gather`` can become a 4-bit ``GatherBlockQuantized`` (see quantize/embedding.py). The three Gathers, the Add
and the LayerNormalization it costs run once per call on a few KB of activations.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "LayerNormalization",
)


def optimize_graph(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, Any]:
    """Fuse ``src`` into ``dst``; return a report with the count of each fused op."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    model = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,
        use_gpu=False,
        optimization_options=options,
    )
    model.save_model_to_file(str(dst))
    counts = {op: n for op, n in model.get_fused_operator_statistics().items() if op in FUSED_OPS and n}
    log.info("graph optimization: fused %s", ", ".join(f"{n} {op}" for op, n in counts.items()) or "nothing")
    return {"tool": "onnxruntime.transformers.optimizer (model_type=bert)", "fused_ops": counts}
