"""OpenVINO on the CPU: an optional backend (``pip install 'mbert-edge[openvino]'``), chosen only by name.

OpenVINO reads the bundle's ONNX files directly. For INT8 it runs static QDQ files (``quantization:
static-qdq``) with its own integer kernels; dynamic-INT8 files use ONNX Runtime's private integer ops and
stay with ONNX Runtime. On the machines we measured, OpenVINO ran our static INT8 bundles 2-4x faster than
ONNX Runtime does (see benchmarks/results), at the price of a larger runtime and memory footprint, so it is
offered, never picked by ``backend="auto"``.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mbert_edge.backends.base import Backend
from mbert_edge.errors import BackendUnavailableError
from mbert_edge.manifest import FileEntry

log = logging.getLogger(__name__)


class OpenVINOCPUBackend(Backend):
    """``backend="openvino"``: OpenVINO's CPU plugin, ``threads`` inference threads."""

    name = "openvino"
    file_backend = "onnxruntime"  # the ONNX files of the bundle
    file_format = "onnx"
    precisions = ("int8", "fp32")
    extra = "openvino"
    auto = False

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def pick_file(cls, files: list[FileEntry], precision: str | None = None) -> FileEntry | None:
        runnable = [f for f in files if f.quantization != "dynamic"]
        return super().pick_file(runnable, precision)

    def __init__(self, model_path: Path, threads: int | None = None, precision: str | None = None) -> None:
        import openvino as ov

        if threads is not None and threads < 1:
            raise ValueError("threads must be a positive number, or None for OpenVINO's default")
        config: dict = {}
        if precision == "fp32":
            # OpenVINO may otherwise run fp32 models in bf16 on CPUs that have it, which the export's parity
            # check never saw (INT8 models keep OpenVINO's defaults: forcing f32 breaks some of their passes)
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self._compiled = ov.Core().compile_model(str(model_path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with a long report
            raise BackendUnavailableError(f"OpenVINO could not compile {model_path}: {str(exc)[:300]}") from exc
        self._inputs = [i.get_any_name() for i in self._compiled.inputs]
        self._output = self._compiled.outputs[0]
        self._local = threading.local()  # one infer request per thread: requests are not thread-safe

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({n: feeds[n] for n in self._inputs})
        return {self._output.get_any_name(): np.array(result[self._output])}
