"""PyTorch model to ONNX with dynamic batch and sequence axes.

We use torch's TorchScript-based exporter (``dynamo=False``): for BERT encoders it gives the plain
MatMul/Softmax/LayerNormalization graph that ONNX Runtime's transformer optimizer knows how to fuse, and
it handles dynamic axes without extra shape hints.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: the opsets that export and run (checked with torch 2.13 and ONNX Runtime 1.32 on a tiny BERT): below 10 torch
#: cannot export BERT's dynamic slices, above 23 torch has no exporter, and the INT8 files for ONNX Runtime (the
#: 4-bit word table's ``Unsqueeze`` with axes as an input) need 13, which --quantize asks of every target (the
#: OpenVINO one was not tried below 13); TensorRT's files need 17 (``tensorrt.graph.MIN_OPSET``)
MIN_OPSET, MAX_OPSET, MIN_INT8_OPSET = 10, 23, 13
ALL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(model) -> list[str]:
    """The inputs the model's forward accepts, among input_ids / attention_mask / token_type_ids."""
    params = inspect.signature(model.forward).parameters
    return [name for name in ALL_INPUTS if name in params]


def output_name(task: str) -> str:
    """The ONNX output: token states for embeddings, logits for the classification heads."""
    return "last_hidden_state" if task == FEATURE_EXTRACTION else "logits"


def export_onnx(model, task: str, path: Path, opset: int = DEFAULT_OPSET) -> tuple[list[str], list[str]]:
    """Export ``model`` for ``task`` to ``path``; return (input names, output names)."""
    import torch

    inputs = model_inputs(model)
    out_name = output_name(task)

    class _Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(inputs, args, strict=True)))
            return out.last_hidden_state if out_name == "last_hidden_state" else out.logits

    vocab = int(model.config.vocab_size)
    batch, seq = 2, 8
    ids = torch.randint(5, max(6, vocab), (batch, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[1, seq - 3 :] = 0  # trace with padding so the mask path is real, not folded away
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    dynamic = {name: {0: "batch", 1: "sequence"} for name in inputs}
    # token states and token logits have a sequence axis; sentence logits do not
    dynamic[out_name] = {0: "batch"} if task == TEXT_CLASSIFICATION else {0: "batch", 1: "sequence"}
    log.info("exporting ONNX (opset %d, inputs %s, output %s)", opset, inputs, out_name)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Wrapper().eval(),
            tuple(feeds[n] for n in inputs),
            str(path),
            input_names=inputs,
            output_names=[out_name],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return inputs, [out_name]
