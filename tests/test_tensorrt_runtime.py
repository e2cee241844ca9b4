"""The GPU backends without a GPU: version rules, engine-cache keys and invalidation, profile checks, backend
choice and every "not available" message, on CPU; plus ``gpu``-marked tests that need TensorRT and a GPU.

The per-version enum tables below were read from TensorRT's Python bindings sources (``pyCore.cpp``,
``pyGraph.cpp``, ``NvInfer.h`` at tags 8.5.3, v8.6.1, v10.3.0 and the 11.1 head; see docs/gpu.md): they check
that every name the compat module asks for exists in that version and that no integer value is assumed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mbert_edge import backends
from mbert_edge.backends import engine_cache
from mbert_edge.backends import tensorrt_compat as compat
from mbert_edge.backends.onnxruntime_gpu import OnnxRuntimeCUDABackend, OnnxRuntimeTensorRTBackend, trt_provider_options
from mbert_edge.backends.tensorrt import TensorRTBackend
from mbert_edge.errors import BackendUnavailableError, InvalidInputError, ShapeOutOfProfileError
from mbert_edge.manifest import FileEntry, ShapeProfile

NETWORK_FLAGS = {  # NetworkDefinitionCreationFlag members per major.minor
    (8, 5): {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
    (8, 6): {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
    (10, 3): {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
    (10, 13): {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
    (11, 1): {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
}
BUILDER_FLAGS_REMOVED_IN_11 = {"FP16", "INT8", "BF16", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}
LAYER_TYPES_8_5 = {"SOFTMAX"}  # NORMALIZATION arrives in 8.6
VERSIONS = sorted(NETWORK_FLAGS)

FP16_FILE = FileEntry(
    "model.trt-fp16.onnx",
    "model",
    1,
    "ab" * 32,
    backend="tensorrt",
    precision="fp16",
    format="onnx",
    profiles=(ShapeProfile((1, 1), (1, 128), (32, 512)),),
)
INT8_FILE = FileEntry("model.trt-int8.onnx", "model", 1, "cd" * 32, backend="tensorrt", precision="int8", format="onnx")
CPU_FILE = FileEntry("model.onnx", "model", 1, "ef" * 32, backend="onnxruntime", precision="fp32", format="onnx")


# ----------------------------------------------------------------------------------------------- versions
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_network_flags_exist_in_that_version(version, precision):
    names = compat.network_flag_names((*version, 0), precision)
    assert set(names) <= set(NETWORK_FLAGS[version])
    if version[0] == 11:
        assert names == []  # the "1 << 1" trap: bit 1 is PREFER_JIT_PYTHON_PLUGINS on 11, STRONGLY_TYPED on 10
    if version[0] == 8:
        assert names == ["EXPLICIT_BATCH"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_builder_flags_and_typing_per_version(version, precision):
    v = (*version, 0)
    flags = compat.builder_flag_names(v, precision)
    if version[0] >= 11:
        assert compat.strongly_typed(v, precision) and flags == []
        assert not set(flags) & BUILDER_FLAGS_REMOVED_IN_11
    elif version[0] == 10 and precision == "fp16":
        assert compat.strongly_typed(v, precision) and flags == []
        assert compat.network_flag_names(v, precision) == ["STRONGLY_TYPED"]
    else:  # 8.x, and int8 on 10.x: weak typing, flags on, the fp32 islands pinned
        assert not compat.strongly_typed(v, precision)
        assert "OBEY_PRECISION_CONSTRAINTS" in flags
        assert ("INT8" in flags) == (precision == "int8") and "FP16" in flags
        pinned = compat.fp32_layer_type_names(v, precision)
        assert "SOFTMAX" in pinned and ("NORMALIZATION" in pinned) == (v >= (8, 6, 0))
        if version == (8, 5):
            assert set(pinned) <= LAYER_TYPES_8_5


def test_version_parsing_and_support():
    assert compat.parse_version("10.3.0.26") == (10, 3, 0)
    assert compat.parse_version("8.6") == (8, 6, 0)
    with pytest.raises(ValueError):
        compat.parse_version("dev")
    assert compat.unsupported_reason((8, 5, 2)) is None
    assert compat.unsupported_reason((11, 4, 1)) is None
    assert "8.5" in compat.unsupported_reason((8, 4, 3))
    assert "newer" in compat.unsupported_reason((12, 0, 0))
    assert not compat.has_optimization_level((8, 5, 0)) and compat.has_optimization_level((8, 6, 1))
    assert compat.engine_memory_attr((11, 0, 0)) == "device_memory_size_v2"
    assert compat.engine_memory_attr((8, 6, 1)) == "device_memory_size"


def test_dtypes_follow_the_engine():
    assert compat.numpy_dtype_name("INT32") == "int32"  # TensorRT 8.x casts int64 ids down
    assert compat.numpy_dtype_name("INT64") == "int64"  # 10 and later keep them
    assert compat.numpy_dtype_name("HALF") == "float16"
    with pytest.raises(ValueError):
        compat.numpy_dtype_name("FP8")


def test_workspace_fits_small_jetsons():
    gib = 1 << 30
    assert compat.workspace_bytes(8 * gib, integrated=True) == gib  # Orin Nano 8 GB: capped at 1 GiB
    assert compat.workspace_bytes(2 * gib, integrated=True) == gib // 2
    assert compat.workspace_bytes(80 * gib, integrated=False) == 2 * gib
    assert compat.workspace_bytes(0, integrated=True) == 256 << 20


# ----------------------------------------------------------------------------------------------- engine cache
KEY = engine_cache.EngineKey("ab" * 32, "fp16", FP16_FILE.profiles[0], "10.3.0", "Orin", (8, 7))


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "cd" * 32},
        {"precision": "int8"},
        {"profile": ShapeProfile((1, 1), (1, 128), (16, 512))},
        {"tensorrt_version": "10.4.0"},
        {"device": "NVIDIA GeForce RTX 4090"},
        {"compute_capability": (8, 9)},
        {"optimization_level": 5},
    ],
)
def test_every_key_field_changes_the_engine(change, tmp_path):
    import dataclasses

    other = dataclasses.replace(KEY, **change)
    assert other.digest() != KEY.digest()
    assert engine_cache.engine_path(tmp_path, other) != engine_cache.engine_path(tmp_path, KEY)
    assert dataclasses.replace(KEY).digest() == KEY.digest()  # stable


def test_timing_cache_is_per_device_and_version(tmp_path):
    orin = engine_cache.DeviceInfo("Orin", (8, 7))
    a = engine_cache.timing_cache_path(tmp_path, orin, "10.3.0")
    assert a == engine_cache.timing_cache_path(tmp_path, orin, "10.3.0")
    assert a != engine_cache.timing_cache_path(tmp_path, orin, "10.4.0")
    assert a != engine_cache.timing_cache_path(tmp_path, engine_cache.DeviceInfo("Thor", (11, 0)), "10.3.0")


class _Builds:
    """A fake builder and deserializer: engines are bytes; b"bad" does not deserialize."""

    def __init__(self, plan: bytes = b"plan") -> None:
        self.plan, self.built = plan, 0

    def build(self) -> bytes:
        self.built += 1
        return self.plan

    @staticmethod
    def deserialize(data: bytes) -> str | None:
        return None if data.startswith(b"bad") else "engine:" + data.decode()


def test_build_then_reuse_then_rebuild_a_broken_engine(tmp_path):
    path = engine_cache.engine_path(tmp_path, KEY)
    b = _Builds()
    assert engine_cache.load_or_build(path, b.deserialize, b.build, {"k": 1}) == ("engine:plan", "built")
    assert path.read_bytes() == b"plan" and path.with_suffix(".json").exists()
    assert engine_cache.load_or_build(path, b.deserialize, b.build) == ("engine:plan", "cache")
    assert b.built == 1
    path.write_bytes(b"bad: truncated or from another TensorRT")
    assert engine_cache.load_or_build(path, b.deserialize, b.build) == ("engine:plan", "rebuilt")
    assert b.built == 2 and path.read_bytes() == b"plan"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_failed_build_leaves_no_engine(tmp_path):
    path = engine_cache.engine_path(tmp_path, KEY)

    def fail() -> bytes:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        engine_cache.load_or_build(path, _Builds.deserialize, fail)
    assert not path.exists()
    with pytest.raises(RuntimeError, match="just built"):
        engine_cache.load_or_build(path, _Builds.deserialize, _Builds(b"bad").build)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unwritable_cache_still_gives_an_engine(tmp_path):
    root = tmp_path / "ro"
    path = engine_cache.engine_path(root, KEY)
    path.parent.mkdir(parents=True)
    path.parent.chmod(0o500)
    try:
        assert engine_cache.load_or_build(path, _Builds.deserialize, _Builds().build)[1] == "built"
    finally:
        path.parent.chmod(0o700)


def test_profile_override_round_trip(tmp_path):
    p = ShapeProfile((1, 1), (4, 64), (64, 256))
    assert engine_cache.read_profile_override(tmp_path, KEY.model_sha256) is None
    engine_cache.write_profile_override(tmp_path, KEY.model_sha256, p)
    assert engine_cache.read_profile_override(tmp_path, KEY.model_sha256) == p
    engine_cache.write_profile_override(tmp_path, KEY.model_sha256, None)
    assert engine_cache.read_profile_override(tmp_path, KEY.model_sha256) is None


def test_shapes_are_checked_against_the_profiles():
    profiles = [ShapeProfile((1, 1), (1, 128), (8, 128)), ShapeProfile((1, 129), (1, 256), (2, 512))]
    assert engine_cache.select_profile(profiles, 8, 128) == 0
    assert engine_cache.select_profile(profiles, 2, 300) == 1
    with pytest.raises(ShapeOutOfProfileError, match=r"4 texts x 300 tokens.*batch 1-8 x tokens 1-128"):
        engine_cache.select_profile(profiles, 4, 300)
    assert issubclass(ShapeOutOfProfileError, InvalidInputError)


def test_gpu_detection_from_the_filesystem(tmp_path):
    assert engine_cache.nvidia_gpu_present(tmp_path) == (
        False,
        "no NVIDIA GPU: no NVIDIA driver (/proc/driver/nvidia/gpus) and no /dev/nvidia0",
    )
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0")
    present, why = engine_cache.nvidia_gpu_present(tmp_path)
    assert not present and "--runtime nvidia" in why
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/nvhost-ctrl-gpu").touch()
    assert engine_cache.nvidia_gpu_present(tmp_path)[0]
    desk = tmp_path / "desk"
    (desk / "proc/driver/nvidia/gpus/0000:01:00.0").mkdir(parents=True)
    assert engine_cache.nvidia_gpu_present(desk) == (True, "NVIDIA driver lists 1 GPU(s)")


# ----------------------------------------------------------------------------------------------- backend choice
def test_gpu_backends_say_what_is_missing_here():
    if TensorRTBackend.is_available():
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(BackendUnavailableError, match=r"backend 'tensorrt' is not available on this machine: "):
        backends.choose("tensorrt", [FP16_FILE, CPU_FILE])
    with pytest.raises(BackendUnavailableError, match="is not available"):
        TensorRTBackend(Path("model.trt-fp16.onnx"))
    for cls in (OnnxRuntimeCUDABackend, OnnxRuntimeTensorRTBackend):
        if cls.is_available():
            continue
        with pytest.raises(BackendUnavailableError, match=r"onnxruntime-gpu|no NVIDIA GPU"):
            backends.choose(cls.name, [FP16_FILE, CPU_FILE])


def test_auto_falls_back_to_the_cpu(caplog):
    if TensorRTBackend.is_available() or OnnxRuntimeCUDABackend.is_available():
        pytest.skip("a GPU backend is available here")
    import logging

    with caplog.at_level(logging.INFO, logger="mbert_edge.backends"):
        cls, entry = backends.choose("auto", [FP16_FILE, INT8_FILE, CPU_FILE])
    assert cls.name == "onnxruntime" and entry is CPU_FILE
    assert "backend auto: onnxruntime" in caplog.text
    with pytest.raises(BackendUnavailableError, match=r"model\.trt-fp16\.onnx"):
        backends.choose("auto", [FP16_FILE, INT8_FILE])  # TensorRT files only, and no GPU


def test_libraries_present_but_no_gpu(monkeypatch):
    """TensorRT and cuda-python installed on a machine without a GPU (a CI runner, a laptop)."""
    from mbert_edge.backends import tensorrt as trt_backend

    monkeypatch.setattr(trt_backend, "_find", lambda module: True)
    monkeypatch.setattr(engine_cache, "nvidia_gpu_present", lambda root=None: (False, "no NVIDIA GPU: fake"))
    assert TensorRTBackend.unavailable_reason() == "no NVIDIA GPU: fake"
    with pytest.raises(BackendUnavailableError, match="no NVIDIA GPU: fake"):
        backends.choose("tensorrt", [FP16_FILE])


def test_provider_list_present_but_no_gpu(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    )
    monkeypatch.setattr(engine_cache, "nvidia_gpu_present", lambda root=None: (False, "no NVIDIA GPU: fake"))
    assert OnnxRuntimeCUDABackend.unavailable_reason() == "no NVIDIA GPU: fake"
    with pytest.raises(BackendUnavailableError, match=r"onnxruntime-cuda.*no NVIDIA GPU: fake"):
        backends.choose("onnxruntime-cuda", [FP16_FILE])


def test_file_choice_per_backend():
    files = [FP16_FILE, INT8_FILE, CPU_FILE]
    assert TensorRTBackend.pick_file(files) is FP16_FILE
    assert TensorRTBackend.pick_file(files, "int8") is INT8_FILE
    assert TensorRTBackend.pick_file([CPU_FILE]) is None
    assert OnnxRuntimeCUDABackend.pick_file(files) is FP16_FILE
    assert OnnxRuntimeCUDABackend.pick_file([CPU_FILE]) is CPU_FILE  # the plain fp32 export runs on CUDA too
    cpu_int8 = FileEntry(
        "model.int8.onnx", "model", 1, "00" * 32, backend="onnxruntime", precision="int8", format="onnx"
    )
    assert OnnxRuntimeCUDABackend.pick_file([cpu_int8]) is None  # its contrib ops would run on the CPU


def test_ort_tensorrt_provider_options(tmp_path):
    opts = trt_provider_options(tmp_path, ShapeProfile((1, 1), (1, 128), (32, 512)), ["input_ids", "attention_mask"])
    assert opts["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert opts["trt_profile_opt_shapes"] == "input_ids:1x128,attention_mask:1x128"
    assert opts["trt_profile_max_shapes"] == "input_ids:32x512,attention_mask:32x512"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_timing_cache_path"] == str(tmp_path)
    assert opts["trt_fp16_enable"] == opts["trt_int8_enable"] == "False"  # strongly typed: precision from the file


def test_build_engine_cli_without_a_gpu(bundles, capsys):
    from mbert_edge.cli import main

    if TensorRTBackend.is_available():
        pytest.skip("TensorRT and a GPU are present")
    assert main(["build-engine", str(bundles["feature-extraction"])]) == 1
    assert "has no TensorRT file" in capsys.readouterr().err
    assert main(["build-engine", str(bundles["feature-extraction"]), "--max-batch", "0"]) == 1
    assert "--max-batch must be a positive number" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- on a GPU
_trt_missing = TensorRTBackend.unavailable_reason()


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory, checkpoints):
    from mbert_edge_export import export_bundle
    from mbert_edge_export.quantize.gate import Thresholds
    from mbert_edge_export.tensorrt import TensorRTSettings

    settings = TensorRTSettings(precisions=("fp16", "int8"), max_batch=16, thresholds=Thresholds(0.5, 0.9))
    return export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path_factory.mktemp("gpu") / "b",
        tensorrt=settings,
        calibration_size=32,
        eval_size=64,
    )


TEXTS = ["Where is the station?", "Wo ist der Bahnhof?", "Где вокзал?", "駅はどこですか？", "المحطة أين؟"]


@pytest.mark.gpu
@pytest.mark.skipif(_trt_missing is not None, reason=f"needs TensorRT and an NVIDIA GPU: {_trt_missing}")
@pytest.mark.parametrize(("precision", "min_cos"), [("fp16", 0.999), ("int8", 0.95)])
def test_tensorrt_matches_the_cpu(gpu_bundle, tmp_path, monkeypatch, precision, min_cos):
    import numpy as np

    import mbert_edge

    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path))
    cpu = mbert_edge.load(gpu_bundle, backend="onnxruntime").embed(TEXTS)
    gpu = mbert_edge.load(gpu_bundle, backend="tensorrt", precision=precision)
    assert gpu.backend.how == "built"
    got = gpu.embed(TEXTS)
    assert float((cpu * got).sum(1).min()) >= min_cos
    again = mbert_edge.load(gpu_bundle, backend="tensorrt", precision=precision)
    assert again.backend.how == "cache" and np.allclose(again.embed(TEXTS), got, atol=1e-3)
    with pytest.raises(ShapeOutOfProfileError):
        again.backend.run({n: np.ones((17, 8), dtype=np.int64) for n in again.backend.input_names})


@pytest.mark.gpu
@pytest.mark.skipif(_trt_missing is not None, reason=f"needs TensorRT and an NVIDIA GPU: {_trt_missing}")
def test_a_foreign_engine_is_rebuilt(gpu_bundle, tmp_path, monkeypatch):
    import mbert_edge

    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path))
    first = mbert_edge.load(gpu_bundle, backend="tensorrt")
    first.backend.engine_path.write_bytes(b"an engine from another GPU or TensorRT")
    assert mbert_edge.load(gpu_bundle, backend="tensorrt").backend.how == "rebuilt"


@pytest.mark.gpu
@pytest.mark.skipif(
    not OnnxRuntimeCUDABackend.is_available(),
    reason=f"needs onnxruntime-gpu and an NVIDIA GPU: {OnnxRuntimeCUDABackend.unavailable_reason()}",
)
def test_onnxruntime_cuda_matches_the_cpu(gpu_bundle):
    import mbert_edge

    cpu = mbert_edge.load(gpu_bundle, backend="onnxruntime").embed(TEXTS)
    got = mbert_edge.load(gpu_bundle, backend="onnxruntime-cuda").embed(TEXTS)
    assert float((cpu * got).sum(1).min()) >= 0.999


# ----------------------------------------------------------------------------------------------- fake TensorRT
class _Enum:
    """A stand-in for a pybind11 enum: members by name, each with ``.name`` and an int value."""

    def __init__(self, **members: int) -> None:
        for name, value in members.items():
            setattr(self, name, type("Member", (int,), {"name": name})(value))


def _fake_trt(version: str, id_dtype: str):
    """The subset of TensorRT's Python API the backend calls, running a toy "model" on the host: the output is
    input_ids * attention_mask broadcast to 4 hidden units. ``id_dtype`` is what the engine makes of the ids
    (INT32 on 8.x, INT64 on 10+)."""
    import types

    import numpy as np

    trt = types.SimpleNamespace(__version__=version, float32="float32", calls=[])
    major = int(version.split(".")[0])
    flags = NETWORK_FLAGS[(major, int(version.split(".")[1]))]
    trt.NetworkDefinitionCreationFlag = _Enum(**flags)
    trt.BuilderFlag = _Enum(**({} if major >= 11 else {"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 2}))
    trt.MemoryPoolType = _Enum(WORKSPACE=0)
    trt.TensorIOMode = _Enum(INPUT=1, OUTPUT=2)
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    dtypes = _Enum(FLOAT=0, INT32=3, INT64=8)
    inputs, output = ["input_ids", "attention_mask"], "last_hidden_state"

    class Layer:
        def __init__(self, kind: str) -> None:
            self.type, self.num_outputs, self.precision, self.out = _Enum(**{kind: 0}).__dict__[kind], 1, None, {}

        def set_output_type(self, i, t):
            self.out[i] = t

    class Network:
        def __init__(self, flags):
            trt.calls.append(("create_network", flags))
            self.layers = [Layer("NORMALIZATION"), Layer("SOFTMAX"), Layer("MATRIX_MULTIPLY")]
            self.num_layers, self.num_inputs = len(self.layers), len(inputs)

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return types.SimpleNamespace(name=inputs[i])

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.builder_optimization_level = [], [], None

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def set_flag(self, flag):
            self.flags.append(flag.name)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def create_timing_cache(self, data):
            return types.SimpleNamespace(serialize=lambda: b"timing")

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache

        def get_timing_cache(self):
            return self.timing

    class Profile(dict):
        def set_shape(self, name, mn, opt, mx):
            self[name] = (mn, opt, mx)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            self.network = Network(flags)
            return self.network

        create_builder_config = staticmethod(Config)
        create_optimization_profile = staticmethod(Profile)

        def build_serialized_network(self, network, config):
            pinned = [la.type.name for la in network.layers if la.precision == "float32"]
            trt.calls.append(("build", sorted(config.flags), pinned, dict(config.profiles[0])))
            return b"ENGINE"

    class Parser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return Path(path).exists()

    class Context:
        def __init__(self, engine):
            self.shapes, self.addr = {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return (*self.shapes["input_ids"], 4) if name == output else self.shapes[name]

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            b, s = self.shapes["input_ids"]
            n = b * s
            ids = np.frombuffer(_MEM[self.addr["input_ids"]], dtype=id_dtype.lower())[:n]
            mask = np.frombuffer(_MEM[self.addr["attention_mask"]], dtype=id_dtype.lower())[:n]
            out = np.repeat((ids * mask).astype(np.float32)[:, None], 4, axis=1)
            _MEM[self.addr[output]][: out.nbytes] = out.tobytes()
            return True

    class Engine:
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return [*inputs, output][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.OUTPUT if name == output else trt.TensorIOMode.INPUT

        def get_tensor_dtype(self, name):
            return dtypes.FLOAT if name == output else getattr(dtypes, id_dtype)

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return Engine() if bytes(plan) == b"ENGINE" else None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


_MEM: dict[int, bytearray] = {}


def _fake_cudart():
    """cuda-python's runtime calls the backend makes, over host memory."""
    import ctypes
    import types

    ok = 0
    rt = types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=ok))
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h")
    rt.cudaGetErrorName = lambda err: (ok, b"cudaErrorFake")
    rt.cudaGetDevice = lambda: (ok, 0)
    props = types.SimpleNamespace(name=b"Fake Orin\x00", major=8, minor=7, totalGlobalMem=8 << 30, integrated=1)
    rt.cudaGetDeviceProperties = lambda dev: (ok, props)

    def malloc(n):
        ptr = 1000 + len(_MEM)
        _MEM[ptr] = bytearray(n)
        return ok, ptr

    def memcpy(dst, src, n, kind, stream):
        if kind == "h2d":
            _MEM[dst][:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(_MEM[src][:n]), n)
        return (ok,)

    rt.cudaMalloc, rt.cudaMemcpyAsync = malloc, memcpy
    rt.cudaFree = lambda ptr: (_MEM.pop(ptr, None), ok)[1:]
    rt.cudaStreamCreate = lambda: (ok, "stream")
    rt.cudaStreamSynchronize = lambda s: (ok,)
    rt.cudaStreamDestroy = lambda s: (ok,)
    return rt


@pytest.mark.parametrize(("version", "id_dtype"), [("8.6.1", "INT32"), ("10.3.0", "INT64"), ("11.1.0", "INT64")])
def test_backend_glue_with_a_fake_tensorrt(tmp_path, monkeypatch, version, id_dtype):
    """The backend's calls, in order, against a stand-in of TensorRT's API (the API names themselves are checked
    against TensorRT's sources above, and for real only by the gpu tests): flags by version, fp32 islands
    pinned when weakly typed, profile, timing cache, cache reuse, int64 feeds cast to the engine's id type,
    buffers reused, the profile check."""
    import sys

    import numpy as np

    from mbert_edge.backends import tensorrt as trt_backend

    trt = _fake_trt(version, id_dtype)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "missing_pieces", lambda: None)
    monkeypatch.setattr(trt_backend, "import_cudart", _fake_cudart)
    model = tmp_path / "model.trt-int8.onnx"
    model.write_bytes(b"onnx")
    profile = ShapeProfile((1, 1), (1, 8), (4, 16))
    backend = TensorRTBackend(model, precision="int8", profile=profile, cache_dir=tmp_path / "cache")
    assert backend.how == "built" and backend.engine_path.read_bytes() == b"ENGINE"
    assert backend.device == engine_cache.DeviceInfo("Fake Orin", (8, 7), 8 << 30, True)
    (_, flags), (_, workspace), (_, builder_flags, pinned, shapes) = trt.calls
    v = compat.parse_version(version)
    assert flags == sum(
        1 << int(getattr(trt.NetworkDefinitionCreationFlag, n)) for n in compat.network_flag_names(v, "int8")
    )
    assert builder_flags == sorted(compat.builder_flag_names(v, "int8"))
    assert pinned == (["NORMALIZATION", "SOFTMAX"] if v[0] < 11 else [])
    assert shapes == {n: ((1, 1), (1, 8), (4, 16)) for n in ("input_ids", "attention_mask")}
    assert workspace == 1 << 30  # an 8 GB Jetson: 1 GiB
    assert engine_cache.timing_cache_path(tmp_path / "cache", backend.device, version).read_bytes() == b"timing"

    ids = np.array([[101, 7, 8, 102], [101, 9, 102, 0]], dtype=np.int64)
    mask = (ids > 0).astype(np.int64)
    for _ in range(2):  # buffers are reused
        out = backend.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
        assert out["last_hidden_state"].dtype == np.float32
        assert np.array_equal(out["last_hidden_state"][..., 0], (ids * mask).astype(np.float32))
    with pytest.raises(ShapeOutOfProfileError):
        backend.run({"input_ids": np.ones((5, 4), np.int64), "attention_mask": np.ones((5, 4), np.int64)})
    backend.close()
    again = TensorRTBackend(model, precision="int8", profile=profile, cache_dir=tmp_path / "cache")
    assert again.how == "cache" and len(trt.calls) == 3  # no second build
    again.close()
