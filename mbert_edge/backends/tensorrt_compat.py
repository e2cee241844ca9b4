"""What differs between TensorRT 8.5 and 11.x, as pure functions of the version (no TensorRT import).

Everything the backend sets on TensorRT by name goes through here, and by *enum name*, never by integer
value: a network-creation flag's bit means different things across versions (``1 << 1`` is
``STRONGLY_TYPED`` on 10.x and ``PREFER_JIT_PYTHON_PLUGINS`` on 11.x; ``EXPLICIT_BATCH`` is bit 0 on 8.x and
10.x, ignored on 10.x and gone from 11's Python enum). The backend resolves each name with ``getattr`` on
the imported module, so a name missing from a version fails loudly instead of setting the wrong bit.

Typing modes: TensorRT 11 builds every network strongly typed (precision comes from the ONNX file: the fp16
file's fp32 islands, the int8 file's Q/DQ); it removed the FP16/INT8 builder flags and the precision
constraints. TensorRT 10 has both modes; 8.5/8.6 only the weak one (FP16/INT8 flags; the fp32 islands are
kept by setting those layers' precision and obeying it).
"""

from __future__ import annotations

import re

#: oldest and newest-major TensorRT this backend supports: 8.5 has the name-based tensor API
#: (set_input_shape, set_tensor_address, execute_async_v3); 12 does not exist yet
MIN_VERSION = (8, 5)
MAX_MAJOR = 11


def parse_version(text: str) -> tuple[int, int, int]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)``; raises ValueError on anything else."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def unsupported_reason(version: tuple[int, ...]) -> str | None:
    """Why this TensorRT version cannot be used, or None when it can."""
    if tuple(version[:2]) < MIN_VERSION:
        return (
            f"TensorRT {'.'.join(map(str, version))} is older than {MIN_VERSION[0]}.{MIN_VERSION[1]} (the first with "
            "the name-based tensor API); on Jetson that means JetPack 5.1 or newer"
        )
    if version[0] > MAX_MAJOR:
        return f"TensorRT {version[0]}.x is newer than this mbert-edge knows (up to {MAX_MAJOR}.x); upgrade mbert-edge"
    return None


def strongly_typed(version: tuple[int, ...], precision: str) -> bool:
    """Whether to build strongly typed: always on 11; on 10 for the fp16 file (its fp32 islands are in the
    graph) but not for int8 (weak typing with the FP16 flag lets TensorRT run the unquantized layers in fp16);
    never on 8.x (no such mode)."""
    if version[0] >= 11:
        return True
    if version[0] == 10:
        return precision != "int8"
    return False


def network_flag_names(version: tuple[int, ...], precision: str) -> list[str]:
    """``NetworkDefinitionCreationFlag`` members to set, by name."""
    if version[0] >= 11:
        return []  # always strongly typed and explicit batch; STRONGLY_TYPED is deprecated and ignored
    if version[0] == 10:
        return ["STRONGLY_TYPED"] if strongly_typed(version, precision) else []  # EXPLICIT_BATCH: ignored on 10
    return ["EXPLICIT_BATCH"]  # 8.x: required for dynamic shapes


def builder_flag_names(version: tuple[int, ...], precision: str) -> list[str]:
    """``BuilderFlag`` members to set, by name: none when strongly typed (11 removed FP16/INT8)."""
    if strongly_typed(version, precision):
        return []
    flags = ["FP16"] if precision == "fp16" else ["INT8", "FP16"]  # Q/DQ needs INT8 on 8.x/10.x weak typing
    return [*flags, "OBEY_PRECISION_CONSTRAINTS"]  # keep the fp32 islands (see fp32_layer_type_names)


def fp32_layer_type_names(version: tuple[int, ...], precision: str) -> list[str]:
    """``LayerType`` members whose layers are pinned to fp32 when weakly typed (the fp32 islands of the
    graph: TensorRT may otherwise run them in fp16 under the FP16 flag). Empty when strongly typed."""
    if strongly_typed(version, precision):
        return []
    names = ["SOFTMAX"]
    if tuple(version[:2]) >= (8, 6):
        names.append("NORMALIZATION")  # 8.6 maps opset-17 LayerNormalization to INormalizationLayer
    return names


def has_optimization_level(version: tuple[int, ...]) -> bool:
    """``IBuilderConfig.builder_optimization_level`` exists from 8.6."""
    return tuple(version[:2]) >= (8, 6)


def engine_memory_attr(version: tuple[int, ...]) -> str:
    """The engine attribute holding its activation memory: ``device_memory_size_v2`` from 10.x (11 removed the
    old one)."""
    return "device_memory_size_v2" if version[0] >= 10 else "device_memory_size"


def numpy_dtype_name(trt_dtype_name: str) -> str:
    """The numpy dtype for a TensorRT ``DataType`` member name (from ``engine.get_tensor_dtype(n).name``).

    Input ids are what each version made of the ONNX int64 inputs: INT64 on 10 and later, INT32 on 8.x (its
    parser casts int64 down), so the backend casts its int64 feeds to whatever this says.
    """
    table = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "INT8": "int8", "BOOL": "bool"}
    if trt_dtype_name not in table:
        raise ValueError(f"unsupported TensorRT tensor type {trt_dtype_name}")
    return table[trt_dtype_name]


def workspace_bytes(total_device_memory: int, integrated: bool) -> int:
    """The builder's workspace limit: a quarter of the device's memory, at most 2 GiB on a discrete GPU and
    at most 1 GiB on an integrated one (Jetson: CPU and GPU share e.g. the 8 GB of an Orin Nano with the
    tokenizer, the bundle and the OS; builds that take more get killed), and at least 256 MiB."""
    cap = (1 if integrated else 2) << 30
    return max(256 << 20, min(cap, total_device_memory // 4))


# ------------------------------------------------------------------------------------------ prebuilt engines
#: ``HardwareCompatibilityLevel`` members, by name (the enum exists from 8.6; before it every engine is NONE)
HW_COMPAT_NONE = "NONE"  # only the GPU it was built on (we also require the same GPU model, see below)
HW_COMPAT_AMPERE_PLUS = "AMPERE_PLUS"  # any Ampere or newer discrete GPU (sm 8.0+); not on Jetson/DRIVE
HW_COMPAT_SAME_COMPUTE_CAPABILITY = "SAME_COMPUTE_CAPABILITY"  # any GPU of the same compute capability
AMPERE = (8, 0)


def hardware_compatibility_name(config_level: object | None) -> str:
    """The name of a builder config's ``hardware_compatibility_level`` (an enum member, or None on 8.5, which has
    no such attribute: its engines are all ``NONE``)."""
    if config_level is None:
        return HW_COMPAT_NONE
    return str(getattr(config_level, "name", config_level))


def same_tensorrt_version(built: str, here: str) -> bool:
    """Whether an engine built by TensorRT ``built`` loads on TensorRT ``here``: the same version down to the patch
    and, when both name one, the build number (TensorRT's rule for engines built without ``VERSION_COMPATIBLE``,
    which this backend never sets). ``"10.3.0"`` fits ``"10.3.0.26"``; ``"10.3.1"`` does not."""
    a, b = _version_parts(built), _version_parts(here)
    if a is None or b is None:
        return False
    n = min(len(a), len(b))
    return n >= 3 and a[:n] == b[:n]


def _version_parts(text: str) -> tuple[int, ...] | None:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*", text)
    if not m:
        return None
    parts = [int(g) for g in m.groups() if g is not None]
    return tuple(parts + [0] * (3 - len(parts))) if len(parts) < 3 else tuple(parts)


def prebuilt_engine_mismatches(
    *,
    engine_gpu: str,
    engine_compute_capability: tuple[int, int],
    engine_tensorrt: str,
    engine_hardware_compatibility: str,
    gpu: str,
    compute_capability: tuple[int, int],
    tensorrt: str,
    integrated: bool,
    known_hardware_compatibility: frozenset[str] | set[str],
) -> list[str]:
    """Why an engine built for the first set of keys cannot run here (the second set), one phrase per key that
    does not fit, in a fixed order; empty when it fits. The rules, by ``HardwareCompatibilityLevel`` name:

    * TensorRT: the same version (:func:`same_tensorrt_version`), whatever the level;
    * the level must be one this TensorRT knows (``known_hardware_compatibility``: the members of its enum);
      ``AMPERE_PLUS`` also needs a discrete GPU (TensorRT supports hardware compatibility on neither JetPack nor
      DRIVE OS) of compute capability 8.0 or newer;
    * ``NONE``: the same compute capability and the same GPU model (TensorRT itself loads an engine on another
      model of the same compute capability with a warning that it may be slower or fail; we build instead);
    * ``SAME_COMPUTE_CAPABILITY``: the same compute capability, any GPU model;
    * ``AMPERE_PLUS``: any compute capability from 8.0, any GPU model.
    """
    out = []
    if not same_tensorrt_version(engine_tensorrt, tensorrt):
        out.append(f"TensorRT version (engine {engine_tensorrt}, here {tensorrt})")
    level = engine_hardware_compatibility
    cc_e, cc_h = ".".join(map(str, engine_compute_capability)), ".".join(map(str, compute_capability))
    if level not in known_hardware_compatibility:
        out.append(
            f"hardware compatibility level (engine {level}, not one that TensorRT {tensorrt} and this mbert-edge "
            f"both know here: {', '.join(sorted(known_hardware_compatibility))})"
        )
        return out  # the other keys mean nothing under a level we cannot interpret
    if level == HW_COMPAT_AMPERE_PLUS:
        if integrated:
            out.append(f"hardware compatibility level (engine {level}, which Jetson/integrated GPUs do not support)")
        elif tuple(compute_capability) < AMPERE:
            out.append(f"hardware compatibility level (engine {level} needs sm 8.0 or newer, here sm {cc_h})")
        return out
    if tuple(engine_compute_capability) != tuple(compute_capability):
        out.append(f"compute capability (engine sm {cc_e}, here sm {cc_h}; hardware compatibility {level})")
    if level == HW_COMPAT_NONE and engine_gpu != gpu:
        out.append(f"GPU (engine {engine_gpu!r}, here {gpu!r}; hardware compatibility {level})")
    return out


def known_hardware_compatibility_names(enum: object | None) -> frozenset[str]:
    """The ``HardwareCompatibilityLevel`` member names a TensorRT module offers (``trt.HardwareCompatibilityLevel``,
    None on 8.5, which has only the implicit ``NONE``)."""
    names = {HW_COMPAT_NONE}
    for name in (HW_COMPAT_AMPERE_PLUS, HW_COMPAT_SAME_COMPUTE_CAPABILITY):
        if enum is not None and hasattr(enum, name):
            names.add(name)
    return frozenset(names)
