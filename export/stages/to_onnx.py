"""Stage: export the model to ONNX, save the tokenizer, and check the ONNX model against PyTorch."""

from __future__ import annotations

from typing import Any

from mbert_edge_export import onnx_export, parity, samples
from mbert_edge_export.errors import ExportError
from mbert_edge_export.stages.context import MODEL_FILE, TOKENIZER_FILE, ExportContext
from mbert_edge_export.tokenizer import prepare_for_bundle

STEPS = 2


def enabled(ctx: ExportContext) -> bool:
    """Always runs."""
    return True


def check(ctx: ExportContext) -> None:
    """Refuse an ``--opset`` that torch cannot export or that the INT8 step cannot use, before loading anything."""
    from mbert_edge_export.tensorrt import graph

    opset, low, why = ctx.options.opset, onnx_export.MIN_OPSET, ""
    if ctx.options.quantize is not None:
        low, why = onnx_export.MIN_INT8_OPSET, " with --quantize"
    if ctx.options.tensorrt is not None and low < graph.MIN_OPSET:  # LayerNormalization, which TensorRT maps
        low, why = graph.MIN_OPSET, " with --target tensorrt"
    if not low <= opset <= onnx_export.MAX_OPSET:
        raise ExportError(
            f"--opset {opset} is not supported{why}: use {low} to {onnx_export.MAX_OPSET} "
            f"(default {onnx_export.DEFAULT_OPSET})"
        )


def parity_check(ctx: ExportContext) -> dict[str, Any]:
    """The keyword arguments of :func:`parity.check_parity` for this export (all but the ONNX path)."""
    assert ctx.loaded is not None
    return {
        "model": ctx.loaded.model,
        "tokenizer_path": ctx.path(TOKENIZER_FILE),
        "task": ctx.loaded.task,
        "inputs": ctx.inputs,
        "max_length": ctx.max_length,
        "texts": samples.parity_texts(),
        "tolerance": ctx.options.tolerance,
    }


def run(ctx: ExportContext) -> None:
    """Write ``model.onnx`` and ``tokenizer.json``; fail when ONNX and PyTorch disagree."""
    loaded = ctx.loaded
    assert loaded is not None
    ctx.step("exporting to ONNX")
    ctx.inputs, ctx.outputs = onnx_export.export_onnx(
        loaded.model, loaded.task, ctx.path(MODEL_FILE), opset=ctx.options.opset
    )
    # compact JSON: half the size of the pretty-printed file (e5-small trimmed to 8 languages: 6.9 -> 3.5 MB)
    prepare_for_bundle(loaded.tokenizer).save(str(ctx.path(TOKENIZER_FILE)), pretty=False)
    ctx.step("checking ONNX against PyTorch on multilingual text")
    ctx.fidelity["onnx_fp32"] = parity.check_parity(onnx_path=ctx.path(MODEL_FILE), **parity_check(ctx))
    if loaded.tokenizer_check is not None:
        ctx.fidelity["tokenizer"] = loaded.tokenizer_check
    ctx.settings.update(
        {
            "opset": ctx.options.opset,
            "exporter": "torch.onnx (TorchScript, dynamic batch and sequence axes)",
            "parity_tolerance": ctx.options.tolerance,
        }
    )
