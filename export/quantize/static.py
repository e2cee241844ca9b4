"""Static INT8 in QDQ format: activation ranges come from calibration text.

ONNX Runtime's calibrators run the fp32 model on the calibration batches and record each activation's
range: ``minmax`` (the observed extremes), ``entropy`` (the KL-divergence-optimal threshold of a histogram)
or ``percentile`` (the 99.999th percentile of |x|). The QDQ model carries QuantizeLinear/DequantizeLinear
pairs that ONNX Runtime fuses into integer kernels at load time.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge_export.errors import ExportError

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
#: only the matmuls: they hold nearly all the work. Quantizing Gather/Reshape/... too only adds
#: quantize-dequantize round trips (and a quantized CLS Gather trips OpenVINO's low-precision passes).
STATIC_OP_TYPES = ("MatMul", "Gemm")


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over our batches, logging progress."""

    def __init__(self, batches: Sequence[dict[str, np.ndarray]]) -> None:
        self._batches = list(batches)
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._batches)
        self._done = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        if item is not None:
            self._done += 1
            if self._done % 8 == 0 or self._done == len(self._batches):
                log.info("calibration: batch %d/%d", self._done, len(self._batches))
        return item

    def set_range(self, start_index: int, end_index: int) -> None:  # protocol method, unused
        self._it = iter(self._batches[start_index:end_index])


def quantize_static(
    src: Path,
    dst: Path,
    batches: Sequence[dict[str, np.ndarray]],
    method: str = "minmax",
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    activation: str = "uint8",
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Calibrate on ``batches`` and write the QDQ model ``dst``; return the settings used.

    With ``work_dir`` the shape-inferred model and the calibrated activation ranges are kept there and reused
    by later calls on the same ``src`` (ranges do not depend on which nodes are excluded), so the accuracy
    gate's fallback passes calibrate once instead of once per pass.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, not {method!r}")
    calibrate, reader = calibration_reader(batches, method)
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    extra["CalibTensorRangeSymmetric"] = False
    with contextlib.ExitStack() as stack:
        work = work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mbert-edge-static-")))
        work.mkdir(parents=True, exist_ok=True)
        # Symbolic shape inference types the outputs of the fused contrib ops (SkipLayerNormalization, ...);
        # without it the quantizer cannot see the MatMuls' activations and leaves them in fp32.
        shaped = work / "shaped.onnx"
        if not shaped.exists():
            _infer_shapes(src, shaped)
        ort_quantize_static(
            str(shaped),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            nodes_to_exclude=list(nodes_to_exclude),
            op_types_to_quantize=list(STATIC_OP_TYPES),
            extra_options=extra,
            calibration_providers=["CPUExecutionProvider"],
            calibration_cache_path=work / f"ranges-{method}.json",
        )
    return {
        "mode": "static",
        "format": "QDQ",
        "calibration_method": method,
        "per_channel": per_channel,
        "weights": "int8 (signed)",
        "activations": activation,
        "calibration_batches": len(batches),
        "fp32_nodes": list(nodes_to_exclude),
    }


def _infer_shapes(src: Path, dst: Path) -> None:
    """Write ``src`` with every tensor typed to ``dst`` (ONNX and symbolic shape inference).

    When the symbolic pass cannot type a tensor, ONNX Runtime saves its half-typed model as
    ``sym_shape_infer_temp.onnx`` plus an external-data file into the current directory before it raises;
    those files are removed here (only if this call created them) and the failure becomes an ExportError.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    leftover = Path.cwd() / "sym_shape_infer_temp.onnx"
    existed = leftover.exists()
    try:
        quant_pre_process(str(src), str(dst), skip_optimization=True, auto_merge=True)
    except Exception as exc:
        if leftover.exists() and not existed:
            with contextlib.suppress(Exception):
                model = onnx.load(str(leftover), load_external_data=False)
                for tensor in model.graph.initializer:
                    for entry in tensor.external_data:
                        if entry.key == "location":
                            (leftover.parent / entry.value).unlink(missing_ok=True)
            leftover.unlink(missing_ok=True)
        raise ExportError(
            f"static INT8 needs every tensor of {src.name} typed, and ONNX Runtime's symbolic shape "
            f"inference could not ({exc}); use --quantize dynamic, or --target openvino (NNCF does not need "
            "it)"
        ) from exc


def _same_width(batches: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Pad every batch (with id 0 and attention mask 0) to the widest batch's sequence length."""
    width = max(b["input_ids"].shape[1] for b in batches)
    return [{k: np.pad(v, ((0, 0), (0, width - v.shape[1]))) for k, v in b.items()} for b in batches]


def calibration_reader(batches: Sequence[dict[str, np.ndarray]], method: str) -> tuple[Any, Any]:
    """ONNX Runtime's calibration method named ``method`` and a data reader over ``batches`` (made one width for
    the histogram methods, which stack batches)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    if method != "minmax":  # histogram calibrators stack batches: they need one sequence length
        batches = _same_width(batches)
    return calibrate, type("Reader", (_Reader, CalibrationDataReader), {})(batches)
