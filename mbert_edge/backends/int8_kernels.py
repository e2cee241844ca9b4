"""Whether this CPU's ONNX Runtime multiplies INT8 exactly: its u8 x s8 products saturate without VNNI.

ONNX Runtime's integer GEMM (MLAS) multiplies uint8 activations by int8 weights. On x86 CPUs with int8
dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX) that product is exact. On x86 CPUs without them (AVX2
only, or AVX-512 without VNNI) MLAS uses ``vpmaddubsw``, which adds each two neighbouring products in 16 bits
and clamps the sum to [-32768, 32767]: ``255 * 127 + 255 * 127`` comes out as 32767, not 64770 (ONNX Runtime's
documented u8s8 caveat). The same INT8 file then gives other answers on such a CPU, and an INT8 accuracy gate
run there reads lower than on a VNNI CPU; docs/int8.md ("CPUs without int8 dot products") measures both.

:func:`u8s8_saturates` asks ONNX Runtime itself, once per process, on a one-node graph whose exact answer is
known (:func:`probe_model`), rather than reading CPU flags: it sees the kernel that actually runs, on any
operating system and ONNX Runtime version. OpenVINO's CPU plugin (oneDNN) multiplies the same way and clamps
the same way on the same CPUs; :func:`openvino_u8s8_saturates` asks it on a QDQ graph (:func:`qdq_probe_model`),
the form of the files NNCF writes for ``--target openvino`` (OpenVINO runs a bare ``MatMulInteger`` exactly, so
that probe would not see its integer kernels). The export's INT8 report records the answer for the machine and
runtime that ran the gate, and ``mbert-edge info`` prints it for the machine it runs on. The probe models are
written with a few lines of protobuf encoding: the runtime does not depend on the ``onnx`` package.
"""

from __future__ import annotations

import functools
import logging
import struct
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: the runtimes an INT8 report's ``gate_cpu.runtime`` names, as reports print them
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}

_PROBE_M, _PROBE_K, _PROBE_N = 4, 64, 16
_FLOAT, _UINT8, _INT8, _INT32 = 1, 2, 3, 6  # onnx TensorProto.DataType


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _int_field(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _value_info(name: str, elem_type: int, dims: tuple[int, ...]) -> bytes:
    shape = b"".join(_bytes_field(1, _int_field(1, d)) for d in dims)  # TensorShapeProto.dim {dim_value}
    tensor_type = _int_field(1, elem_type) + _bytes_field(2, shape)  # TypeProto.Tensor {elem_type, shape}
    return _bytes_field(1, name.encode()) + _bytes_field(2, _bytes_field(1, tensor_type))  # ValueInfoProto


def _tensor(name: str, data_type: int, dims: tuple[int, ...], raw: bytes) -> bytes:
    """A TensorProto {dims, data_type, name, raw_data} (raw_data little-endian, as ONNX stores it)."""
    return b"".join(_int_field(1, d) for d in dims) + _int_field(2, data_type) + _bytes_field(8, name.encode()) + (
        _bytes_field(9, raw)
    )


def _node(op_type: str, inputs: tuple[str, ...], output: str) -> bytes:
    """A NodeProto {input, output, op_type}."""
    return b"".join(_bytes_field(1, i.encode()) for i in inputs) + _bytes_field(2, output.encode()) + (
        _bytes_field(4, op_type.encode())
    )


def _model(name: str, nodes: list[bytes], initializers: list[bytes], inputs: list[bytes], output: bytes) -> bytes:
    """A ModelProto {ir_version 8, opset 17, graph {node, name, initializer, input, output}}."""
    graph = (
        b"".join(_bytes_field(1, n) for n in nodes)
        + _bytes_field(2, name.encode())
        + b"".join(_bytes_field(5, t) for t in initializers)
        + b"".join(_bytes_field(11, i) for i in inputs)
        + _bytes_field(12, output)
    )
    opset = _bytes_field(1, b"") + _int_field(2, 17)  # OperatorSetIdProto {domain "", version 17}
    return _int_field(1, 8) + _bytes_field(8, opset) + _bytes_field(7, graph)


def probe_model() -> bytes:
    """A serialized one-node ONNX model, ``Y = MatMulInteger(A, B)``: ``A`` a uint8 input (4 x 64), ``B`` an
    int8 initializer (64 x 16) of 127s. Fed 255s, exact arithmetic gives 64 * 255 * 127 = 2,072,640 in every
    cell; pairwise 16-bit saturation gives 32 * 32,767 = 1,048,544."""
    weight = _tensor("B", _INT8, (_PROBE_K, _PROBE_N), bytes([127]) * (_PROBE_K * _PROBE_N))
    return _model(
        "u8s8_probe",
        [_node("MatMulInteger", ("A", "B"), "Y")],
        [weight],
        [_value_info("A", _UINT8, (_PROBE_M, _PROBE_K))],
        _value_info("Y", _INT32, (_PROBE_M, _PROBE_N)),
    )


def qdq_probe_model() -> bytes:
    """The same product as :func:`probe_model` in QDQ form, as NNCF writes it: ``Y = MatMul(DequantizeLinear(
    QuantizeLinear(A)), DequantizeLinear(B))``, ``A`` a float input (4 x 64) quantized to uint8 (scale 1, zero
    point 0), ``B`` int8 127s (scale 1, zero point 0). Fed 255.0, exact arithmetic gives 2,072,640.0 in every
    cell, pairwise saturation 1,048,544.0."""
    scale = struct.pack("<f", 1.0)
    initializers = [
        _tensor("scale", _FLOAT, (), scale),
        _tensor("a_zero_point", _UINT8, (), b"\x00"),
        _tensor("B", _INT8, (_PROBE_K, _PROBE_N), bytes([127]) * (_PROBE_K * _PROBE_N)),
        _tensor("b_zero_point", _INT8, (), b"\x00"),
    ]
    nodes = [
        _node("QuantizeLinear", ("A", "scale", "a_zero_point"), "A_q"),
        _node("DequantizeLinear", ("A_q", "scale", "a_zero_point"), "A_dq"),
        _node("DequantizeLinear", ("B", "scale", "b_zero_point"), "B_dq"),
        _node("MatMul", ("A_dq", "B_dq"), "Y"),
    ]
    return _model(
        "u8s8_qdq_probe",
        nodes,
        initializers,
        [_value_info("A", _FLOAT, (_PROBE_M, _PROBE_K))],
        _value_info("Y", _FLOAT, (_PROBE_M, _PROBE_N)),
    )


@functools.lru_cache(maxsize=1)
def u8s8_saturates() -> bool | None:
    """Whether ONNX Runtime's u8 x s8 integer GEMM saturates on this CPU (x86 without int8 dot products);
    None when the probe cannot run (no ONNX Runtime, or one without ``MatMulInteger``). Measured once per
    process, in a few milliseconds."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(probe_model(), options, providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {"A": np.full((_PROBE_M, _PROBE_K), 255, dtype=np.uint8)})
    except Exception as exc:  # onnxruntime raises its own untyped errors
        log.debug("the u8s8 probe did not run: %s", exc)
        return None
    saturates = bool(np.any(out != _PROBE_K * 255 * 127))
    log.debug("u8s8 probe: %d (exact: %d)", int(out.flat[0]), _PROBE_K * 255 * 127)
    return saturates


@functools.lru_cache(maxsize=1)
def openvino_u8s8_saturates() -> bool | None:
    """Whether OpenVINO's CPU plugin clamps u8 x s8 products on this CPU, asked on :func:`qdq_probe_model`;
    None when the probe cannot run (no OpenVINO). Measured once per process (compiling takes ~0.1 s)."""
    try:
        import openvino as ov

        core = ov.Core()
        # f32: on CPUs with bf16 OpenVINO would otherwise round the float output (2,072,640 to 2,072,576)
        config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        compiled = core.compile_model(core.read_model(qdq_probe_model(), b""), "CPU", config)
        out = compiled({"A": np.full((_PROBE_M, _PROBE_K), 255.0, dtype=np.float32)})[compiled.output(0)]
    except Exception as exc:  # OpenVINO raises RuntimeError with long reports, or is not installed
        log.debug("the OpenVINO u8s8 probe did not run: %s", exc)
        return None
    # a float output: compared with a tolerance far below the factor of ~2 that saturation takes off
    saturates = not np.allclose(out, _PROBE_K * 255 * 127, rtol=1e-3, atol=0)
    log.debug("OpenVINO u8s8 probe: %d (exact: %d)", int(out.flat[0]), _PROBE_K * 255 * 127)
    return saturates


def saturates_for(runtime: str) -> bool | None:
    """The probe for ``runtime`` ("onnxruntime" or "openvino"): what an INT8 report's ``gate_cpu`` records."""
    return openvino_u8s8_saturates() if runtime == "openvino" else u8s8_saturates()


def describe(saturates: bool | None) -> str:
    """One line for reports: what the integer kernels of a machine compute."""
    if saturates is None:
        return "unknown (the probe could not run)"
    if saturates:
        return "u8 x s8 products saturate (x86 without VNNI: AVX2 or AVX-512 only)"
    return "exact u8 x s8 products"


def unsmoothed_file_note(int8_report: dict[str, Any]) -> str | None:
    """A warning for loading an INT8 file that clamps much more on this CPU than where it was gated: dynamic
    INT8 with fixed activation ranges exported without smoothing (``--smoothing 0``, or before smoothing became
    the default), run where u8 x s8 products saturate. None otherwise (per-batch ranges cannot be smoothed, and
    were not measured); the probe runs only for such files, so loading the default costs nothing."""
    settings = int8_report.get("settings") or {}
    if settings.get("mode") != "dynamic" or settings.get("batch_invariant") is not True:
        return None
    if isinstance(settings.get("smoothing"), dict):
        return None
    if not u8s8_saturates():
        return None
    return (
        "this INT8 file was exported without smoothing, and this CPU's u8 x s8 products clamp (no VNNI): its "
        "error against fp32 is about 1.6-1.8x what a VNNI CPU computes (docs/int8.md, 'CPUs without int8 dot "
        "products'); export it again with mbert-edge export (smoothing is the default)"
    )
