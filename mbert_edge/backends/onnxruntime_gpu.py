"""ONNX Runtime on an NVIDIA GPU, for users who have ``onnxruntime-gpu`` but not TensorRT's Python package.

* ``onnxruntime-cuda``: the CUDA execution provider, inputs and outputs through an IO binding.
* ``onnxruntime-tensorrt``: ONNX Runtime's TensorRT provider (it embeds TensorRT's C++ library), with its
  engine and timing caches in this SDK's TensorRT cache directory and the manifest's optimization profile.

Both run the bundle's TensorRT-ready files (standard ops only; fp16 preferred) or its fp32 file; never the
CPU INT8 files, whose ONNX Runtime contrib ops (``QAttention``, ``MatMulInteger``) would fall
back to the CPU node by node. ``onnxruntime-gpu`` replaces the CPU ``onnxruntime`` package (same module
name): install one or the other (``pip install 'mbert-edge[gpu]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from mbert_edge.backends import engine_cache
from mbert_edge.backends.base import Backend
from mbert_edge.errors import BackendUnavailableError
from mbert_edge.manifest import FileEntry, ShapeProfile

log = logging.getLogger(__name__)


def provider_missing(provider: str) -> str | None:
    """What is missing to run ONNX Runtime's ``provider`` here (package, provider, GPU), or None."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if provider not in onnxruntime.get_available_providers():
        return (
            f"this onnxruntime has no {provider} (it is the CPU build; install onnxruntime-gpu instead: "
            "`pip install 'mbert-edge[gpu]'`, on Jetson from the Jetson AI Lab index, see docs/gpu.md)"
        )
    present, what = engine_cache.nvidia_gpu_present()
    return None if present else what


def trt_provider_options(cache_dir: Path, profile: ShapeProfile, inputs: list[str]) -> dict[str, str]:
    """Options of ONNX Runtime's TensorRT provider: engine and timing caches in ``cache_dir``, the profile as
    ``name:BxS`` lists. Precision comes from the file: with TensorRT 10 and later (what every onnxruntime-gpu
    since 1.19 is built with) the provider builds a strongly typed network when neither its fp16 nor its int8
    switch is on, so the fp16 file's fp32 islands and the int8 file's Q/DQ are kept as written."""

    def shapes(shape: tuple[int, int]) -> str:
        return ",".join(f"{n}:{shape[0]}x{shape[1]}" for n in inputs)

    return {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": shapes(profile.min),
        "trt_profile_opt_shapes": shapes(profile.opt),
        "trt_profile_max_shapes": shapes(profile.max),
        "trt_builder_optimization_level": "3",
        "trt_fp16_enable": "False",
        "trt_int8_enable": "False",
    }


class _OnnxRuntimeGPU(Backend):
    """Shared by the two ONNX Runtime GPU backends."""

    file_backend = "tensorrt"
    file_format = "onnx"
    precisions = ("fp16", "fp32")
    extra = "gpu"
    auto = True
    provider: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """What is missing on this machine, or None."""
        return provider_missing(cls.provider)

    @classmethod
    def is_available(cls) -> bool:
        return cls.unavailable_reason() is None

    @classmethod
    def pick_file(cls, files: list[FileEntry], precision: str | None = None) -> FileEntry | None:
        own = super().pick_file(files, precision)
        if own is not None:
            return own
        if precision in (None, "fp32"):  # the plain fp32 export runs too
            return next((f for f in files if f.backend == "onnxruntime" and f.precision == "fp32"), None)
        return None

    def _providers(self, model_path: Path, precision: str | None) -> list:
        raise NotImplementedError

    def __init__(self, model_path: Path, threads: int | None = None, precision: str | None = None) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailableError(f"backend {self.name!r} is not available: {reason}")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=self._providers(Path(model_path), precision)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendUnavailableError(f"ONNX Runtime ({self.provider}) could not load {model_path}: {exc}") from exc
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        log.info("%s: providers %s", self.name, self._session.get_providers())

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = self._session.io_binding()  # one per call: bindings are not shared between threads
        for n in self._inputs:
            binding.bind_cpu_input(n, np.ascontiguousarray(feeds[n]))
        for n in self._outputs:
            binding.bind_output(n, "cpu")
        self._session.run_with_iobinding(binding)
        values = binding.copy_outputs_to_cpu()
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self._outputs, values, strict=True)}


class OnnxRuntimeCUDABackend(_OnnxRuntimeGPU):
    """``backend="onnxruntime-cuda"``: ONNX Runtime's CUDA execution provider."""

    name = "onnxruntime-cuda"
    provider = "CUDAExecutionProvider"

    def _providers(self, model_path: Path, precision: str | None) -> list:
        return [self.provider, "CPUExecutionProvider"]


class OnnxRuntimeTensorRTBackend(_OnnxRuntimeGPU):
    """``backend="onnxruntime-tensorrt"``: ONNX Runtime's TensorRT execution provider (CUDA for what it
    leaves), engines cached like the ``tensorrt`` backend's."""

    name = "onnxruntime-tensorrt"
    provider = "TensorrtExecutionProvider"
    pad_to_multiple_of = 8

    def _providers(self, model_path: Path, precision: str | None) -> list:
        from mbert_edge.backends.tensorrt import DEFAULT_PROFILE, _manifest_entry

        entry = _manifest_entry(model_path)
        profile = entry.profiles[0] if entry and entry.profiles else DEFAULT_PROFILE
        inputs = _model_inputs(model_path)
        cache = engine_cache.cache_root() / "onnxruntime"
        cache.mkdir(parents=True, exist_ok=True)
        options = trt_provider_options(cache, profile, inputs)
        return [(self.provider, options), "CUDAExecutionProvider", "CPUExecutionProvider"]


def _model_inputs(model_path: Path) -> list[str]:
    manifest = model_path.parent / "manifest.json"
    if manifest.exists():
        from mbert_edge.manifest import Manifest

        return Manifest.read(manifest).inputs
    return ["input_ids", "attention_mask", "token_type_ids"]
