"""TensorRT on an NVIDIA GPU (``pip install 'mbert-edge[tensorrt]'``; on Jetson, JetPack's TensorRT).

Runs the bundle's TensorRT-ready ONNX files (``export --target tensorrt``; manifest ``backend: tensorrt``).
The engine is built on first load, on this device, and cached (:mod:`mbert_edge.backends.engine_cache`:
keyed by the model's SHA-256, precision, optimization profile, TensorRT version, GPU name and compute
capability, with TensorRT's timing cache beside it); ``mbert-edge build-engine BUNDLE`` builds it ahead of
time. A cached engine that does not deserialize (another TensorRT, a truncated file) is rebuilt, not fatal.

Supported TensorRT: 8.5 to 11.x, through the name-based tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``, all present since 8.5). What differs between versions (typing
mode, flags, dtypes) lives in :mod:`mbert_edge.backends.tensorrt_compat` as pure functions of the version,
by enum name. Device memory and streams come from cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart``
before cuda-python 12.6): NVIDIA's maintained bindings, the ones its current TensorRT samples use, with
x86-64 and aarch64 wheels; torch is never imported.

Every call's shape is checked against the engine's profile before TensorRT sees it
(:class:`~mbert_edge.errors.ShapeOutOfProfileError`). Input and output buffers are allocated once, sized for
the profile's maximum, and reused; one execution context serves every thread, one call at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge.backends import engine_cache
from mbert_edge.backends import tensorrt_compat as compat
from mbert_edge.backends.base import Backend
from mbert_edge.errors import BackendUnavailableError, EngineBuildError
from mbert_edge.manifest import MANIFEST_NAME, Manifest, ShapeProfile

log = logging.getLogger(__name__)

DEFAULT_PROFILE = ShapeProfile(min=(1, 1), opt=(1, 128), max=(32, 512))


def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def import_cudart() -> Any:
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (12.6+) or ``cuda.cudart`` (older)."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


def missing_pieces() -> str | None:
    """What this machine lacks to run TensorRT (libraries, GPU, version), or None when nothing. Imports
    nothing heavy unless the packages are present."""
    if not _find("tensorrt"):
        return (
            "the TensorRT Python package is not installed (`pip install 'mbert-edge[tensorrt]'`; on Jetson use "
            "JetPack's python3-libnvinfer in a venv made with --system-site-packages)"
        )
    if not (_find("cuda.bindings") or _find("cuda.cudart")):
        return "cuda-python is not installed (`pip install 'mbert-edge[tensorrt]'` installs it)"
    present, what = engine_cache.nvidia_gpu_present()
    if not present:
        return what
    try:
        import tensorrt as trt
    except Exception as exc:  # a broken install raises anything from OSError to pybind11 errors
        return f"TensorRT does not import: {exc}"
    return compat.unsupported_reason(compat.parse_version(trt.__version__))


class _Cuda:
    """The few CUDA runtime calls the backend needs, with errors turned into exceptions."""

    def __init__(self) -> None:
        self.rt = import_cudart()

    def check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            name = self.rt.cudaGetErrorName(err)[1]
            raise BackendUnavailableError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else rest

    def device(self) -> engine_cache.DeviceInfo:
        dev = self.check(self.rt.cudaGetDevice())
        props = self.check(self.rt.cudaGetDeviceProperties(dev))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return engine_cache.DeviceInfo(
            name=name.split("\x00")[0].strip(),
            compute_capability=(int(props.major), int(props.minor)),
            total_memory=int(props.totalGlobalMem),
            integrated=bool(props.integrated),
        )


class TensorRTBackend(Backend):
    """``backend="tensorrt"``: a TensorRT engine built from the bundle's fp16 or int8 TensorRT file.

    ``profile`` overrides the manifest's optimization profile (``build-engine --max-batch/--max-length``);
    ``cache_dir`` the engine cache's root; ``optimization_level`` TensorRT's builder level (8.6+, default 3).
    """

    name = "tensorrt"
    file_backend = "tensorrt"
    file_format = "onnx"
    precisions = ("fp16", "int8")  # fp16 first: as fast as int8 on BERT-base at short sequences, and closer
    extra = "tensorrt"
    auto = True
    pad_to_multiple_of = 8

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """What is missing on this machine, or None."""
        return missing_pieces()

    @classmethod
    def is_available(cls) -> bool:
        return cls.unavailable_reason() is None

    def __init__(
        self,
        model_path: Path,
        threads: int | None = None,
        precision: str | None = None,
        profile: ShapeProfile | None = None,
        cache_dir: Path | None = None,
        optimization_level: int = 3,
    ) -> None:
        reason = missing_pieces()
        if reason:
            raise BackendUnavailableError(f"backend 'tensorrt' is not available: {reason}")
        import tensorrt as trt

        self._trt = trt
        self._cuda = _Cuda()
        self.version = compat.parse_version(trt.__version__)
        model_path = Path(model_path)
        entry = _manifest_entry(model_path)
        self.precision = precision or (entry.precision if entry and entry.precision else "fp16")
        profiles = entry.profiles if entry and entry.profiles else (DEFAULT_PROFILE,)
        device = self._cuda.device()
        self.device = device
        root = Path(cache_dir) if cache_dir else engine_cache.cache_root()
        sha = entry.sha256 if entry else _sha256(model_path)
        # build-engine with other limits leaves them in the cache for every later load of this file
        self.profile = profile or engine_cache.read_profile_override(root, sha) or profiles[0]
        self.key = engine_cache.EngineKey(
            model_sha256=sha,
            precision=self.precision,
            profile=self.profile,
            tensorrt_version=trt.__version__,
            device=device.name,
            compute_capability=device.compute_capability,
            optimization_level=optimization_level,
        )
        self.engine_path = engine_cache.engine_path(root, self.key)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        timing = engine_cache.timing_cache_path(root, device, trt.__version__)
        start = time.perf_counter()

        def build() -> bytes:
            log.info(
                "building the TensorRT %s engine for %s (%s, sm_%d%d, TensorRT %s); this takes minutes once",
                self.precision,
                model_path.name,
                device.name,
                *device.compute_capability,
                trt.__version__,
            )
            return self._build(model_path, timing, optimization_level)

        try:
            self._engine, self.how = engine_cache.load_or_build(
                self.engine_path, self._deserialize, build, describe=_describe(self.key)
            )
        except (RuntimeError, OSError) as exc:
            raise EngineBuildError(f"TensorRT could not build an engine from {model_path}: {exc}") from exc
        log.info("TensorRT engine %s (%s in %.1f s)", self.engine_path, self.how, time.perf_counter() - start)
        self._context = self._engine.create_execution_context()
        self._lock = threading.Lock()
        self._setup_buffers()

    def _deserialize(self, plan: bytes) -> Any:
        """The engine, or None when ``plan`` is not an engine this TensorRT and GPU can load (TensorRT returns
        None and logs why; some versions raise instead)."""
        try:
            return self._runtime.deserialize_cuda_engine(plan)
        except Exception as exc:  # pybind11 turns TensorRT's failures into RuntimeError or TypeError
            log.warning("TensorRT could not deserialize the cached engine: %s", exc)
            return None

    # ------------------------------------------------------------------ build
    def _build(self, onnx_path: Path, timing_path: Path, optimization_level: int) -> bytes:
        trt, version = self._trt, self.version
        builder = trt.Builder(self._logger)
        flags = 0
        for name in compat.network_flag_names(version, self.precision):
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):  # reads the external weights beside the file
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineBuildError(f"TensorRT's ONNX parser refused {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, compat.workspace_bytes(self.device.total_memory, self.device.integrated)
        )
        for name in compat.builder_flag_names(version, self.precision):
            config.set_flag(getattr(trt.BuilderFlag, name))
        pinned = set(compat.fp32_layer_type_names(version, self.precision))
        for i in range(network.num_layers) if pinned else ():
            layer = network.get_layer(i)
            if layer.type.name in pinned:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
        if compat.has_optimization_level(version):
            config.builder_optimization_level = optimization_level
        p = self.profile
        prof = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            prof.set_shape(network.get_input(i).name, p.min, p.opt, p.max)
        config.add_optimization_profile(prof)
        cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
        config.set_timing_cache(cache, False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineBuildError(f"TensorRT could not build {onnx_path.name} (see its log above)")
        try:
            engine_cache.write_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
        except OSError as exc:
            log.warning("could not store TensorRT's timing cache at %s: %s", timing_path, exc)
        return bytes(plan)

    # ------------------------------------------------------------------ buffers
    def _setup_buffers(self) -> None:
        trt, engine, ctx = self._trt, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: np.dtype(compat.numpy_dtype_name(engine.get_tensor_dtype(n).name)) for n in names}
        for n in self._inputs:
            ctx.set_input_shape(n, self.profile.max)
        self._ptrs: dict[str, int] = {}
        for n in names:
            shape = tuple(self.profile.max) if n in self._inputs else tuple(ctx.get_tensor_shape(n))
            nbytes = int(np.prod(shape)) * self._dtypes[n].itemsize
            self._ptrs[n] = int(self._cuda.check(self._cuda.rt.cudaMalloc(nbytes)))
            ctx.set_tensor_address(n, self._ptrs[n])
        self._stream = self._cuda.check(self._cuda.rt.cudaStreamCreate())

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch, sequence = feeds["input_ids"].shape
        engine_cache.select_profile([self.profile], int(batch), int(sequence))
        rt, check = self._cuda.rt, self._cuda.check
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            held = []  # host arrays must outlive the asynchronous copies
            for n in self._inputs:
                arr = np.ascontiguousarray(feeds[n], dtype=self._dtypes[n])
                held.append(arr)
                if not self._context.set_input_shape(n, arr.shape):
                    raise BackendUnavailableError(f"TensorRT refused the shape {arr.shape} for input {n}")
                check(rt.cudaMemcpyAsync(self._ptrs[n], arr.ctypes.data, arr.nbytes, h2d, self._stream))
            if not self._context.execute_async_v3(self._stream):
                raise BackendUnavailableError("TensorRT failed to run the engine (see its log above)")
            out = {}
            for n in self._outputs:
                host = np.empty(tuple(self._context.get_tensor_shape(n)), dtype=self._dtypes[n])
                check(rt.cudaMemcpyAsync(host.ctypes.data, self._ptrs[n], host.nbytes, d2h, self._stream))
                out[n] = host
            check(rt.cudaStreamSynchronize(self._stream))
        return {n: v.astype(np.float32, copy=False) for n, v in out.items()}

    def close(self) -> None:
        """Free the device buffers and the stream (also done when the backend is garbage-collected)."""
        rt = getattr(getattr(self, "_cuda", None), "rt", None)
        if rt is None:
            return
        for ptr in getattr(self, "_ptrs", {}).values():
            rt.cudaFree(ptr)
        self._ptrs = {}
        if getattr(self, "_stream", None) is not None:
            rt.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: CUDA may already be gone
            self.close()


def _manifest_entry(model_path: Path) -> Any:
    """The manifest entry of ``model_path`` when it sits in a bundle, else None."""
    manifest = model_path.parent / MANIFEST_NAME
    if not manifest.exists():
        return None
    return next((f for f in Manifest.read(manifest).model_files() if f.path == model_path.name), None)


def _sha256(path: Path) -> str:
    from mbert_edge.bundle import sha256_file

    return sha256_file(path)


def _describe(key: engine_cache.EngineKey) -> dict:
    import dataclasses

    return {**dataclasses.asdict(key), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def build_engine(
    bundle_path: str | Path,
    precision: str | None = None,
    max_batch: int | None = None,
    max_length: int | None = None,
    opt_batch: int | None = None,
    opt_length: int | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Build (or find in the cache) the TensorRT engine of a bundle's TensorRT file on this device; return
    what was done. The limits default to the manifest's profile; larger ones make a new engine."""
    from mbert_edge.bundle import Bundle

    bundle = Bundle.open(bundle_path, verify=True)
    entry = TensorRTBackend.pick_file(bundle.manifest.model_files(), precision)
    if entry is None:
        raise BackendUnavailableError(
            f"{bundle_path} has no TensorRT file{f' at precision {precision}' if precision else ''}: re-export it "
            "with --target tensorrt --precision fp16 (or int8)"
        )
    base = (entry.profiles or (DEFAULT_PROFILE,))[0]
    mb, ml = max_batch or base.max[0], min(max_length or base.max[1], bundle.manifest.max_length)
    ob, ol = min(opt_batch or base.opt[0], mb), min(opt_length or base.opt[1], ml)
    profile = ShapeProfile(min=(1, 1), opt=(ob, ol), max=(mb, ml))
    backend = TensorRTBackend(
        bundle.file_path(entry),
        precision=entry.precision,
        profile=profile,
        cache_dir=Path(cache_dir) if cache_dir else None,
    )
    root = Path(cache_dir) if cache_dir else engine_cache.cache_root()
    engine_cache.write_profile_override(root, entry.sha256, None if profile == base else profile)
    info = {
        "file": entry.path,
        "precision": entry.precision,
        "engine": str(backend.engine_path),
        "how": backend.how,
        "device": backend.device.name,
        "compute_capability": ".".join(map(str, backend.device.compute_capability)),
        "tensorrt": ".".join(map(str, backend.version)),
        "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
    }
    backend.close()
    return info
