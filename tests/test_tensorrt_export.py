"""``export --target tensorrt``: the fp16 and int8 (Q/DQ) files TensorRT builds, checked on CPU.

No TensorRT runs here. The checks mirror what TensorRT's ONNX parser asserts (standard ops only, int8
symmetric Q/DQ, per-channel scales on weights only) and measure the files' numerics on ONNX Runtime's CPU
provider against the fp32 export, on multilingual text.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbert_edge.errors import BundleFormatError
from mbert_edge.manifest import Manifest, ShapeProfile

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from mbert_edge_export import ExportError, export_bundle  # noqa: E402
from mbert_edge_export.quantize.gate import Thresholds  # noqa: E402
from mbert_edge_export.tensorrt import FP16_FILE, INT8_FILE, MIN_TENSORRT, TensorRTSettings, graph, int8  # noqa: E402

TEXTS = [
    "The station is closed today.",
    "Der Bahnhof ist heute geschlossen.",
    "La gare est fermée aujourd'hui.",
    "Вокзал сегодня закрыт.",
    "المحطة مغلقة اليوم.",
    "स्टेशन आज बंद है।",
    "车站今天关闭。",
    "駅は今日閉まっています。",
]


@pytest.fixture(scope="module")
def trt_bundles(tmp_path_factory, checkpoints):
    """One bundle per task with both TensorRT files (tiny random models: thresholds relaxed, the gate runs)."""
    root = tmp_path_factory.mktemp("trt-bundles")
    settings = TensorRTSettings(precisions=("fp16", "int8"), max_batch=16, thresholds=Thresholds(0.5, 0.9))
    return {
        task: export_bundle(str(checkpoints[task]), root / task, tensorrt=settings, calibration_size=32, eval_size=64)
        for task in ("feature-extraction", "text-classification")
    }


def _model(path):
    return onnx.load(str(path))


def _feeds(bundle):
    from mbert_edge.tokenizer import BundleTokenizer

    m = Manifest.read(bundle / "manifest.json")
    tok = BundleTokenizer(bundle / "tokenizer.json", m.max_length)
    feeds = tok.pad(tok.encode(TEXTS))
    return {k: feeds[k] for k in m.inputs}


def _run(path, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
@pytest.mark.parametrize("name", [FP16_FILE, INT8_FILE])
def test_only_standard_ops_opset_17(trt_bundles, task, name):
    model = _model(trt_bundles[task] / name)
    assert graph.foreign_ops(model) == []  # no com.microsoft contrib ops, no MatMulInteger/DynamicQuantizeLinear
    assert graph.opset(model) >= 17
    assert any(n.op_type == "LayerNormalization" for n in model.graph.node)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.INT64] * len(
        model.graph.input
    )
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_qdq_placement_is_what_tensorrt_fuses(trt_bundles, task):
    from onnx import numpy_helper

    model = _model(trt_bundles[task] / INT8_FILE)
    assert graph.lint_qdq(model) == []
    inits = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qs = [n for n in nodes if n.op_type == "QuantizeLinear"]
    dqs = [n for n in nodes if n.op_type == "DequantizeLinear"]
    assert qs and len(qs) == len(dqs)
    weight_qs = 0
    for q in qs:
        zp = inits[q.input[2]]
        assert zp.data_type == onnx.TensorProto.INT8 and not numpy_helper.to_array(zp).any()  # symmetric int8
        scale = numpy_helper.to_array(inits[q.input[1]])
        if q.input[0] in inits:  # a weight: one scale per output channel
            weight_qs += 1
            w = inits[q.input[0]]
            axis = next(a.i for a in q.attribute if a.name == "axis")
            assert scale.size == w.dims[axis] > 1
        else:  # an activation: one scale
            assert scale.size == 1
    for dq in dqs:  # every DQ feeds a MatMul/Gemm data input (Shape reads only the shape), never a Gather or bias
        users = [c for c in consumers[dq.output[0]] if c.op_type != "Shape"]
        assert users and {c.op_type for c in users} <= {"MatMul", "Gemm"}
        assert all(c.input[:2].count(dq.output[0]) for c in users)
    report = json.loads((trt_bundles[task] / "manifest.json").read_text())["fidelity"]["tensorrt_int8"]
    quantized = len(int8.quantizable_nodes(trt_bundles[task] / "model.onnx")) - len(report["settings"]["fp32_nodes"])
    assert weight_qs == quantized  # every weight MatMul/Gemm not kept in fp32, nothing else
    # the embeddings are not quantized
    gathers = [n for n in nodes if n.op_type == "Gather" and n.input[0] in inits]
    assert gathers and all(inits[g.input[0]].data_type == onnx.TensorProto.FLOAT for g in gathers)


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_fp16_file_keeps_fp32_islands(trt_bundles, task):
    model = onnx.shape_inference.infer_shapes(_model(trt_bundles[task] / FP16_FILE))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    islands = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert islands
    for n in islands:
        assert types[n.input[0]] == onnx.TensorProto.FLOAT, n.name
    fp16_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and types.get(n.output[0]) == 10]
    assert fp16_matmuls  # the encoder's matmuls do run in half precision
    report = json.loads((trt_bundles[task] / "manifest.json").read_text())["fidelity"]["tensorrt_fp16"]["graph"]
    kinds = {i["kind"]: i for i in report["fp32_islands"]}
    assert {"LayerNormalization", "Softmax"} <= set(kinds)
    assert all(i["reason"] for i in kinds.values())
    if task == "text-classification":
        assert "head" in kinds  # pooler and classifier


@pytest.mark.parametrize("name", [FP16_FILE, INT8_FILE])
def test_mask_constant_fits_fp16(trt_bundles, name):
    from onnx import numpy_helper

    bundle = trt_bundles["feature-extraction"]
    model = _model(bundle / name)
    tensors = [numpy_helper.to_array(i) for i in model.graph.initializer]
    tensors += [numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"]
    floats = [t for t in tensors if t.dtype.kind == "f" and t.size]
    assert all(np.isfinite(t).all() and np.abs(t).max() <= 65504 for t in floats)
    fidelity = json.loads((bundle / "manifest.json").read_text())["fidelity"]
    key = "tensorrt_fp16" if name == FP16_FILE else "tensorrt_int8"
    clamped = fidelity[key]["graph"]["mask_constants_clamped"]
    assert clamped and all(c["now"] == graph.MASK_VALUE for c in clamped)
    # the plain fp32 export keeps its -inf or finfo(float32).min: the clamp is the TensorRT files' own
    plain = _model(bundle / "model.onnx")
    values = [numpy_helper.to_array(n.attribute[0].t) for n in plain.graph.node if n.op_type == "Constant"]
    assert any(v.dtype.kind == "f" and (~np.isfinite(v) | (np.abs(v) > 65504)).any() for v in values)


def test_fp16_numerics_close_to_fp32_on_cpu(trt_bundles):
    bundle = trt_bundles["feature-extraction"]
    feeds = _feeds(bundle)
    ref = _run(bundle / "model.onnx", feeds)
    got = _run(bundle / FP16_FILE, feeds)
    mask = feeds["attention_mask"].astype(bool)
    assert np.abs(ref - got)[mask].max() < 2e-2 * max(1.0, np.abs(ref).max())
    pooled = [(x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True) for x in (ref, got)]
    cos = (pooled[0] * pooled[1]).sum(1) / np.linalg.norm(pooled[0], axis=1) / np.linalg.norm(pooled[1], axis=1)
    assert cos.min() > 0.999
    bundle = trt_bundles["text-classification"]
    feeds = _feeds(bundle)
    ref, got = _run(bundle / "model.onnx", feeds), _run(bundle / FP16_FILE, feeds)
    assert np.abs(ref - got).max() < 2e-2 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_manifest_lists_tensorrt_files_with_profiles(trt_bundles, task):
    bundle = trt_bundles[task]
    m = Manifest.read(bundle / "manifest.json")
    trt = {f.precision: f for f in m.model_files() if f.backend == "tensorrt"}
    assert set(trt) == {"fp16", "int8"}
    assert trt["fp16"].path == FP16_FILE and trt["int8"].path == INT8_FILE
    assert trt["int8"].quantization == "static-qdq" and trt["fp16"].quantization is None
    for f in trt.values():
        assert f.format == "onnx" and f.min_tensorrt == MIN_TENSORRT
        assert f.profiles == (ShapeProfile(min=(1, 1), opt=(1, min(128, m.max_length)), max=(16, m.max_length)),)
        assert [x.path for x in m.files_of(f)] == [f.path, f.path + ".data"]
    for precision in ("fp16", "int8"):
        report = m.fidelity[f"tensorrt_{precision}"]
        assert "CPU" in report["measured_on"] and "not on a GPU" in report["measured_on"]
        assert report["gate"]["passed"] and report["gate"]["languages"]  # judged per language
    assert m.export["tensorrt"]["profile"]["max"] == [16, m.max_length]
    raw = json.loads((bundle / "manifest.json").read_text())
    entry = next(f for f in raw["files"] if f["path"] == FP16_FILE)
    assert entry["profiles"] == [{"min": [1, 1], "opt": [1, min(128, m.max_length)], "max": [16, m.max_length]}]
    # the fp32 file stays for the CPU runtime: backend="auto" picks it on a machine without a GPU
    import mbert_edge

    model = mbert_edge.load(bundle)
    assert model.model_file.backend == "onnxruntime"


def test_bad_profiles_are_refused():
    from mbert_edge.manifest import _profiles

    assert _profiles([{"min": [1, 1], "opt": [2, 8], "max": [4, 16]}])[0].admits(4, 16)
    for bad in ([], [{"min": [1, 1], "opt": [8, 8]}], [{"min": [2, 1], "opt": [1, 8], "max": [4, 16]}], "x"):
        with pytest.raises(BundleFormatError):
            _profiles(bad)


def test_the_fused_graph_is_refused(trt_bundles, tmp_path):
    from mbert_edge_export import optimize

    fused = tmp_path / "fused.onnx"
    optimize.optimize_graph(trt_bundles["feature-extraction"] / "model.onnx", fused, 2, 32)
    with pytest.raises(ExportError, match=r"com\.microsoft"):
        graph.check_plain(_model(fused), "fused.onnx")


@pytest.mark.parametrize(
    ("settings", "opset", "message"),
    [
        (TensorRTSettings(precisions=("fp8",)), 17, "--precision"),
        (TensorRTSettings(precisions=("fp16", "fp16")), 17, "twice"),
        (TensorRTSettings(max_batch=0), 17, "positive"),
        (TensorRTSettings(), 14, "--opset 14 is not supported with --target tensorrt: use 17 to 23"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, settings, opset, message):
    with pytest.raises(ExportError, match=message):
        export_bundle("/nonexistent", tmp_path / "out", opset=opset, tensorrt=settings)
    assert not (tmp_path / "out").exists()


def test_cli_precision_needs_the_tensorrt_target(tmp_path, capsys):
    from mbert_edge.cli import main

    assert main(["export", "x", "-o", str(tmp_path / "b"), "--precision", "fp16"]) == 1
    assert "--target tensorrt" in capsys.readouterr().err


def test_cli_flags_make_the_settings():
    from mbert_edge.cli import _parser, _tensorrt_settings

    flags = "--target tensorrt --precision fp16,int8 --max-batch 8 --opt-length 64 --calibration-method percentile"
    args = _parser().parse_args(["export", "default", "-o", "b", *flags.split(), "--min-cosine", "0.98"])
    s = _tensorrt_settings(args)
    assert s.precisions == ("fp16", "int8") and s.max_batch == 8 and s.opt_batch == 1 and s.opt_length == 64
    assert s.calibration_method == "percentile" and s.thresholds.min_cosine == 0.98
    assert _tensorrt_settings(
        _parser().parse_args(["export", "default", "-o", "b", "--target", "tensorrt"])
    ).precisions == ("fp16",)
