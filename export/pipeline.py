"""The export pipeline: source -> ONNX -> parity check -> bundle.

Later steps (distillation, vocabulary trimming, quantization, TensorRT) slot in between the ONNX export
and the bundle writer; each adds model files and a section of the fidelity report.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from pathlib import Path
from typing import Any

from mbert_edge_export import bundle_writer, onnx_export, parity, samples
from mbert_edge_export.errors import ExportError
from mbert_edge_export.sources import load_source
from mbert_edge_export.tokenizer import prepare_for_bundle

from mbert_edge.manifest import FORMAT_VERSION, Manifest

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
STEPS = 4


def _step(n: int, what: str) -> None:
    log.info("[%d/%d] %s", n, STEPS, what)


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {"python": platform.python_version()}
    for dist in ("mbert-edge", "torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def export_bundle(
    source: str,
    output: str | Path,
    task: str | None = None,
    max_length: int | None = None,
    opset: int = onnx_export.DEFAULT_OPSET,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    force: bool = False,
) -> Path:
    """Export ``source`` (``"default"``, a checkpoint directory, or a cached hub id) into a bundle at ``output``.

    Returns the bundle path. Raises an :class:`~mbert_edge_export.errors.ExportError` subclass on failure,
    leaving ``output`` untouched.
    """
    output = Path(output)
    bundle_writer.check_output(output, force)

    _step(1, f"loading {source}")
    loaded = load_source(source, task=task)
    limit = loaded.max_length
    if max_length is not None:
        if not 2 <= max_length <= limit:
            raise ExportError(f"--max-length must be between 2 and the model's limit {limit}, not {max_length}")
        limit = max_length

    with bundle_writer.staging_dir(output) as stage:
        _step(2, "exporting to ONNX")
        inputs, outputs = onnx_export.export_onnx(loaded.model, loaded.task, stage / MODEL_FILE, opset=opset)
        prepare_for_bundle(loaded.tokenizer).save(str(stage / TOKENIZER_FILE))

        _step(3, "checking ONNX against PyTorch on multilingual text")
        parity_report = parity.check_parity(
            loaded.model,
            stage / MODEL_FILE,
            stage / TOKENIZER_FILE,
            loaded.task,
            inputs,
            limit,
            samples.parity_texts(),
            tolerance=tolerance,
        )

        _step(4, f"writing the bundle to {output}")
        fidelity: dict[str, Any] = {"onnx_fp32": parity_report}
        if loaded.tokenizer_check is not None:
            fidelity["tokenizer"] = loaded.tokenizer_check
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            task=loaded.task,
            max_length=limit,
            inputs=inputs,
            outputs=outputs,
            files=[
                bundle_writer.file_entry(
                    stage, MODEL_FILE, "model", backend="onnxruntime", precision="fp32", format="onnx"
                ),
                bundle_writer.file_entry(stage, TOKENIZER_FILE, "tokenizer"),
            ],
            labels=loaded.labels,
            score_function=loaded.score_function,
            embedding=loaded.embedding,
            source=loaded.provenance,
            export={
                "source_spec": source,
                "task": loaded.task,
                "max_length": limit,
                "opset": opset,
                "exporter": "torch.onnx (TorchScript, dynamic batch and sequence axes)",
                "parity_tolerance": tolerance,
                "versions": _versions(),
            },
            fidelity=fidelity,
        )
        return bundle_writer.commit(stage, manifest, output, force)
