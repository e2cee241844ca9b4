"""Stage: list the remaining files, write ``manifest.json`` and move the finished bundle into place."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

from mbert_edge.manifest import FORMAT_VERSION, Manifest
from mbert_edge_export import bundle_writer
from mbert_edge_export.stages.context import MODEL_FILE, TOKENIZER_FILE, ExportContext

STEPS = 1


def enabled(ctx: ExportContext) -> bool:
    """Always runs."""
    return True


def versions() -> dict[str, str]:
    """Python and the versions of the packages that made the bundle."""
    import importlib.metadata

    out = {"python": platform.python_version()}
    for dist in ("mbert-edge", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "wordfreq"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def manifest(ctx: ExportContext) -> Manifest:
    """The bundle's manifest from what the stages recorded."""
    loaded = ctx.loaded
    assert loaded is not None
    if ctx.path(MODEL_FILE).exists():  # fp32, kept or the only model
        ctx.files += bundle_writer.model_entries(
            ctx.stage_dir, MODEL_FILE, backend="onnxruntime", precision="fp32", format="onnx", batch_invariant=True
        )
    ctx.settings.setdefault("quantize", None)
    ctx.settings.setdefault("keep_fp32", True)
    ctx.settings["versions"] = versions()
    return Manifest(
        format_version=FORMAT_VERSION,
        task=loaded.task,
        max_length=ctx.max_length,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
        files=[*ctx.files, bundle_writer.file_entry(ctx.stage_dir, TOKENIZER_FILE, "tokenizer")],
        labels=loaded.labels,
        score_function=loaded.score_function,
        embedding=loaded.embedding,
        source=loaded.provenance,
        export=ctx.settings,
        fidelity=ctx.fidelity,
    )


def run(ctx: ExportContext) -> Path:
    """Write the manifest and commit the staging directory to the output path."""
    ctx.step(f"writing the bundle to {ctx.options.output}")
    return bundle_writer.commit(ctx.stage_dir, manifest(ctx), ctx.options.output, ctx.options.force)
