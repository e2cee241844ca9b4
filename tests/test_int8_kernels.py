"""What this CPU's ONNX Runtime and OpenVINO integer kernels compute (mbert_edge/backends/int8_kernels.py): the
probe models against ONNX's reference evaluator (or, for QDQ at opset 17, ONNX Runtime simulating it in float),
each probe's verdict against the CPU's flags and against a model of the kernel (``vpmaddubsw``: neighbouring
u8 x s8 products added in 16 bits with saturation), the benchmark's uint8-weight variant against exact integer
arithmetic, and the verdict recorded by the INT8 gate."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from mbert_edge.backends import int8_kernels
from mbert_edge.cli import _gate_summary
from mbert_edge.manifest import Manifest
from mbert_edge_export.optimize import optimize_graph
from mbert_edge_export.quantize import gate
from mbert_edge_export.quantize.gated import QuantizeSettings
from tests.conftest import load_script
from tests.cpu_features import has_vnni
from tests.tiny_int8 import quantize


def _matmul_integer(weight: np.ndarray, weight_zero_point: np.ndarray | None = None) -> bytes:
    """``Y = MatMulInteger(A, W)`` with ``A`` a uint8 input and ``W`` (and its zero point) constants."""
    inits = [numpy_helper.from_array(weight, "W")]
    inputs = ["A", "W"]
    if weight_zero_point is not None:
        inits += [
            numpy_helper.from_array(np.array(0, dtype=np.uint8), "a_zp"),
            numpy_helper.from_array(weight_zero_point, "w_zp"),
        ]
        inputs += ["a_zp", "w_zp"]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["Y"])],
        "mm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, weight.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, weight.shape[1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _run(model: bytes, a: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"A": a})[0]


def _saturating_product(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """u8 x s8 as ``vpmaddubsw`` + ``vpmaddwd`` compute it: products of neighbouring k added in int16 with
    saturation, then summed in int32."""
    a32, w32 = a.astype(np.int32), w.astype(np.int32)
    pairs = a32[:, 0::2, None] * w32[None, 0::2, :] + a32[:, 1::2, None] * w32[None, 1::2, :]
    return np.clip(pairs, -32768, 32767).sum(axis=1)


def _qdq_matmul(weight: np.ndarray, weight_zero_point: np.ndarray) -> bytes:
    """``Y = MatMul(DQ(Q(A)), DQ(W))``: ``A`` float, quantized to uint8 with scale 1 and zero point 0, so that a
    float input of integers is its own uint8 value; ``W`` an integer constant (scale 1)."""
    inits = [
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "s"),
        numpy_helper.from_array(np.array(0, dtype=np.uint8), "a_zp"),
        numpy_helper.from_array(weight, "W"),
        numpy_helper.from_array(weight_zero_point, "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["A", "s", "a_zp"], ["Aq"]),
        helper.make_node("DequantizeLinear", ["Aq", "s", "a_zp"], ["Ad"]),
        helper.make_node("DequantizeLinear", ["W", "s", "w_zp"], ["Wd"]),
        helper.make_node("MatMul", ["Ad", "Wd"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, weight.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, weight.shape[1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _run_unoptimized(model: bytes, a: np.ndarray) -> np.ndarray:
    """ONNX Runtime without graph optimizations: QDQ pairs run as float Quantize / Dequantize / MatMul, which
    for these integer values is exact arithmetic (no integer kernel involved)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"A": a})[0]


def _run_openvino(model: bytes, a: np.ndarray) -> np.ndarray:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}  # no bf16 rounding of the output
    compiled = core.compile_model(core.read_model(model, b""), "CPU", config)
    return compiled({"A": a})[compiled.output(0)]


ON_X86_LINUX = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"), reason="reads /proc/cpuinfo"
)


def test_probe_model_is_valid_onnx_with_a_known_exact_answer():
    model = onnx.load_from_string(int8_kernels.probe_model())
    onnx.checker.check_model(model, full_check=True)
    (out,) = ReferenceEvaluator(model).run(None, {"A": np.full((4, 64), 255, dtype=np.uint8)})
    assert out.dtype == np.int32 and out.shape == (4, 16)
    assert (out == 64 * 255 * 127).all()  # 2,072,640; saturating pairs would give 32 * 32,767


def test_qdq_probe_model_is_valid_onnx_with_a_known_exact_answer():
    model = onnx.load_from_string(int8_kernels.qdq_probe_model())
    onnx.checker.check_model(model, full_check=True)
    (out,) = model.graph.output
    assert out.type.tensor_type.elem_type == TensorProto.FLOAT
    got = _run_unoptimized(int8_kernels.qdq_probe_model(), np.full((4, 64), 255.0, dtype=np.float32))
    assert got.shape == (4, 16) and (got == 64 * 255 * 127).all()


@ON_X86_LINUX
def test_probe_agrees_with_the_cpu_flags():
    # MLAS multiplies u8 x s8 with VNNI or AMX where the CPU has them (exact), with vpmaddubsw otherwise
    assert int8_kernels.u8s8_saturates() is not has_vnni()


@ON_X86_LINUX
def test_openvino_probe_agrees_with_the_cpu_flags():
    pytest.importorskip("openvino")
    # oneDNN, under OpenVINO's CPU plugin, chooses its int8 kernels by the same instructions
    assert int8_kernels.openvino_u8s8_saturates() is not has_vnni()
    assert int8_kernels.saturates_for("openvino") is int8_kernels.openvino_u8s8_saturates()
    assert int8_kernels.saturates_for("onnxruntime") is int8_kernels.u8s8_saturates()


def test_openvino_computes_what_its_probe_says():
    pytest.importorskip("openvino")
    rng = np.random.default_rng(2)
    a = rng.integers(150, 256, size=(8, 64)).astype(np.float32)
    w = rng.integers(90, 128, size=(64, 32), dtype=np.int8) * rng.choice(np.array([-1, 1], dtype=np.int8), size=(1, 32))
    model = _qdq_matmul(w, np.array(0, dtype=np.int8))
    exact = _run_unoptimized(model, a)
    np.testing.assert_array_equal(exact, a.astype(np.int64) @ w.astype(np.int64))
    saturated = _saturating_product(a.astype(np.uint8), w)
    got = _run_openvino(model, a)  # float: equal to the integers to float32's rounding
    expected = saturated if int8_kernels.openvino_u8s8_saturates() else exact
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.abs(saturated - exact).min() > 1000  # the two answers are far apart in every cell
    # ONNX Runtime fuses the same QDQ pair into its u8 x s8 kernel: the file's own probe applies to it too
    np.testing.assert_array_equal(_run(model, a), saturated if int8_kernels.u8s8_saturates() else exact)


def test_onnx_runtime_computes_what_the_probe_says():
    rng = np.random.default_rng(0)
    a = rng.integers(150, 256, size=(8, 64), dtype=np.uint8)  # large activations
    w = rng.integers(90, 128, size=(64, 32), dtype=np.int8) * rng.choice(np.array([-1, 1], dtype=np.int8), size=(1, 32))
    exact = a.astype(np.int64) @ w.astype(np.int64)
    saturated = _saturating_product(a, w)
    assert (saturated != exact).all()  # every pair of these products overflows int16
    got = _run(_matmul_integer(w), a)
    np.testing.assert_array_equal(got, saturated if int8_kernels.u8s8_saturates() else exact)


def test_uint8_weights_are_exact_everywhere(tmp_path):
    bench = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "int8_files.py", "bench_int8_files")
    rng = np.random.default_rng(1)
    a = rng.integers(150, 256, size=(8, 64), dtype=np.uint8)
    w = rng.integers(90, 128, size=(64, 32), dtype=np.int8)
    zp = np.zeros(32, dtype=np.int8)
    src, dst = tmp_path / "s8.onnx", tmp_path / "u8.onnx"
    src.write_bytes(_matmul_integer(w, zp))
    assert bench.unsigned_weights_file(src, dst) == 2  # the weight and its zero point
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    assert inits["W"].dtype == np.uint8 and (inits["W"].astype(int) - 128 == w).all() and (inits["w_zp"] == 128).all()
    np.testing.assert_array_equal(_run(dst.read_bytes(), a), a.astype(np.int64) @ w.astype(np.int64))


def test_uint8_weights_of_a_qdq_file_are_exact_in_both_runtimes(tmp_path):
    bench = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "int8_files.py", "bench_int8_files")
    rng = np.random.default_rng(3)
    a = rng.integers(150, 256, size=(8, 64)).astype(np.float32)
    w = rng.integers(90, 128, size=(64, 32), dtype=np.int8) * rng.choice(np.array([-1, 1], dtype=np.int8), size=(1, 32))
    src, dst = tmp_path / "s8.onnx", tmp_path / "u8.onnx"
    src.write_bytes(_qdq_matmul(w, np.array(0, dtype=np.int8)))
    # the weight's DequantizeLinear changes (weight, zero point); the activation's is computed and stays
    assert bench.unsigned_weights_file(src, dst) == 2
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    assert inits["W"].dtype == np.uint8 and (inits["W"].astype(int) - 128 == w).all() and inits["w_zp"] == 128
    assert inits["a_zp"].dtype == np.uint8 and inits["a_zp"] == 0
    exact = a.astype(np.int64) @ w.astype(np.int64)
    np.testing.assert_array_equal(_run(dst.read_bytes(), a), exact)  # fused by ONNX Runtime: U8U8 kernel
    if importlib.util.find_spec("openvino") is not None:
        np.testing.assert_allclose(_run_openvino(dst.read_bytes(), a), exact, rtol=1e-6)


def test_the_gate_records_what_the_cpu_computes(tmp_path, bundles):
    bundle = bundles["feature-extraction"]
    spec = Manifest.read(bundle / "manifest.json").embedding
    fused = tmp_path / "fused.onnx"
    optimize_graph(bundle / "model.onnx", fused, 2, 32)
    lenient = QuantizeSettings(thresholds=gate.Thresholds(min_cosine=0.0))
    report = quantize(fused, tmp_path / "int8.onnx", lenient, spec)
    assert report["gate_cpu"] == {"runtime": "onnxruntime", "u8s8_saturates": int8_kernels.u8s8_saturates()}
    assert ("saturate" in _gate_summary(report)) is bool(int8_kernels.u8s8_saturates())
    for verdict in (True, False):
        assert ("saturate" in _gate_summary({**report, "gate_cpu": {"u8s8_saturates": verdict}})) is verdict
    # reports written before the record named its runtime were ONNX Runtime's; OpenVINO's are named
    assert "saturate in ONNX Runtime" in _gate_summary({**report, "gate_cpu": {"u8s8_saturates": True}})
    openvino = {**report, "gate_cpu": {"runtime": "openvino", "u8s8_saturates": True}}
    assert "saturate in OpenVINO" in _gate_summary(openvino)


@pytest.mark.parametrize("saturates", [True, False])
def test_note_only_for_unsmoothed_dynamic_files_where_products_clamp(monkeypatch, saturates):
    monkeypatch.setattr(int8_kernels, "u8s8_saturates", lambda: saturates)
    fixed = {"mode": "dynamic", "batch_invariant": True}
    unsmoothed = {"settings": {**fixed, "smoothing": "off"}}
    before = {"settings": fixed}  # files exported before smoothing existed
    smoothed = {"settings": {**fixed, "smoothing": {"alpha": 0.5, "tensors": []}}}
    per_batch = {"settings": {"mode": "dynamic", "batch_invariant": False}}  # cannot be smoothed
    static = {"settings": {"mode": "static", "batch_invariant": True}}
    cases = ((unsmoothed, saturates), (before, saturates), (smoothed, False), (per_batch, False), (static, False))
    for report, expected in cases:
        note = int8_kernels.unsmoothed_file_note(report)
        assert (note is not None) is expected, report
        if note:
            assert "export it again" in note


def test_load_warns_for_an_unsmoothed_file_where_products_clamp(tmp_path, checkpoints, monkeypatch, caplog):
    import mbert_edge
    from mbert_edge_export import export_bundle

    settings = QuantizeSettings(mode="dynamic", smoothing=0.0, thresholds=gate.Thresholds(0.0, 0.0))
    bundle = export_bundle(str(checkpoints["feature-extraction"]), tmp_path / "b", quantize=settings)
    assert Manifest.read(bundle / "manifest.json").fidelity["int8"]["settings"]["smoothing"] == "off"
    for saturates in (True, False):
        monkeypatch.setattr(int8_kernels, "u8s8_saturates", lambda s=saturates: s)
        caplog.clear()
        with caplog.at_level("WARNING", logger="mbert_edge"):
            model = mbert_edge.load(bundle)
        assert model.embed("ein Satz").shape[-1] > 0
        warned = [r.getMessage() for r in caplog.records if "without smoothing" in r.getMessage()]
        assert len(warned) == int(saturates), warned
