"""The export pipeline: an ordered list of stages, each adding files and a section of the fidelity report.

    load_source -> trim_vocabulary -> to_onnx -> sentencepiece_tokenizer -> tensorrt -> quantize
        -> teacher_fidelity -> write_bundle

* ``load_source``: the checkpoint, the embedded default, or a student from ``mbert-edge distill``.
* ``trim_vocabulary`` (``--languages``): fewer vocabulary rows, identical tokenization on kept languages.
* ``to_onnx``: ``model.onnx`` + ``tokenizer.json``, checked against PyTorch.
* ``sentencepiece_tokenizer``: ``tokenizer.model`` for Unigram tokenizers, when it gives the same ids (faster load).
* ``tensorrt`` (``--target tensorrt``): fp16 and/or int8 Q/DQ files for TensorRT from the plain export, gated.
* ``quantize`` (``--quantize``): fused graph, INT8 model, accuracy gate.
* ``teacher_fidelity`` (a student of ``mbert-edge distill``): the shipped files against the original teacher,
  per language, on held-out text (where the teacher can be loaded; ``--skip-teacher-fidelity`` turns it off).
* ``write_bundle``: ``manifest.json`` (checksums, settings of every stage, fidelity), moved into place.

Everything is written into a staging directory beside the output, which only ever holds a complete bundle.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mbert_edge_export import bundle_writer, onnx_export, parity
from mbert_edge_export.quantize.gated import QuantizeSettings
from mbert_edge_export.stages import (
    load_source,
    quantize,
    sentencepiece_tokenizer,
    teacher_fidelity,
    tensorrt,
    to_onnx,
    trim_vocabulary,
    write_bundle,
)
from mbert_edge_export.stages.context import INT8_FILE, MODEL_FILE, TOKENIZER_FILE, ExportContext, ExportOptions
from mbert_edge_export.tensorrt import TensorRTSettings

log = logging.getLogger(__name__)

STAGES = (
    load_source,
    trim_vocabulary,
    to_onnx,
    sentencepiece_tokenizer,
    tensorrt,
    quantize,
    teacher_fidelity,
    write_bundle,
)


def _steps(stage, ctx: ExportContext) -> int:
    return stage.steps(ctx) if hasattr(stage, "steps") else stage.STEPS


def run(options: ExportOptions) -> Path:
    """Run every enabled stage for ``options``; return the bundle path."""
    bundle_writer.check_output(options.output, options.force, source=options.source)
    probe = ExportContext(options, stage_dir=Path(), total_steps=0)
    for stage in STAGES:  # every option is checked before anything slow runs
        if hasattr(stage, "check"):
            stage.check(probe)
    total = sum(_steps(s, probe) for s in STAGES if s.enabled(probe))
    with bundle_writer.staging_dir(options.output) as stage_dir:
        ctx = ExportContext(options, stage_dir=stage_dir, total_steps=total)
        result: Path | None = None
        for i, stage in enumerate(STAGES):
            if stage.enabled(ctx):
                result = stage.run(ctx)
                # what a stage loads can enable later ones (a distilled student's lineage: teacher_fidelity)
                ctx.total_steps = ctx.step_no + sum(_steps(s, ctx) for s in STAGES[i + 1 :] if s.enabled(ctx))
        assert result is not None
        return result


def export_bundle(
    source: str,
    output: str | Path,
    task: str | None = None,
    max_length: int | None = None,
    opset: int = onnx_export.DEFAULT_OPSET,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    force: bool = False,
    quantize: QuantizeSettings | None = None,
    calibration_file: str | Path | None = None,
    calibration_size: int = 128,
    eval_size: int = 128,
    keep_fp32: bool = False,
    languages: str | list[str] | None = None,
    vocab_sources: tuple[str, ...] = ("wordfreq", "dataset-build"),
    vocab_corpus: tuple[str | Path, ...] = (),
    vocab_coverage: float | None = None,
    max_vocab: int | None = None,
    tensorrt: TensorRTSettings | None = None,
    teacher_fidelity: bool = True,
) -> Path:
    """Export ``source`` (``"default"``, a checkpoint directory, or a cached hub id) into a bundle at ``output``.

    With ``languages`` (ISO 639-1 codes) the vocabulary is trimmed to what those languages need (see
    :mod:`mbert_edge_export.trim`). With ``quantize`` the bundle holds ``model.int8.onnx`` (and ``model.onnx``
    too with ``keep_fp32``): for ONNX Runtime (``quantize.target``, the default) the graph is fused by ONNX
    Runtime's transformer optimizer and quantized by ONNX Runtime's quantizer; for OpenVINO the plain graph is
    quantized by NNCF. With ``tensorrt`` the bundle also holds TensorRT-ready files (fp16 and/or int8 Q/DQ,
    made from the plain graph, gated on ONNX Runtime CPU as a stand-in; see :mod:`mbert_edge_export.tensorrt`).
    Either way the INT8 model is checked by the accuracy gate, run by the backend it is made for, on held-out
    text (from ``calibration_file`` or the multilingual sample; labels in the file make the gate report
    accuracy too). A student of ``mbert-edge distill`` is then judged end to end against its original teacher,
    per language (``teacher_fidelity``; skipped with a recorded reason where the teacher cannot be loaded).
    Returns the bundle path. Raises an
    :class:`~mbert_edge_export.errors.ExportError` subclass on failure, leaving ``output`` untouched.
    """
    if isinstance(languages, str):
        languages = [c for c in languages.split(",") if c.strip()] or None
    options = ExportOptions(
        source=source,
        output=Path(output),
        task=task,
        max_length=max_length,
        opset=opset,
        tolerance=tolerance,
        force=force,
        languages=list(languages) if languages else None,
        vocab_sources=tuple(vocab_sources),
        vocab_corpus=tuple(Path(p) for p in vocab_corpus),
        vocab_coverage=vocab_coverage,
        max_vocab=max_vocab,
        quantize=quantize,
        calibration_file=Path(calibration_file) if calibration_file else None,
        calibration_size=calibration_size,
        eval_size=eval_size,
        keep_fp32=keep_fp32,
        tensorrt=tensorrt,
        teacher_fidelity=teacher_fidelity,
    )
    return run(options)


__all__ = [
    "INT8_FILE",
    "MODEL_FILE",
    "STAGES",
    "TOKENIZER_FILE",
    "ExportOptions",
    "TensorRTSettings",
    "export_bundle",
    "run",
]
