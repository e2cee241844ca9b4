"""Quantize, check with the accuracy gate, and fall back to fp32 for the most sensitive nodes if needed."""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge.backends import int8_kernels
from mbert_edge.backends.base import Backend
from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend
from mbert_edge.backends.openvino import OpenVINOCPUBackend
from mbert_edge.manifest import EmbeddingSpec
from mbert_edge_export.errors import ExportError
from mbert_edge_export.quantize import (
    dynamic,
    embedding,
    fallback,
    fixed_ranges,
    gate,
    integer_matmul,
    outlier_channels,
    smoothing,
    static,
    static_nncf,
)

log = logging.getLogger(__name__)

MODES = ("dynamic", "static")
#: the runtime an INT8 model is made for: its graph and quantizer differ (see static_nncf)
TARGETS = ("onnxruntime", "openvino")
ACTIVATION_RANGES = ("fixed", "per-batch")
OUTLIER_CHANNELS = ("float32", "int8")


class QuantizationGateError(ExportError):
    """The INT8 model stays below the accuracy gate even with its most sensitive nodes kept in fp32."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class QuantizeSettings:
    """How to quantize, and what the INT8 model must reach."""

    mode: str = "dynamic"
    method: str | None = None  # static, ONNX Runtime target only: minmax (default), entropy or percentile
    target: str = "onnxruntime"  # or "openvino": NNCF's recipe on the plain graph, run by OpenVINO
    per_channel: bool = True
    #: dynamic mode: "fixed" (activation ranges calibrated once: batch-invariant, the default) or "per-batch"
    #: (ONNX Runtime's own dynamic ranges, measured over each padded batch: a text's result depends on its batch)
    activation_ranges: str = "fixed"
    #: dynamic mode with fixed ranges: "float32" (the few input channels of a weight matmul whose values dwarf
    #: the others' are computed in float32 beside the integer GEMM, and the rest get a range without them:
    #: quantize/outlier_channels.py; the default) or "int8" (every channel in the integer GEMM)
    outlier_channels: str = "float32"
    #: dynamic mode with fixed ranges: SmoothQuant's migration strength for the normalization-fed inputs of
    #: weight matmuls (the first feed-forward matmul: quantize/smoothing.py); 0 leaves them as they are
    smoothing: float = smoothing.ALPHA
    thresholds: gate.Thresholds = field(default_factory=gate.Thresholds)
    max_fallback_groups: int | None = None  # at most this many node groups kept in fp32 (None: all but one)
    #: also write the browser variant (quantize/weight_only.py: INT8 weights, fp32 activations), ONNX Runtime target
    browser_variant: bool = False


def check_settings(settings: QuantizeSettings) -> None:
    """Reject settings that cannot work, before any slow step."""
    if settings.mode not in MODES:
        raise ExportError(f"--quantize must be one of {', '.join(MODES)}, not {settings.mode!r}")
    if settings.activation_ranges not in ACTIVATION_RANGES:
        raise ExportError(
            f"--activation-ranges must be one of {', '.join(ACTIVATION_RANGES)}, not {settings.activation_ranges!r}"
        )
    if settings.outlier_channels not in OUTLIER_CHANNELS:
        raise ExportError(
            f"--outlier-channels must be one of {', '.join(OUTLIER_CHANNELS)}, not {settings.outlier_channels!r}"
        )
    if not 0.0 <= settings.smoothing <= 1.0:
        raise ExportError(f"--smoothing must be between 0 (off) and 1, not {settings.smoothing}")
    if settings.activation_ranges != "fixed" and settings.mode != "dynamic":
        raise ExportError("--activation-ranges per-batch applies to --quantize dynamic only")
    if settings.target not in TARGETS:
        raise ExportError(f"--target must be one of {', '.join(TARGETS)}, not {settings.target!r}")
    if settings.browser_variant and settings.target != "onnxruntime":
        raise ExportError("--browser-variant is made from the ONNX Runtime graph: drop --target openvino")
    if settings.target == "openvino":
        if settings.mode != "static":
            raise ExportError("--target openvino needs --quantize static (OpenVINO has no dynamic INT8 for ONNX)")
        if settings.method is not None:
            raise ExportError(
                "--calibration-method applies to --target onnxruntime; NNCF (--target openvino) uses its own ranges"
            )
        static_nncf.check_available()
    elif settings.method is not None and settings.mode == "dynamic":
        raise ExportError("--calibration-method applies to --quantize static; dynamic INT8 needs no calibration")
    elif settings.method is not None and settings.method not in static.METHODS:
        raise ExportError(f"--calibration-method must be one of {', '.join(static.METHODS)}, not {settings.method!r}")


def runner_for(settings: QuantizeSettings) -> Callable[[Path], Backend]:
    """The runtime backend the INT8 model is judged (and timed) with: the one that will run it (OpenVINO
    without its compile cache: the gate's files are temporary)."""
    if settings.target == "openvino":
        return functools.partial(OpenVINOCPUBackend, cache_dir=None)
    return OnnxRuntimeCPUBackend


def quantize_with_gate(
    src: Path,
    dst: Path,
    settings: QuantizeSettings,
    task: str,
    num_layers: int,
    calibration: Sequence[dict[str, np.ndarray]],
    evaluation: Sequence[dict[str, np.ndarray]],
    embedding_spec: EmbeddingSpec | None = None,
    score_function: str | None = None,
    labels: Sequence[int] | None = None,
    langs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the INT8 model to ``dst``; return its fidelity report. Raise if the gate cannot be met.

    With ``langs`` (each evaluation text's language) the gate also judges every language on its own: the
    worst language must reach the threshold too, not only the mean.

    ``src`` is the fp32 graph to quantize: fused by ONNX Runtime's optimizer for the ONNX Runtime target,
    the plain export for OpenVINO. The INT8 model is run by the backend of its target for the gate.
    """
    check_settings(settings)
    runner = runner_for(settings)
    with tempfile.TemporaryDirectory(prefix="mbert-edge-calibration-") as tmp:
        work = Path(tmp)  # static mode: calibrated ranges, reused by every fallback pass
        reference = gate.model_outputs(src, evaluation)

        # ONNX Runtime target: the word-embedding table goes to 4 bits (see embedding.py), or to 8 bits when
        # the gate's fallback takes the embedding group (position/token-type tables then stay fp32)
        word = embedding.word_embedding_node(src) if settings.target == "onnxruntime" else None

        # dynamic INT8 with fixed ranges: outlier channels leave the integer GEMMs (outlier_channels.py); the
        # split graph computes what ``src`` computes, so the gate still compares against ``src``
        # and the feed-forward input is smoothed first (smoothing.py): again the same function in float32
        graph, split_ranges, split_report, smooth_report = src, None, None, None
        if smoothing_applies(settings):
            graph = work / "smoothed.onnx"
            smooth_report = smoothing.smooth(src, graph, calibration, settings.smoothing)
        if split_applies(settings):
            split = work / "outliers-split.onnx"
            split_ranges, split_report = outlier_channels.split_outliers(graph, split, calibration)
            graph = split
        fp32_side = split_report["fp32_matmuls"] if split_report else []

        def quantize(exclude: Sequence[str], out: Path) -> dict[str, Any]:
            if settings.target == "openvino":
                return {
                    **static_nncf.quantize_nncf(src, out, calibration, nodes_to_exclude=exclude),
                    "batch_invariant": True,
                }
            # the table is compressed below instead: 4 bits, or 8 when the fallback took its group
            skip = [*exclude, word] if word is not None and word not in exclude else list(exclude)
            if settings.mode == "dynamic":
                recipe = dynamic.quantize_dynamic(
                    graph, out, per_channel=settings.per_channel, nodes_to_exclude=[*skip, *fp32_side]
                )
            else:
                recipe = static.quantize_static(
                    src,
                    out,
                    calibration,
                    method=settings.method or "minmax",
                    per_channel=settings.per_channel,
                    nodes_to_exclude=skip,
                    work_dir=work,  # calibrate once for every fallback pass
                )
            recipe["fp32_nodes"] = [n for n in exclude if n != word]
            bits = 8 if word in exclude else 4
            recipe["word_embedding"] = (embedding.compress_word_embedding(out, word, bits) if word else None) or "fp32"
            if settings.mode == "dynamic":
                if settings.activation_ranges == "fixed":
                    recipe.update(fixed_ranges.make_batch_invariant(out, calibration, split_ranges))
                    recipe["outlier_channels"] = split_report or settings.outlier_channels
                    recipe["smoothing"] = smooth_report or "off"
                    recipe["activations"] = "uint8, ranges fixed from calibration text (batch-invariant)"
                    # constant scales stop ONNX Runtime fusing the rescaling into the GEMM: write it fused
                    recipe["matmul_integer_to_float"] = integer_matmul.fuse_file(out)
                recipe["batch_invariant"] = settings.activation_ranges == "fixed"
            else:
                recipe["batch_invariant"] = True  # static scales
            return recipe

        def check(path: Path) -> dict[str, Any]:
            return gate.evaluate(
                reference,
                path,
                evaluation,
                task,
                embedding_spec=embedding_spec,
                score_function=score_function,
                labels=labels,
                thresholds=settings.thresholds,
                backend=runner,
                langs=langs,
            )

        calibrated_by_us = settings.mode == "static" and settings.target == "onnxruntime"
        ranges = f", {settings.method or 'minmax'}" if calibrated_by_us else ""
        log.info("quantizing (%s%s) for %s", settings.mode, ranges, settings.target)
        recipe = quantize([], dst)
        result = check(dst)
        report: dict[str, Any] = {"settings": recipe, "gate": result, "fp32_groups": []}
        # what the integer kernels of the runtime that ran the gate compute on this CPU: without VNNI, u8 x s8
        # products saturate (ONNX Runtime's and OpenVINO's alike) and the gate reads lower than it would on a VNNI
        # CPU (mbert_edge/backends/int8_kernels.py)
        report["gate_cpu"] = {
            "runtime": settings.target,
            "u8s8_saturates": int8_kernels.saturates_for(settings.target),
        }
        log.info(
            "accuracy gate: %s = %.5f (needs >= %.3f): %s",
            result["metric"],
            result["value"],
            result["threshold"],
            "passed" if result["passed"] else "FAILED",
        )
        if result["passed"]:
            return report

        all_int8_ms = gate.latency_ms(dst, evaluation[0], backend=runner) if evaluation else None
        nodes = gate.quantizable_nodes(src, activation_matmuls=settings.target == "openvino")
        groups = gate.layer_groups(nodes, gate.embedding_nodes(src), num_layers)
        log.info("ranking %d node groups by sensitivity (quantizing one group at a time)", len(groups))
        outcome = fallback.search(
            groups,
            quantize,
            check,
            dst,
            dst.parent,
            max_groups=settings.max_fallback_groups,
            weight_sizes=gate.weight_sizes(src, nodes),
            start=(recipe, result),
        )
        report.update(outcome.report_fields())
        if outcome.passed:
            if all_int8_ms is not None:
                report["fallback_speed_cost"] = _speed_cost(
                    all_int8_ms, gate.latency_ms(dst, evaluation[0], backend=runner), evaluation[0]
                )
            return report
        result = outcome.gate
        other = (
            "try --target onnxruntime"
            if settings.target == "openvino"
            else "try --quantize dynamic or another --calibration-method"
        )
        raise QuantizationGateError(
            f"the INT8 model reaches {result['metric']} {result['value']:.5f} < {result['threshold']} even with "
            f"{len(report['fp32_groups'])} of {len(groups)} node groups kept in fp32; lower the threshold "
            f"(--min-agreement / --min-cosine), {other}, or ship fp32",
            report,
        )


def split_applies(settings: QuantizeSettings) -> bool:
    """Whether outlier channels are split off (:mod:`.outlier_channels`): dynamic INT8 with fixed ranges for
    ONNX Runtime, unless ``outlier_channels="int8"``. Per-batch ranges are measured over the whole tensor at
    run time, and static INT8 calibrates with ONNX Runtime's own tools, so neither can take the split ranges."""
    return (
        settings.outlier_channels == "float32"
        and settings.target == "onnxruntime"
        and settings.mode == "dynamic"
        and settings.activation_ranges == "fixed"
    )


def smoothing_applies(settings: QuantizeSettings) -> bool:
    """Whether the feed-forward input is smoothed (:mod:`.smoothing`): dynamic INT8 with fixed ranges for ONNX
    Runtime, with a ``smoothing`` strength above 0. Static INT8 calibrates with ONNX Runtime's or NNCF's own
    tools on the graph as exported."""
    return (
        settings.smoothing > 0
        and settings.target == "onnxruntime"
        and settings.mode == "dynamic"
        and settings.activation_ranges == "fixed"
    )


def _speed_cost(all_int8_ms: float, fallback_ms: float, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """What keeping node groups in fp32 costs, timed on one held-out batch during export."""
    cost = {
        "batch_shape": list(batch["input_ids"].shape),
        "all_int8_ms": round(all_int8_ms, 3),
        "with_fp32_groups_ms": round(fallback_ms, 3),
        "slowdown": round(fallback_ms / all_int8_ms, 3),
    }
    log.info(
        "speed cost of the fp32 fallback: %.2f ms -> %.2f ms per batch of %s (x%.2f)",
        all_int8_ms,
        fallback_ms,
        cost["batch_shape"],
        cost["slowdown"],
    )
    return cost
