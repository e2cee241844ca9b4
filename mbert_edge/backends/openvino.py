"""OpenVINO on the CPU: an optional backend (``pip install 'mbert-edge[openvino]'``), chosen only by name.

OpenVINO reads the bundle's ONNX files directly: INT8 files exported for it (``--target openvino``: NNCF's
QDQ recipe, manifest ``backend: openvino``) with its own integer kernels, and fp32 files. INT8 files made
for ONNX Runtime use its contrib ops and stay with ONNX Runtime. OpenVINO is the fastest CPU runtime we
measured at batch 32 and long sequences (see benchmarks/results), at the price of a larger runtime and more
memory, so it is offered, never picked by ``backend="auto"``.

Compile cache: compiling an ONNX file for the CPU takes OpenVINO 1.5-2.5 s (e5-small INT8), longer than
everything else in ``load()``. The backend keeps OpenVINO's compiled blob in a cache directory and imports
it on later loads: e5-small INT8 cold start 2.4 -> 0.5 s, peak memory 948 -> 601 MB (2-core AVX-512 VNNI,
OpenVINO 2026.4). The directory is ``$MBERT_EDGE_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME/mbert-edge/openvino``
(``~/.cache/...``); set the variable to ``off`` to disable. Each model file gets its own subdirectory, keyed
by its path, size and modification time, so a re-exported bundle never meets a stale blob (blobs are a few
hundred MB; delete old subdirectories freely). An unwritable directory only costs the speed-up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mbert_edge.backends.base import Backend
from mbert_edge.errors import BackendUnavailableError
from mbert_edge.manifest import FileEntry

log = logging.getLogger(__name__)

CACHE_ENV = "MBERT_EDGE_OPENVINO_CACHE"
DEFAULT_CACHE = "default"


def cache_root() -> Path | None:
    """The compile cache's root directory, or None when disabled (``MBERT_EDGE_OPENVINO_CACHE=off``)."""
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mbert-edge" / "openvino"


def cache_dir_for(model_path: Path, root: Path) -> Path:
    """The subdirectory for one model file: keyed by its resolved path, and by the size and modification
    time of the file and of its external weights, so that a changed file gets a new blob."""
    key = hashlib.sha256()
    path = model_path.resolve()
    key.update(str(path).encode())
    weights = path.with_name(path.name + ".data")  # the bundle writer's weights file, when there is one
    for f in (path, weights) if weights.exists() else (path,):
        st = f.stat()
        key.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return root / key.hexdigest()[:24]


class OpenVINOCPUBackend(Backend):
    """``backend="openvino"``: OpenVINO's CPU plugin, ``threads`` inference threads.

    ``cache_dir``: where compiled blobs go — ``"default"`` (see the module docs), a directory, or None for no
    cache (the export stage's accuracy gate compiles temporary files with None).
    """

    name = "openvino"
    file_backend = "openvino"  # INT8 files made for it; it also runs the ONNX Runtime files below
    file_format = "onnx"
    precisions = ("int8", "fp32")
    extra = "openvino"
    auto = False
    #: OpenVINO prepares its kernels for each new input shape (about 12 ms on e5-small, 3x the run itself);
    #: rounding lengths up to a multiple of 16 keeps the shapes a stream of texts brings few
    pad_to_multiple_of = 16

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def pick_file(cls, files: list[FileEntry], precision: str | None = None) -> FileEntry | None:
        own = super().pick_file(files, precision)
        if own is not None:
            return own
        # of the files made for ONNX Runtime only fp32 ones: its INT8 files use its contrib ops
        # (QAttention, MatMulIntegerToFloat, ...), which OpenVINO does not run
        if precision in (None, "fp32"):
            return next((f for f in files if f.backend == "onnxruntime" and f.precision == "fp32"), None)
        return None

    def __init__(
        self,
        model_path: Path,
        threads: int | None = None,
        precision: str | None = None,
        cache_dir: Path | str | None = DEFAULT_CACHE,
    ) -> None:
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
        core = ov.Core()
        blob_dir = self._cache(Path(model_path), cache_dir)
        if blob_dir is not None:
            core.set_property({"CACHE_DIR": str(blob_dir)})
        try:
            self._compiled = core.compile_model(str(model_path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with a long report
            raise BackendUnavailableError(f"OpenVINO could not compile {model_path}: {str(exc)[:300]}") from exc
        self._inputs = [i.get_any_name() for i in self._compiled.inputs]
        self._output = self._compiled.outputs[0]
        self._local = threading.local()  # one infer request per thread: requests are not thread-safe

    @staticmethod
    def _cache(model_path: Path, cache_dir: Path | str | None) -> Path | None:
        root = cache_root() if cache_dir == DEFAULT_CACHE else (Path(cache_dir) if cache_dir else None)
        if root is None:
            return None
        try:
            blob_dir = cache_dir_for(model_path, root)
            blob_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(blob_dir, os.W_OK):
                raise PermissionError(f"{blob_dir} is not writable")
        except OSError as exc:
            log.warning("OpenVINO compile cache disabled (%s); set %s to a writable directory", exc, CACHE_ENV)
            return None
        log.debug("OpenVINO compile cache: %s", blob_dir)
        return blob_dir

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({n: feeds[n] for n in self._inputs})
        return {self._output.get_any_name(): np.array(result[self._output])}
