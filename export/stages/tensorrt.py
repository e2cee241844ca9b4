"""Stage: TensorRT-ready ONNX files (``--target tensorrt --precision fp16,int8``), judged by the accuracy gate.

Runs after ``to_onnx`` and before ``quantize``, because both files start from the plain opset-17 export
``model.onnx`` (the ``quantize`` stage may fuse it for ONNX Runtime and then drop it). Each file is checked
against TensorRT's parser rules (:mod:`mbert_edge_export.tensorrt.graph`) and judged per language by the same
accuracy gate as CPU INT8, run on ONNX Runtime's CPU provider as a numerical stand-in
(:mod:`mbert_edge_export.tensorrt.standin`); the fidelity report says it was measured on CPU. The manifest
lists each file with ``backend: tensorrt``, its optimization profile and the oldest TensorRT that builds it.
No GPU and no TensorRT are needed here: engines are built where they run.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from mbert_edge.tokenizer import BundleTokenizer
from mbert_edge_export import bundle_writer
from mbert_edge_export.errors import ExportError
from mbert_edge_export.quantize import calibration, fallback, gate
from mbert_edge_export.quantize.gated import QuantizationGateError
from mbert_edge_export.stages.context import MODEL_FILE, TOKENIZER_FILE, ExportContext
from mbert_edge_export.tensorrt import (
    CALIBRATION_METHODS,
    FILES,
    MIN_TENSORRT,
    PRECISIONS,
    TensorRTSettings,
    fp16,
    graph,
    int8,
    standin,
)

log = logging.getLogger(__name__)


def steps(ctx: ExportContext) -> int:
    """One step per precision."""
    trt = ctx.options.tensorrt
    return 0 if trt is None else len(trt.precisions)


def enabled(ctx: ExportContext) -> bool:
    """Runs with ``--target tensorrt``."""
    return ctx.options.tensorrt is not None


def check(ctx: ExportContext) -> None:
    """Validate the TensorRT settings before any slow step."""
    trt = ctx.options.tensorrt
    if trt is None:
        return
    check_settings(trt)  # its opset floor (graph.MIN_OPSET) is checked with every opset bound by to_onnx.check


def check_settings(trt: TensorRTSettings) -> None:
    """Reject settings that cannot work."""
    if not trt.precisions:
        raise ExportError(f"--precision needs at least one of {', '.join(PRECISIONS)}")
    unknown = [p for p in trt.precisions if p not in PRECISIONS]
    if unknown:
        raise ExportError(f"--precision must be {' or '.join(PRECISIONS)} (or both, comma-separated), not {unknown}")
    if len(set(trt.precisions)) != len(trt.precisions):
        raise ExportError(f"--precision lists a precision twice: {','.join(trt.precisions)}")
    if trt.max_batch < 1 or trt.opt_batch < 1 or trt.opt_length < 1:
        raise ExportError("--max-batch, --opt-batch and --opt-length must be positive")
    if trt.calibration_method not in CALIBRATION_METHODS:
        raise ExportError(
            f"the TensorRT int8 calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
            f"not {trt.calibration_method!r}"
        )


def run(ctx: ExportContext) -> None:
    """Write every requested TensorRT file, gate it, and list it in the manifest."""
    trt, loaded, cal, held_out = ctx.options.tensorrt, ctx.loaded, ctx.calibration, ctx.held_out
    assert trt is not None and loaded is not None and cal is not None and held_out is not None
    tok = BundleTokenizer(ctx.path(TOKENIZER_FILE), ctx.max_length)
    prefix = loaded.embedding.default_prefix if loaded.embedding else ""
    gate_batches = list(calibration.batches(tok, [prefix + t for t in held_out.texts], ctx.inputs))
    reference = gate.model_outputs(ctx.path(MODEL_FILE), gate_batches, backend=standin.OrtCpuStandIn)
    profile = graph.profile(trt.max_batch, ctx.max_length, trt.opt_batch, trt.opt_length)

    def judge(path: Path) -> dict[str, Any]:
        return gate.evaluate(
            reference,
            path,
            gate_batches,
            loaded.task,
            embedding_spec=loaded.embedding,
            score_function=loaded.score_function,
            thresholds=trt.thresholds,
            backend=standin.OrtCpuStandIn,
            langs=held_out.langs,
        )

    for precision in trt.precisions:
        name = FILES[precision]
        if precision == "fp16":
            ctx.step("writing the fp16 TensorRT file and checking it with the accuracy gate (ONNX Runtime CPU)")
            report: dict[str, Any] = {"graph": fp16.write_fp16(ctx.path(MODEL_FILE), ctx.path(name))}
            report["gate"] = judge(ctx.path(name))
            _log_gate(precision, report["gate"])
            if not report["gate"]["passed"]:
                raise QuantizationGateError(
                    f"the fp16 TensorRT file fails the accuracy gate ({report['gate']['metric']} "
                    f"{report['gate']['value']:.5f} < {report['gate']['threshold']}); lower --min-cosine / "
                    "--min-agreement or export --precision int8 only",
                    report,
                )
            quantization = None
        else:
            ctx.step("writing the int8 (Q/DQ) TensorRT file and checking it with the accuracy gate (ONNX Runtime CPU)")
            cal_batches = list(calibration.batches(tok, [prefix + t for t in cal.texts], ctx.inputs))
            report = _int8_with_gate(ctx.path(MODEL_FILE), ctx.path(name), cal_batches, trt, judge, loaded)
            report["calibration_text"] = {
                "origin": cal.origin,
                "calibration": len(cal.texts),
                "held_out": len(held_out.texts),
            }
            quantization = "static-qdq"
        report["measured_on"] = standin.description()
        report["thresholds"] = dataclasses.asdict(trt.thresholds)
        ctx.fidelity[f"tensorrt_{precision}"] = report
        fields: dict[str, Any] = {"backend": "tensorrt", "precision": precision, "format": "onnx"}
        if quantization:
            fields["quantization"] = quantization
        model_entry, *rest = bundle_writer.model_entries(ctx.stage_dir, name, batch_invariant=True, **fields)
        ctx.files += [dataclasses.replace(model_entry, profiles=(profile,), min_tensorrt=MIN_TENSORRT), *rest]
    ctx.settings["tensorrt"] = {
        **dataclasses.asdict(trt),
        "profile": dataclasses.asdict(profile),
        "min_tensorrt": MIN_TENSORRT,
        "engines": "built on the device that runs them (mbert-edge build-engine, or on first load)",
    }


def _int8_with_gate(
    src: Path, dst: Path, cal_batches: list, trt: TensorRTSettings, judge: Any, loaded: Any
) -> dict[str, Any]:
    """Quantize, gate, and when the gate fails keep the most sensitive layer groups unquantized until it holds,
    then quantize back what single nodes of them it can (the same fallback search as the CPU INT8 stage)."""
    with tempfile.TemporaryDirectory(prefix="mbert-edge-trt-int8-") as tmp:
        work = Path(tmp)
        prepared = work / "prepared.onnx"
        prep = int8.prepare(src, prepared)

        def quantize(exclude: list[str], out: Path) -> dict[str, Any]:
            return int8.write_int8(prepared, out, cal_batches, trt.calibration_method, exclude, work_dir=work)

        report: dict[str, Any] = {"graph": prep, "settings": quantize([], dst), "fp32_groups": []}
        result = judge(dst)
        report["gate"] = result
        _log_gate("int8", result)
        if result["passed"]:
            return report
        nodes = int8.quantizable_nodes(prepared)
        groups = gate.node_groups(nodes, int(loaded.model.config.num_hidden_layers) + 1)
        log.info("ranking %d node groups by sensitivity (quantizing one group at a time)", len(groups))
        outcome = fallback.search(
            groups,
            quantize,
            judge,
            dst,
            work,
            weight_sizes=gate.weight_sizes(prepared, nodes),
            label="unquantized",
            start=(report["settings"], result),
        )
        report.update(outcome.report_fields())
        if outcome.passed:
            return report
        result = outcome.gate
        raise QuantizationGateError(
            f"the int8 TensorRT file reaches {result['metric']} {result['value']:.5f} < {result['threshold']} even "
            f"with {len(report['fp32_groups'])} of {len(groups)} node groups unquantized; lower --min-cosine / "
            "--min-agreement, try another calibration text, or ship --precision fp16",
            report,
        )


def _log_gate(precision: str, result: dict[str, Any]) -> None:
    log.info(
        "TensorRT %s accuracy gate (ONNX Runtime CPU stand-in): %s = %.5f (needs >= %.3f): %s",
        precision,
        result["metric"],
        result["value"],
        result["threshold"],
        "passed" if result["passed"] else "FAILED",
    )
