"""Backends that run a bundle's model, and the choice among them (``backend="auto"``).

To add one (TensorRT, ONNX Runtime CUDA, ...): subclass :class:`~mbert_edge.backends.base.Backend` and add
it to :data:`REGISTRY`, most preferred first. Backends are imported when chosen, so a missing optional
library never breaks ``import mbert_edge``.
"""

from __future__ import annotations

import logging

from mbert_edge.backends.base import Backend
from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend
from mbert_edge.backends.onnxruntime_gpu import OnnxRuntimeCUDABackend, OnnxRuntimeTensorRTBackend
from mbert_edge.backends.openvino import OpenVINOCPUBackend
from mbert_edge.backends.tensorrt import TensorRTBackend
from mbert_edge.errors import BackendUnavailableError
from mbert_edge.manifest import FileEntry

log = logging.getLogger(__name__)

#: every backend by name; "auto" tries those with ``auto = True`` in this order: a GPU backend when its
#: library and a GPU are present and the bundle has a file for it, else the CPU
REGISTRY: dict[str, type[Backend]] = {
    TensorRTBackend.name: TensorRTBackend,
    OnnxRuntimeTensorRTBackend.name: OnnxRuntimeTensorRTBackend,
    OnnxRuntimeCUDABackend.name: OnnxRuntimeCUDABackend,
    OnnxRuntimeCPUBackend.name: OnnxRuntimeCPUBackend,
    OpenVINOCPUBackend.name: OpenVINOCPUBackend,
}
ALIASES = {"cpu": OnnxRuntimeCPUBackend.name, "ort": OnnxRuntimeCPUBackend.name}


def choose(name: str, files: list[FileEntry], precision: str | None = None) -> tuple[type[Backend], FileEntry]:
    """Pick the backend class and the model file to run.

    ``name`` is a registered name, an alias, or ``"auto"`` (the first available backend, in
    :data:`REGISTRY` order, that has a runnable file in the bundle).
    """
    if name == "auto":
        tried = []
        for cls in (c for c in REGISTRY.values() if c.auto):
            entry = cls.pick_file(files, precision)
            if entry is not None and cls.is_available():
                log.info("backend auto: %s runs %s (%s)", cls.name, entry.path, entry.precision)
                return cls, entry
            if entry is not None:
                log.debug("backend auto: not %s (%s)", cls.name, unavailable_reason(cls) or "not available")
            tried.append(cls.name)
        by_name = sorted({f.backend for f in files if f.backend in REGISTRY and not REGISTRY[f.backend].auto})
        hint = f"; its model is made for {', '.join(by_name)}: pass backend={by_name[0]!r}" if by_name else ""
        raise BackendUnavailableError(
            f"no installed backend can run this bundle{f' at precision {precision}' if precision else ''} "
            f"(tried {', '.join(tried)}); the bundle has {_describe(files)}{hint}"
        )
    key = ALIASES.get(name, name)
    if key not in REGISTRY:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of: auto, {', '.join(REGISTRY)} (aliases: {', '.join(ALIASES)})"
        )
    cls = REGISTRY[key]
    if not cls.is_available():
        reason = unavailable_reason(cls)
        if reason:
            raise BackendUnavailableError(f"backend {key!r} is not available on this machine: {reason}")
        hint = f" (`pip install mbert-edge[{cls.extra}]`)" if cls.extra else ""
        raise BackendUnavailableError(f"backend {key!r} is not available on this machine{hint}")
    entry = cls.pick_file(files, precision)
    if entry is None:
        raise BackendUnavailableError(
            f"backend {key!r} has no model file to run in this bundle"
            f"{f' at precision {precision}' if precision else ''}; the bundle has {_describe(files)}. "
            "Re-export with the matching option, or use backend='auto'"
        )
    return cls, entry


def unavailable_reason(cls: type[Backend]) -> str | None:
    """What a backend lacks on this machine, for backends that can say (the GPU ones), else None."""
    reason = getattr(cls, "unavailable_reason", None)
    return reason() if callable(reason) else None


def _describe(files: list[FileEntry]) -> str:
    return ", ".join(f"{f.path} ({f.backend}/{f.format}/{f.precision})" for f in files) or "no model files"


__all__ = ["ALIASES", "REGISTRY", "Backend", "choose", "unavailable_reason"]
