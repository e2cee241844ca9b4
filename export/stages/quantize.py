"""Stage: INT8 (``--quantize``): fuse the graph (ONNX Runtime target), quantize, and check the accuracy gate."""

from __future__ import annotations

import logging
from dataclasses import asdict

from mbert_edge.manifest import TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION
from mbert_edge.tokenizer import BundleTokenizer
from mbert_edge_export import bundle_writer, optimize, parity
from mbert_edge_export.errors import ExportError
from mbert_edge_export.quantize import calibration, gate, weight_only
from mbert_edge_export.quantize.gated import QuantizationGateError, check_settings, quantize_with_gate
from mbert_edge_export.stages.context import INT8_FILE, MODEL_FILE, TOKENIZER_FILE, ExportContext
from mbert_edge_export.stages.to_onnx import parity_check

log = logging.getLogger(__name__)


def steps(ctx: ExportContext) -> int:
    """Quantize and gate; plus fusing for ONNX Runtime."""
    q = ctx.options.quantize
    return 0 if q is None else 1 + (q.target != "openvino") + q.browser_variant


def enabled(ctx: ExportContext) -> bool:
    """Runs with ``--quantize``."""
    return ctx.options.quantize is not None


def check(ctx: ExportContext) -> None:
    """Validate the INT8 settings before any slow step."""
    if ctx.options.quantize is not None:
        check_settings(ctx.options.quantize)


def run(ctx: ExportContext) -> None:
    """Write ``model.int8.onnx`` (and drop ``model.onnx`` unless ``keep_fp32``); record the gate's report."""
    opts, loaded, cal, held_out = ctx.options, ctx.loaded, ctx.calibration, ctx.held_out
    settings = opts.quantize
    assert settings is not None and loaded is not None and cal is not None and held_out is not None
    config = loaded.model.config
    for_openvino = settings.target == "openvino"
    if for_openvino:  # OpenVINO fuses at compile time; NNCF's patterns need the standard ops
        graph = ctx.path(MODEL_FILE)
    else:
        ctx.step("fusing the graph with ONNX Runtime's transformer optimizer")
        graph = ctx.path("fused.onnx")
        ctx.fidelity["optimization"] = optimize.optimize_graph(
            ctx.path(MODEL_FILE), graph, int(config.num_attention_heads), int(config.hidden_size)
        )
        ctx.fidelity["optimization"]["parity"] = parity.check_parity(onnx_path=graph, **parity_check(ctx))

    ctx.step(f"quantizing to INT8 ({settings.mode}, for {settings.target}) and checking the accuracy gate")
    tok = BundleTokenizer(ctx.path(TOKENIZER_FILE), ctx.max_length)
    # embedding models see text as the runtime gives it to them: with their default prompt ("query: ")
    prefix = loaded.embedding.default_prefix if loaded.embedding else ""
    label_ids = calibration.label_ids(held_out.labels, loaded.labels) if held_out.labels is not None else None
    gate_batches = list(calibration.batches(tok, [prefix + t for t in held_out.texts], ctx.inputs))
    hint = gate_text_hint(loaded.task, opts.calibration_file is not None)
    try:
        report = quantize_with_gate(
            graph,
            ctx.path(INT8_FILE),
            settings,
            loaded.task,
            int(config.num_hidden_layers),
            list(calibration.batches(tok, [prefix + t for t in cal.texts], ctx.inputs)),
            gate_batches,
            embedding_spec=loaded.embedding,
            score_function=loaded.score_function,
            labels=label_ids,
            langs=held_out.langs,
        )
    except QuantizationGateError as exc:
        if hint is None:
            raise
        raise QuantizationGateError(f"{exc}. {hint}", exc.report) from exc
    if hint is not None and report.get("fp32_groups"):
        log.warning("%d node group(s) stay in fp32 to pass the gate. %s", len(report["fp32_groups"]), hint)
    report["calibration_text"] = {
        "origin": held_out.origin if held_out.origin == cal.origin else f"{cal.origin}; gate: {held_out.origin}",
        "calibration": len(cal.texts),
        "held_out": len(held_out.texts),
    }
    report["thresholds"] = asdict(settings.thresholds)
    ctx.fidelity["int8"] = report
    log.info("INT8 fidelity: %s", {k: v for k, v in report["gate"].items() if k != "threshold"})
    ctx.files += bundle_writer.model_entries(
        ctx.stage_dir,
        INT8_FILE,
        backend=settings.target,
        precision="int8",
        format="onnx",
        quantization="dynamic" if settings.mode == "dynamic" else "static-qdq",
        batch_invariant=bool(report["settings"].get("batch_invariant")),
    )
    if settings.browser_variant:  # listed after the INT8 file: runtimes take it only when asked by name
        ctx.step("writing the browser variant (INT8 weights, fp32 activations) and checking it like the INT8 model")
        wo = weight_only.write_weight_only(graph, ctx.path(weight_only.FILE))
        wo["gate"] = gate.evaluate(
            gate.model_outputs(graph, gate_batches),
            ctx.path(weight_only.FILE),
            gate_batches,
            loaded.task,
            embedding_spec=loaded.embedding,
            score_function=loaded.score_function,
            labels=label_ids,
            thresholds=settings.thresholds,
            langs=held_out.langs,
        )
        if not wo["gate"]["passed"]:
            raise ExportError(f"the browser variant fails the accuracy gate: {wo['gate']}")
        ctx.fidelity["int8_weight_only"] = wo
        ctx.files += bundle_writer.model_entries(
            ctx.stage_dir,
            weight_only.FILE,
            backend="onnxruntime",
            precision="int8",
            format="onnx",
            quantization="weight-only",
            batch_invariant=True,
        )
    if not for_openvino:
        graph.unlink()
    if not opts.keep_fp32:
        ctx.path(MODEL_FILE).unlink()
    ctx.settings.update({"quantize": asdict(settings), "keep_fp32": opts.keep_fp32})


def gate_text_hint(task: str, user_texts: bool) -> str | None:
    """What to try when a classifier or tagger fails the gate on the default gate texts, else None.

    The default gate texts are single sentences of the multilingual corpus, not the texts a classifier is made
    for; its answers on them often have low margins, and the small INT8 error flips some of them. Texts of the
    task judge what the app will see: the topic student (2026-12-01) needed 5 of 8 groups in fp32 on the corpus
    sample (53 MB) and none on its task's texts (30 MB), with accuracy within a paragraph per language.
    """
    if user_texts or task not in (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION):
        return None
    return (
        "The gate judged single sentences of the multilingual corpus, where a classifier's answers often have low "
        "margins and INT8 flips some of them: give it texts of the task with --calibration FILE (.txt, .jsonl or "
        ".csv; labels optional; a share is held out for the gate)"
    )
