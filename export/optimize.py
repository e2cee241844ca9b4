"""Graph optimization with ONNX Runtime's transformer optimizer, before quantization.

The optimizer fuses BERT's subgraphs into ONNX Runtime's contrib ops: ``Attention`` (Q, K and V in one
matmul, softmax and context in one kernel) and ``Gelu`` (the erf subgraph in one op). Fewer, bigger kernels
mean fewer passes over activations, which is where most of a quantized BERT's time goes on a CPU. The fused
fp32 graph is checked against PyTorch like the plain export.

Two fusions are left out, because measured they cost time on ONNX Runtime's CPU provider (1.32, 2 threads,
AMD EPYC, 128 x 384 activations):

- ``SkipLayerNormalization`` (residual add + bias + LayerNorm): 128 us per call, where the ``Add`` and the
  standard ``LayerNormalization`` it replaces take 15 + 37 us (250 against 41 us on one thread). On the
  6-layer e5 student's INT8 file at b1 x s128 that is 12 calls and 14% of the time. The residual ``Add``
  before each LayerNorm is written as a two-input ``Sum`` (the same float additions): ONNX Runtime's own
  load-time ``SkipLayerNormFusion`` matches ``Add`` only, so no runtime (Python, Node, the browser) fuses
  it back, and no session option is needed.
- ``BiasGelu``: the bias goes into the integer GEMM instead (``quantize/integer_matmul.py``), leaving
  ``Gelu`` (82 against 105 us for 128 x 1536).

The embeddings are left unfused (no ``EmbedLayerNormalization``): its INT8 form holds the word table in 8
bits and its QDQ form does not exist (static bundles kept the table in fp32), while an unfused word-embedding
``Gather`` can read a 4-bit table (see quantize/embedding.py). The three Gathers, the Add
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
    options.enable_skip_layer_norm = False  # slower than Add + LayerNormalization on CPU (module docstring)
    options.enable_bias_skip_layer_norm = False
    options.enable_bias_gelu = False  # the INT8 GEMM takes the bias
    model = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,
        use_gpu=False,
        optimization_options=options,
    )
    residual_sums = unfusable_residuals(model.model)
    model.save_model_to_file(str(dst))
    counts = {op: n for op, n in model.get_fused_operator_statistics().items() if op in FUSED_OPS and n}
    log.info("graph optimization: fused %s", ", ".join(f"{n} {op}" for op, n in counts.items()) or "nothing")
    return {
        "tool": "onnxruntime.transformers.optimizer (model_type=bert)",
        "fused_ops": counts,
        "residual_sums": residual_sums,
    }


def unfusable_residuals(model: Any) -> int:
    """Write each ``Add`` of two activations that feeds only a ``LayerNormalization`` (a residual connection,
    and the embeddings' sum) as ``Sum`` (changed in place), so that ONNX Runtime's load-time fusion does not
    turn it into the slow ``SkipLayerNormalization`` (see the module's docstring). Returns how many."""
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    changed = 0
    for node in graph.node:
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or any(i in constants for i in node.input):
            continue
        users = readers.get(node.output[0], [])
        if node.output[0] not in outputs and len(users) == 1 and users[0].op_type == "LayerNormalization":
            node.op_type = "Sum"
            changed += 1
    return changed
