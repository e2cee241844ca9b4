"""ONNX Runtime's CPU provider as the export-time numerical stand-in for TensorRT.

No TensorRT runs at export (the export machine may have no GPU), so the accuracy gate runs the TensorRT
files on ONNX Runtime's CPU provider with every graph optimization off: Q/DQ pairs then execute literally
(ONNX semantics: round half to even, saturate to int8), which is what TensorRT's int8 kernels compute up to
the order of accumulation, instead of being fused into ONNX Runtime's own integer kernels. fp16 nodes run
in fp16 where the CPU provider has fp16 kernels, and otherwise in fp32 between casts that ONNX Runtime
inserts (rounding every such node's inputs and outputs to fp16): an approximation of the GPU's fp16 numerics,
not a copy. The fidelity report says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mbert_edge.backends.base import Backend
from mbert_edge.errors import BackendUnavailableError


def description() -> str:
    """What measured the gate, for the fidelity report."""
    import onnxruntime

    return (
        f"ONNX Runtime {onnxruntime.__version__} CPUExecutionProvider, graph optimizations off (Q/DQ executed "
        "literally), as a numerical stand-in for TensorRT: measured on CPU at export, not on a GPU"
    )


class OrtCpuStandIn(Backend):
    """Runs a TensorRT-ready ONNX file on ONNX Runtime's CPU provider, unoptimized (see the module docs)."""

    name = "tensorrt-standin"
    file_backend = "tensorrt"
    file_format = "onnx"
    precisions = ("int8", "fp16")
    auto = False

    @classmethod
    def is_available(cls) -> bool:
        return True

    def __init__(self, model_path: Path, threads: int | None = None, precision: str | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendUnavailableError(f"ONNX Runtime could not load {model_path}: {exc}") from exc
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, {n: feeds[n] for n in self._inputs})
        return {k: np.asarray(v, dtype=np.float32) for k, v in zip(self._outputs, values, strict=True)}
