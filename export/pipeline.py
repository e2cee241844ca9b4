"""The export pipeline: source -> ONNX -> parity -> [optimize -> INT8 + accuracy gate] -> bundle.

Later steps (distillation, vocabulary trimming, TensorRT) slot in the same way: each adds model files and
a section of the fidelity report.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mbert_edge.manifest import FORMAT_VERSION, Manifest
from mbert_edge.tokenizer import BundleTokenizer
from mbert_edge_export import bundle_writer, onnx_export, optimize, parity, samples
from mbert_edge_export.errors import ExportError
from mbert_edge_export.quantize import calibration
from mbert_edge_export.quantize.gated import QuantizeSettings, check_settings, quantize_with_gate
from mbert_edge_export.sources import load_source
from mbert_edge_export.tokenizer import prepare_for_bundle

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"


class _Steps:
    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0

    def __call__(self, what: str) -> None:
        self.n += 1
        log.info("[%d/%d] %s", self.n, self.total, what)


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
    quantize: QuantizeSettings | None = None,
    calibration_file: str | Path | None = None,
    calibration_size: int = 128,
    eval_size: int = 128,
    keep_fp32: bool = False,
) -> Path:
    """Export ``source`` (``"default"``, a checkpoint directory, or a cached hub id) into a bundle at ``output``.

    With ``quantize`` the bundle holds ``model.int8.onnx`` (and ``model.onnx`` too with ``keep_fp32``): for
    ONNX Runtime (``quantize.target``, the default) the graph is fused by ONNX Runtime's transformer optimizer
    and quantized by ONNX Runtime's quantizer; for OpenVINO the plain graph is quantized by NNCF. Either
    way the INT8 model is checked by the accuracy gate, run by the backend it is made for, on held-out text
    (from ``calibration_file`` or the multilingual sample; labels in the file make the gate report accuracy
    too). Returns the bundle path. Raises an
    :class:`~mbert_edge_export.errors.ExportError` subclass on failure, leaving ``output`` untouched.
    """
    output = Path(output)
    bundle_writer.check_output(output, force)
    if quantize is not None:
        check_settings(quantize)
    for_openvino = quantize is not None and quantize.target == "openvino"
    step = _Steps(4 + (quantize is not None) + (quantize is not None and not for_openvino))

    step(f"loading {source}")
    loaded = load_source(source, task=task)
    limit = loaded.max_length
    if max_length is not None:
        if not 2 <= max_length <= limit:
            raise ExportError(f"--max-length must be between 2 and the model's limit {limit}, not {max_length}")
        limit = max_length
    texts = None
    if quantize is not None:  # read calibration text early: a bad file should fail before the slow steps
        texts = (
            calibration.read_text_file(Path(calibration_file))
            if calibration_file
            else calibration.corpus_sample(calibration_size + eval_size)
        )

    with bundle_writer.staging_dir(output) as stage:
        step("exporting to ONNX")
        inputs, outputs = onnx_export.export_onnx(loaded.model, loaded.task, stage / MODEL_FILE, opset=opset)
        prepare_for_bundle(loaded.tokenizer).save(str(stage / TOKENIZER_FILE))

        step("checking ONNX against PyTorch on multilingual text")
        check = dict(
            model=loaded.model,
            tokenizer_path=stage / TOKENIZER_FILE,
            task=loaded.task,
            inputs=inputs,
            max_length=limit,
            texts=samples.parity_texts(),
            tolerance=tolerance,
        )
        fidelity: dict[str, Any] = {"onnx_fp32": parity.check_parity(onnx_path=stage / MODEL_FILE, **check)}
        if loaded.tokenizer_check is not None:
            fidelity["tokenizer"] = loaded.tokenizer_check

        model_entries = []
        if quantize is not None:
            assert texts is not None
            config = loaded.model.config
            if for_openvino:  # OpenVINO fuses at compile time; NNCF's patterns need the standard ops
                graph = stage / MODEL_FILE
            else:
                step("fusing the graph with ONNX Runtime's transformer optimizer")
                graph = stage / "fused.onnx"
                fidelity["optimization"] = optimize.optimize_graph(
                    stage / MODEL_FILE, graph, int(config.num_attention_heads), int(config.hidden_size)
                )
                fidelity["optimization"]["parity"] = parity.check_parity(onnx_path=graph, **check)

            step(f"quantizing to INT8 ({quantize.mode}, for {quantize.target}) and checking the accuracy gate")
            tok = BundleTokenizer(stage / TOKENIZER_FILE, limit)
            cal, held_out = calibration.split(texts, calibration_size, eval_size)
            label_ids = None
            if held_out.labels is not None:
                label_ids = _label_ids(held_out.labels, loaded.labels)
            report = quantize_with_gate(
                graph,
                stage / INT8_FILE,
                quantize,
                loaded.task,
                int(config.num_hidden_layers),
                list(calibration.batches(tok, cal.texts, inputs)),
                list(calibration.batches(tok, held_out.texts, inputs)),
                embedding_spec=loaded.embedding,
                score_function=loaded.score_function,
                labels=label_ids,
            )
            report["calibration_text"] = {
                "origin": texts.origin,
                "calibration": len(cal.texts),
                "held_out": len(held_out.texts),
            }
            report["thresholds"] = asdict(quantize.thresholds)
            fidelity["int8"] = report
            log.info("INT8 fidelity: %s", {k: v for k, v in report["gate"].items() if k != "threshold"})
            if not for_openvino:
                graph.unlink()
            model_entries += bundle_writer.model_entries(
                stage,
                INT8_FILE,
                backend=quantize.target,
                precision="int8",
                format="onnx",
                quantization="dynamic" if quantize.mode == "dynamic" else "static-qdq",
            )
            if not keep_fp32:
                (stage / MODEL_FILE).unlink()
        if (stage / MODEL_FILE).exists():
            model_entries += bundle_writer.model_entries(
                stage, MODEL_FILE, backend="onnxruntime", precision="fp32", format="onnx"
            )

        step(f"writing the bundle to {output}")
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            task=loaded.task,
            max_length=limit,
            inputs=inputs,
            outputs=outputs,
            files=[*model_entries, bundle_writer.file_entry(stage, TOKENIZER_FILE, "tokenizer")],
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
                "quantize": asdict(quantize) if quantize else None,
                "keep_fp32": keep_fp32 if quantize else True,
                "versions": _versions(),
            },
            fidelity=fidelity,
        )
        return bundle_writer.commit(stage, manifest, output, force)


def _label_ids(names: list[str], labels: dict[int, str] | None) -> list[int]:
    if not labels:
        raise ExportError("the evaluation file has labels, but the model has no label names")
    by_name = {v: k for k, v in labels.items()}
    unknown = sorted({n for n in names if n not in by_name and not n.isdigit()})
    if unknown:
        raise ExportError(f"labels {unknown[:5]} in the evaluation file are not model labels {sorted(by_name)}")
    return [by_name[n] if n in by_name else int(n) for n in names]
