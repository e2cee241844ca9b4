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
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge.backends import engine_cache
from mbert_edge.backends import tensorrt_compat as compat
from mbert_edge.backends.base import Backend
from mbert_edge.errors import BackendUnavailableError, BundleIntegrityError, EngineBuildError, SigningError
from mbert_edge.manifest import MANIFEST_NAME, EngineSpec, FileEntry, Manifest, ShapeProfile
from mbert_edge.signing import SIGNATURE_NAME

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
    A prebuilt engine in the bundle (``build-engine --add-to-bundle``) is used when it fits this device, TensorRT
    and profile, and deserializes; otherwise (one log line says which key did not fit) the engine comes from the
    cache or is built. ``use_prebuilt=False`` ignores prebuilt engines. ``how`` says where the engine came from:
    ``"bundle"``, ``"cache"``, ``"built"`` or ``"rebuilt"``.
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
        use_prebuilt: bool = True,
    ) -> None:
        reason = missing_pieces()
        if reason:
            raise BackendUnavailableError(f"backend 'tensorrt' is not available: {reason}")
        import tensorrt as trt

        self._trt = trt
        self._cuda = _Cuda()
        self.version = compat.parse_version(trt.__version__)
        model_path = Path(model_path)
        manifest = _manifest(model_path)
        entry = _model_entry(manifest, model_path)
        self.precision = precision or (entry.precision if entry and entry.precision else "fp16")
        profiles = entry.profiles if entry and entry.profiles else (DEFAULT_PROFILE,)
        device = self._cuda.device()
        self.device = device
        root = Path(cache_dir) if cache_dir else engine_cache.cache_root()
        sha = entry.sha256 if entry else _sha256(model_path)
        # build-engine with other limits leaves them in the cache for every later load of this file
        asked = profile or engine_cache.read_profile_override(root, sha)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._built_hw_level: str | None = None
        #: the bundle's prebuilt engine in use (a manifest entry of role "engine"), or None
        self.prebuilt: FileEntry | None = None
        prebuilt_engine = None
        if use_prebuilt and manifest is not None and entry is not None:
            prebuilt_engine, self.prebuilt = self._load_prebuilt(model_path.parent, manifest, entry, asked)
        if self.prebuilt is not None and self.prebuilt.engine is not None:
            self.profile = self.prebuilt.engine.profiles[0]
        else:
            self.profile = asked or profiles[0]
        self.key = engine_cache.EngineKey(
            model_sha256=sha,
            precision=self.precision,
            profile=self.profile,
            tensorrt_version=trt.__version__,
            device=device.name,
            compute_capability=device.compute_capability,
            optimization_level=optimization_level,
        )
        self.optimization_level = optimization_level
        #: where this engine is (or would be) in the engine cache
        self.cache_path = engine_cache.engine_path(root, self.key)
        #: the engine file in use: the bundle's prebuilt engine, or the cache's
        self.engine_path = self.cache_path
        timing = engine_cache.timing_cache_path(root, device, trt.__version__)
        start = time.perf_counter()
        describe = _describe(self.key)

        def build() -> bytes:
            log.info(
                "building the TensorRT %s engine for %s (%s, sm_%d%d, TensorRT %s); this takes minutes once",
                self.precision,
                model_path.name,
                device.name,
                *device.compute_capability,
                trt.__version__,
            )
            plan = self._build(model_path, timing, optimization_level)
            describe["hardware_compatibility_level"] = self._built_hw_level
            return plan

        if prebuilt_engine is not None and self.prebuilt is not None:
            self._engine, self.how = prebuilt_engine, "bundle"
            self.engine_path = model_path.parent / self.prebuilt.path
        else:
            try:
                self._engine, self.how = engine_cache.load_or_build(
                    self.cache_path, self._deserialize, build, describe=describe
                )
            except (RuntimeError, OSError) as exc:
                raise EngineBuildError(f"TensorRT could not build an engine from {model_path}: {exc}") from exc
        log.info("TensorRT engine %s (%s in %.1f s)", self.engine_path, self.how, time.perf_counter() - start)
        self._context = self._engine.create_execution_context()
        self._lock = threading.Lock()
        self._setup_buffers()

    def _try_deserialize(self, plan: bytes) -> tuple[Any, str]:
        """``(engine, "")``, or ``(None, why)`` when ``plan`` is not an engine this TensorRT and GPU can load
        (TensorRT returns None and logs why; some versions raise instead)."""
        try:
            engine = self._runtime.deserialize_cuda_engine(plan)
        except Exception as exc:  # pybind11 turns TensorRT's failures into RuntimeError or TypeError
            return None, f"{type(exc).__name__}: {exc}"
        return engine, "" if engine is not None else "TensorRT returned no engine (its log above says why)"

    def _deserialize(self, plan: bytes) -> Any:
        """The cached engine, or None (logged) when it does not load here."""
        engine, why = self._try_deserialize(plan)
        if engine is None:
            log.warning("TensorRT could not deserialize the cached engine: %s", why)
        return engine

    def _load_prebuilt(
        self, root: Path, manifest: Manifest, model: FileEntry, asked: ShapeProfile | None
    ) -> tuple[Any, FileEntry | None]:
        """The first of the bundle's prebuilt engines of ``model`` that fits here, checksum-verified and
        deserialized, with its entry; ``(None, None)`` when none does (one warning per engine not used, naming
        the keys that do not fit). A fitting engine whose bytes fail their checksum raises
        :class:`~mbert_edge.errors.BundleIntegrityError`, like every bundle file."""
        trt, device = self._trt, self.device
        known = compat.known_hardware_compatibility_names(getattr(trt, "HardwareCompatibilityLevel", None))
        for f in manifest.engine_files(model):
            spec = f.engine
            if spec is None or f.precision != self.precision:
                continue  # another precision's engine: not a candidate
            why = compat.prebuilt_engine_mismatches(
                engine_gpu=spec.gpu,
                engine_compute_capability=spec.compute_capability_tuple(),
                engine_tensorrt=spec.tensorrt,
                engine_hardware_compatibility=spec.hardware_compatibility_level,
                gpu=device.name,
                compute_capability=device.compute_capability,
                tensorrt=trt.__version__,
                integrated=device.integrated,
                known_hardware_compatibility=known,
            )
            if spec.source_sha256 is not None and spec.source_sha256 != model.sha256:
                why.append(
                    f"source model (engine built from sha256 {spec.source_sha256[:12]}…, {model.path} is "
                    f"{model.sha256[:12]}…)"
                )
            if asked is not None and asked != spec.profiles[0]:
                why.append(f"profile (engine {_profile_text(spec.profiles[0])}, asked {_profile_text(asked)})")
            if why:
                log.warning(
                    "prebuilt TensorRT engine %s not used, %s does not fit this device; using the engine cache "
                    "or building",
                    f.path,
                    "; ".join(why),
                )
                continue
            engine, failure = self._try_deserialize(_read_verified(root, f))
            if engine is None:
                log.warning(
                    "prebuilt TensorRT engine %s not used, it does not deserialize here (%s); using the engine "
                    "cache or building",
                    f.path,
                    failure,
                )
                continue
            log.info(
                "TensorRT engine from the bundle: %s (%s, sm %s, TensorRT %s, hardware compatibility %s)",
                f.path,
                spec.gpu,
                spec.compute_capability,
                spec.tensorrt,
                spec.hardware_compatibility_level,
            )
            return engine, f
        return None, None

    @property
    def hardware_compatibility_level(self) -> str:
        """The ``HardwareCompatibilityLevel`` name of the engine in use: the bundle's record for a prebuilt engine;
        for a built one what the builder config said; for a cached one what was recorded beside it at its build,
        or else the default of a fresh builder config (what this backend builds with)."""
        if self.prebuilt is not None and self.prebuilt.engine is not None:
            return self.prebuilt.engine.hardware_compatibility_level
        if self._built_hw_level is not None:
            return self._built_hw_level
        with contextlib.suppress(OSError, ValueError, AttributeError):
            recorded = json.loads(self.cache_path.with_suffix(".json").read_text()).get("hardware_compatibility_level")
            if isinstance(recorded, str):
                return recorded
        config = self._trt.Builder(self._logger).create_builder_config()
        return compat.hardware_compatibility_name(getattr(config, "hardware_compatibility_level", None))

    def serialized_engine(self) -> bytes:
        """The engine in use as bytes (its file, else TensorRT's serialization of it)."""
        try:
            return self.engine_path.read_bytes()
        except OSError:
            return bytes(self._engine.serialize())

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
        # what the engine will run on besides this GPU: recorded with it (bundle manifests, the cache's .json)
        self._built_hw_level = compat.hardware_compatibility_name(getattr(config, "hardware_compatibility_level", None))
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


def _manifest(model_path: Path) -> Manifest | None:
    """The manifest of the bundle ``model_path`` sits in, else None."""
    manifest = model_path.parent / MANIFEST_NAME
    return Manifest.read(manifest) if manifest.exists() else None


def _manifest_entry(model_path: Path) -> FileEntry | None:
    """The manifest entry of ``model_path`` when it sits in a bundle, else None."""
    return _model_entry(_manifest(model_path), model_path)


def _model_entry(manifest: Manifest | None, model_path: Path) -> FileEntry | None:
    """The manifest entry of ``model_path``, else None."""
    if manifest is None:
        return None
    return next((f for f in manifest.model_files() if f.path == model_path.name), None)


def _profile_text(p: ShapeProfile) -> str:
    return f"min {list(p.min)} opt {list(p.opt)} max {list(p.max)}"


def _read_verified(root: Path, entry: FileEntry) -> bytes:
    """A bundle file's bytes, checked against its manifest size and SHA-256 (``BundleIntegrityError``)."""
    from mbert_edge.bundle import _check_inside

    path = root / entry.path
    _check_inside(root, path, entry.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleIntegrityError(
            f"bundle file {entry.path} cannot be read from {root} ({exc}); copy the bundle again"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.size or digest != entry.sha256:
        raise BundleIntegrityError(
            f"bundle file {entry.path} fails its checksum ({len(data)} bytes, sha256 {digest[:12]}…; manifest "
            f"{entry.size} bytes, {entry.sha256[:12]}…): it was altered or damaged; copy the bundle again or "
            "re-add the engine with `mbert-edge build-engine BUNDLE --add-to-bundle`"
        )
    return data


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
    add_to_bundle: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Build (or find in the cache) the TensorRT engine of a bundle's TensorRT file on this device; return
    what was done. The limits default to the manifest's profile; larger ones make a new engine.

    With ``add_to_bundle`` the engine is also written into the bundle as a prebuilt engine (a file of role
    ``engine`` whose manifest entry records this GPU, compute capability, TensorRT version, hardware
    compatibility level and profile), atomically; a signed bundle is refused unless ``force`` (its signature
    would no longer match: ``manifest.sig`` is removed and the bundle must be re-signed)."""
    from mbert_edge.bundle import Bundle

    bundle = Bundle.open(bundle_path, verify=True)
    if add_to_bundle:
        _refuse_if_signed(bundle.path, force)  # before minutes of building
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
    try:
        root = Path(cache_dir) if cache_dir else engine_cache.cache_root()
        engine_cache.write_profile_override(root, entry.sha256, None if profile == base else profile)
        info: dict[str, Any] = {
            "file": entry.path,
            "precision": entry.precision,
            "engine": str(backend.engine_path),
            "how": backend.how,
            "device": backend.device.name,
            "compute_capability": ".".join(map(str, backend.device.compute_capability)),
            "tensorrt": ".".join(map(str, backend.version)),
            "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
        }
        if add_to_bundle:
            info["hardware_compatibility_level"] = backend.hardware_compatibility_level
            if backend.prebuilt is not None:  # the bundle already holds an engine that fits here
                info.update(added=None, bundle_file=backend.prebuilt.path, signature_removed=False)
            else:
                spec = EngineSpec(
                    gpu=backend.device.name,
                    compute_capability=info["compute_capability"],
                    tensorrt=backend._trt.__version__,
                    hardware_compatibility_level=info["hardware_compatibility_level"],
                    profiles=(backend.profile,),
                    source_sha256=entry.sha256,
                    optimization_level=(
                        backend.optimization_level if compat.has_optimization_level(backend.version) else None
                    ),
                )
                signed = (bundle.path / SIGNATURE_NAME).exists()
                added = add_engine_to_bundle(bundle.path, entry, backend.serialized_engine(), spec, force=force)
                info.update(added=added.path, bundle_file=added.path, signature_removed=signed)
    finally:
        backend.close()
    return info


#: the manifest ``format`` of a prebuilt engine (TensorRT's serialized engine, a "plan")
ENGINE_FORMAT = "tensorrt-plan"


def engine_file_name(model_path: str, spec: EngineSpec) -> str:
    """The bundle file name of a prebuilt engine: the model file's name without ``.onnx``, then the GPU, compute
    capability and TensorRT version, e.g. ``model.trt-fp16.orin-sm87-trt10.3.0.plan``. Adding an engine for the
    same file, GPU and TensorRT replaces the earlier one."""
    base = model_path[: -len(".onnx")] if model_path.endswith(".onnx") else model_path
    gpu = re.sub(r"[^a-z0-9]+", "-", spec.gpu.lower()).strip("-") or "gpu"
    return f"{base}.{gpu}-sm{spec.compute_capability.replace('.', '')}-trt{spec.tensorrt}.plan"


def _refuse_if_signed(root: Path, force: bool) -> None:
    if force or not (root / SIGNATURE_NAME).exists():
        return
    raise SigningError(
        f"{root} is signed ({SIGNATURE_NAME}); adding an engine changes its manifest.json, so that signature would "
        "no longer match. Pass --force to add it anyway (manifest.sig is removed), then re-sign the bundle: "
        f"mbert-edge sign {root} --key PRIVATE_KEY (see docs/signing.md)"
    )


def add_engine_to_bundle(
    bundle_path: str | Path, model: FileEntry, plan: bytes, spec: EngineSpec, force: bool = False
) -> FileEntry:
    """Write ``plan`` (a serialized engine built from ``model`` for ``spec``) into the bundle with its manifest
    entry, replacing an engine of the same name; return the entry. All or nothing: the bundle is rebuilt in a
    staging directory beside it (unchanged files hard-linked, else copied) and swapped in by renames, so a
    failure leaves it as it was. A signed bundle needs ``force`` and loses its ``manifest.sig``."""
    root = Path(bundle_path)
    _refuse_if_signed(root, force)
    manifest = Manifest.read(root / MANIFEST_NAME)
    name = engine_file_name(model.path, spec)
    new = FileEntry(
        path=name,
        role="engine",
        size=len(plan),
        sha256=hashlib.sha256(plan).hexdigest(),
        backend="tensorrt",
        precision=model.precision,
        format=ENGINE_FORMAT,
        source=model.path,
        engine=spec,
    )
    updated = dataclasses.replace(manifest, files=[*(f for f in manifest.files if f.path != name), new])
    text = updated.to_json()
    Manifest.from_dict(json.loads(text))  # what is written must read back
    _rewrite_bundle(root, {name: plan, MANIFEST_NAME: text.encode("utf-8")}, drop={SIGNATURE_NAME})
    log.info("added the prebuilt TensorRT engine %s (%d bytes) to %s", name, len(plan), root)
    return new


def _rewrite_bundle(root: Path, writes: dict[str, bytes], drop: set[str]) -> None:
    """Replace ``root`` by a copy with ``writes`` (relative path -> bytes) written and ``drop`` left out, through a
    staging directory beside it and :func:`mbert_edge.bundle.swap_in`."""
    from mbert_edge.bundle import Bundle, swap_in

    stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        skip = {Path(n).parts[0] for n in drop} | {n for n in writes if len(Path(n).parts) == 1}
        for item in root.iterdir():
            if item.name in skip:
                continue
            dst = stage / item.name
            if item.is_symlink():
                os.symlink(os.readlink(item), dst)
            elif item.is_dir():
                shutil.copytree(item, dst, symlinks=True, copy_function=_link_or_copy)
            else:
                _link_or_copy(item, dst)
        for name, data in writes.items():
            _write_new(stage / name, data)
        Bundle.open(stage, verify=False)  # the staged bundle is complete: every listed file, with its size
        os.chmod(stage, root.stat().st_mode & 0o7777)  # mkdtemp made it owner-only
        swap_in(stage, root)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link ``src`` to ``dst`` (instant, no space), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_new(path: Path, data: bytes) -> None:
    """Write a staged file as a new inode (never through a hard link shared with the live bundle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
