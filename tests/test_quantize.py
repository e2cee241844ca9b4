"""INT8 export on tiny models: fusions, quantized node types, the accuracy gate, calibration files, manifest."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest

import mbert_edge
from mbert_edge.manifest import Manifest
from mbert_edge_export import ExportError, export_bundle
from mbert_edge_export.optimize import optimize_graph
from mbert_edge_export.quantize import calibration, gate
from mbert_edge_export.quantize.gated import QuantizationGateError, QuantizeSettings, quantize_with_gate
from tests.cpu_features import has_vnni

LAYERS = 2  # the tiny models of conftest


def op_counts(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory, checkpoints):
    return export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path_factory.mktemp("q") / "dyn",
        quantize=QuantizeSettings(mode="dynamic"),
        keep_fp32=True,
    )


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory, checkpoints):
    return export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path_factory.mktemp("q") / "static",
        quantize=QuantizeSettings(mode="static", method="entropy"),
    )


def test_fusions(tmp_path, bundles):
    report = optimize_graph(bundles["token-classification"] / "model.onnx", tmp_path / "fused.onnx", 2, 32)
    want = {"Attention": LAYERS, "Gelu": LAYERS, "LayerNormalization": 2 * LAYERS + 1}
    assert report["fused_ops"] == want
    counts = op_counts(tmp_path / "fused.onnx")
    for op, n in want.items():
        assert counts[op] == n
    assert counts["Softmax"] == 0  # folded into Attention
    # embeddings stay unfused, so the word table can go to 4 bits: word, position, token type
    assert counts["EmbedLayerNormalization"] == 0 and counts["Gather"] >= 3
    # no SkipLayerNormalization or BiasGelu (slower on CPU, optimize.py): each LayerNorm reads a Sum
    assert counts["SkipLayerNormalization"] == 0 and counts["BiasGelu"] == 0
    assert report["residual_sums"] == counts["Sum"] == 2 * LAYERS + 1


def _ops_after_onnxruntime(model, path) -> Counter:
    """The op types of ``model`` after ONNX Runtime's own load-time optimizations (ORT_ENABLE_ALL)."""
    import onnxruntime as ort

    onnx.save_model(model, str(path.with_suffix(".in.onnx")))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(path.with_suffix(".in.onnx")), options, providers=["CPUExecutionProvider"])
    return op_counts(path)


def test_onnxruntime_keeps_layer_norm_unfused(tmp_path, dynamic_bundle):
    """ONNX Runtime fuses a residual Add + LayerNormalization of the INT8 file into SkipLayerNormalization when it
    loads it; the Sum that optimize.py writes instead is left alone, with the same outputs up to rounding."""
    import onnxruntime as ort

    model = onnx.load(str(dynamic_bundle / "model.int8.onnx"))
    kept = _ops_after_onnxruntime(model, tmp_path / "kept.onnx")
    assert kept["SkipLayerNormalization"] == 0 and kept["LayerNormalization"] == 2 * LAYERS + 1
    with_adds = onnx.load(str(dynamic_bundle / "model.int8.onnx"))
    for node in with_adds.graph.node:
        if node.op_type == "Sum":
            node.op_type = "Add"
    refused = _ops_after_onnxruntime(with_adds, tmp_path / "refused.onnx")
    assert refused["SkipLayerNormalization"] == 2 * LAYERS  # what the Sum prevents

    ids = np.array([[2, 40, 41, 42, 43, 3, 0], [2, 50, 51, 3, 0, 0, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}

    def run(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]

    np.testing.assert_allclose(run(model), run(with_adds), atol=1e-4)


def check_word_table(int8: dict, counts: Counter) -> None:
    """The word-embedding table is 4-bit (three BitShift ops unpack it, embedding.py), or 8-bit when the gate's
    fallback kept the embedding group (group 0) in fp32."""
    word = int8["settings"]["word_embedding"]
    fallback = 0 in int8["fp32_groups"]
    assert word["bits"] == (8 if fallback else 4) and counts["BitShift"] == (0 if fallback else 3)
    if not fallback:
        assert word["block_size"] == 32


def test_dynamic_node_types_and_manifest(dynamic_bundle):
    counts = op_counts(dynamic_bundle / "model.int8.onnx")
    m = Manifest.read(dynamic_bundle / "manifest.json")
    # the accuracy gate may keep node groups in fp32, and whether it does depends on the CPU the export ran on
    # (ONNX Runtime's u8s8 kernels saturate on AVX2 without VNNI, so the tiny random model's INT8 error is larger
    # there): every node it kept is named in the manifest, and the graph holds exactly those in float
    kept = set(m.fidelity["int8"]["settings"]["fp32_nodes"])
    graph = onnx.load(str(dynamic_bundle / "model.int8.onnx")).graph
    float_nodes = {n.name for n in graph.node if n.op_type in ("MatMul", "Attention")}
    assert float_nodes == kept
    assert counts["QAttention"] + counts["Attention"] == LAYERS
    # attention output, FFN in, FFN out: integer GEMMs that rescale in the kernel (integer_matmul.py), their
    # inputs quantized with the fixed ranges, no Cast/Mul chain left behind
    assert counts["MatMulIntegerToFloat"] + counts["MatMul"] == 3 * LAYERS and counts["MatMulInteger"] == 0
    assert counts["DynamicQuantizeLinear"] == 0

    files = {f.precision: f for f in m.model_files()}
    assert set(files) == {"int8", "fp32"} and files["int8"].path == "model.int8.onnx"
    int8 = m.fidelity["int8"]
    assert int8["settings"]["mode"] == "dynamic" and int8["settings"]["per_channel"]
    assert int8["gate"]["passed"] and int8["gate"]["metric"] == "mean_cosine"
    assert int8["gate"]["value"] >= 0.99
    assert int8["settings"]["matmul_integer_to_float"] == counts["MatMulIntegerToFloat"]
    check_word_table(int8, counts)
    if has_vnni():  # where the integer kernels do not saturate, nothing of the tiny model needs fp32
        assert int8["fp32_groups"] == [] and not kept and counts["MatMulIntegerToFloat"] == 3 * LAYERS
    assert m.fidelity["optimization"]["parity"]["passed"]
    assert m.export["quantize"]["mode"] == "dynamic"
    assert files["int8"].size < files["fp32"].size


def test_static_node_types(static_bundle):
    counts = op_counts(static_bundle / "model.int8.onnx")
    assert counts["QuantizeLinear"] >= 2 * LAYERS and counts["DequantizeLinear"] >= 2 * LAYERS
    graph = onnx.load(str(static_bundle / "model.int8.onnx")).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    m = Manifest.read(static_bundle / "manifest.json")
    # every MatMul reads dequantized integers, but those the accuracy gate kept in fp32, which the manifest names
    # (on CPUs whose u8 x s8 products clamp the tiny model is at the gate's margin: on an AVX2 EPYC one run in
    # several kept a group; see test_dynamic_node_types_and_manifest)
    kept = set(m.fidelity["int8"]["settings"]["fp32_nodes"])
    quantized = [n for n in matmuls if n.name not in kept]
    assert quantized and all(producers.get(i) == "DequantizeLinear" for n in quantized for i in n.input)
    if has_vnni():
        assert len(quantized) == len(matmuls)
    assert counts["EmbedLayerNormalization"] == 0
    check_word_table(m.fidelity["int8"], counts)
    assert [f.precision for f in m.model_files()] == ["int8"]  # fp32 dropped by default
    assert m.fidelity["int8"]["settings"]["calibration_method"] == "entropy"
    assert m.fidelity["int8"]["calibration_text"]["origin"].startswith("dataset-build training sentences")
    assert "gate: dataset-build held-out sentences" in m.fidelity["int8"]["calibration_text"]["origin"]


def test_fused_rescaling_computes_what_the_chain_computes(tmp_path, bundles):
    """The fused MatMulIntegerToFloat gives ONNX Runtime's own MatMulInteger -> Cast -> Mul outputs (the
    chain as the quantizer wrote it, with fixed ranges, run with fusions off so that it stays a chain)."""
    import onnxruntime as ort

    from mbert_edge_export.quantize import dynamic, fixed_ranges, integer_matmul

    src = tmp_path / "fused.onnx"
    optimize_graph(bundles["feature-extraction"] / "model.onnx", src, 2, 32)
    chain = tmp_path / "chain.onnx"
    dynamic.quantize_dynamic(src, chain)
    ids = np.array([[2, 40, 41, 42, 43, 3, 0], [2, 50, 51, 3, 0, 0, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    fixed_ranges.make_batch_invariant(chain, [feeds])
    chain_model = onnx.load(str(chain))
    fused_model = onnx.load(str(chain))
    assert integer_matmul.fuse(fused_model) == 3 * LAYERS
    ops = Counter(n.op_type for n in fused_model.graph.node)
    assert ops["MatMulIntegerToFloat"] == 3 * LAYERS and ops["MatMulInteger"] == 0
    before = Counter(n.op_type for n in chain_model.graph.node)
    # MatMulInteger, Cast, Mul(x, scale), the bias Add and Mul(a_scale, b_scale) become one node
    assert sum(before.values()) - sum(ops.values()) == 3 * LAYERS * 4
    assert all(len(n.input) == 7 and n.input[6] for n in fused_model.graph.node if n.op_type == "MatMulIntegerToFloat")
    fused = tmp_path / "fused-int8.onnx"
    onnx.save_model(fused_model, str(fused))

    def outputs(path, level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {k: feeds[k] for k in names})[0]

    want = outputs(chain, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        np.testing.assert_array_equal(outputs(fused, level), want)  # the same float32 products
    assert integer_matmul.fuse(fused_model) == 0  # nothing left to fuse


def _chain_graph(shared_scale: bool, second_use: bool, named: bool):
    """Two hand-built MatMulInteger -> Cast -> Mul chains on one uint8 input (per-column weight scales)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, outs = [], [], []
    inits += [
        numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
    ]
    for k in range(2):
        inits += [
            numpy_helper.from_array(rng.integers(-127, 128, (8, 4)).astype(np.int8), f"w{k}"),
            numpy_helper.from_array(np.zeros(4, np.int8), f"w{k}_zero"),
            numpy_helper.from_array(rng.uniform(0.01, 0.05, 4).astype(np.float32), f"w{k}_scale"),
        ]
        scale = "s0" if shared_scale else f"s{k}"
        if k == 0 or not shared_scale:
            nodes.append(helper.make_node("Mul", ["a_scale", "w0_scale" if shared_scale else f"w{k}_scale"], [scale]))
        tag = str(k) if named else None  # the quantizer leaves nodes unnamed when the source's were
        nodes += [
            helper.make_node(
                "MatMulInteger", ["x", f"w{k}", "a_zero", f"w{k}_zero"], [f"i{k}"], name=tag and "mmi" + tag
            ),
            helper.make_node("Cast", [f"i{k}"], [f"c{k}"], to=TensorProto.FLOAT, name=tag and "cast" + tag),
            helper.make_node("Mul", [f"c{k}", scale], [f"y{k}"], name=tag and "mul" + tag),
        ]
        outs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None))
    if second_use:  # chain 0's int32 result also feeds a graph output: it must stay
        outs.append(helper.make_tensor_value_info("i0", TensorProto.INT32, None))
    graph = helper.make_graph(
        nodes, "chains", [helper.make_tensor_value_info("x", TensorProto.UINT8, [3, 8])], outs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("shared_scale", "second_use", "named", "fused"),
    [(False, False, True, 2), (True, False, False, 2), (False, True, True, 1), (True, True, False, 1)],
)
def test_fusion_keeps_what_other_nodes_need(shared_scale, second_use, named, fused):
    """Hand-built chains: fused ones give ONNX Runtime's chain outputs to the bit; a chain whose int32 result is
    used elsewhere stays; a scale Mul shared by two chains goes only when both are fused; unnamed nodes get
    unique names."""
    import onnxruntime as ort

    from mbert_edge_export.quantize import integer_matmul

    model = _chain_graph(shared_scale, second_use, named)
    x = {"x": np.random.default_rng(1).integers(0, 256, (3, 8)).astype(np.uint8)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    assert integer_matmul.fuse(model) == fused
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["MatMulIntegerToFloat"] == fused and ops["MatMulInteger"] == 2 - fused
    scale_muls_left = (0 if fused == 2 else 1) if shared_scale else 2 - fused
    assert ops["Mul"] == (2 - fused) + scale_muls_left
    names = [n.name for n in model.graph.node if n.name]
    assert len(names) == len(set(names))
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fusion_folds_only_a_per_column_bias():
    """A 1-D constant Add after a chain becomes the kernel's bias (same outputs); an Add of a constant of another
    shape after the other chain stays an Add."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from mbert_edge_export.quantize import integer_matmul

    model = _chain_graph(shared_scale=False, second_use=False, named=True)
    rng = np.random.default_rng(2)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias0"),
            numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "bias1"),  # not per column
        ]
    )
    for k in range(2):
        for node in model.graph.node:
            if node.op_type == "Mul" and node.output[0] == f"y{k}":
                node.output[0] = f"m{k}"
        model.graph.node.append(helper.make_node("Add", [f"m{k}", f"bias{k}"], [f"y{k}"]))
    x = {"x": np.random.default_rng(1).integers(0, 256, (3, 8)).astype(np.uint8)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    assert integer_matmul.fuse(model) == 2
    fused = {n.output[0]: list(n.input) for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"}
    assert fused["y0"][6:] == ["bias0"] and len(fused["m1"]) == 6
    assert [n.input[1] for n in model.graph.node if n.op_type == "Add"] == ["bias1"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_runtime_prefers_int8_and_stays_close(dynamic_bundle):
    from tests.conftest import corpus_lines

    texts = [line[:200] for _, line in corpus_lines(per_lang=3)]
    q = mbert_edge.load(dynamic_bundle)
    f = mbert_edge.load(dynamic_bundle, precision="fp32")
    assert q.model_file.precision == "int8" and f.model_file.precision == "fp32"
    cos = (q.embed(texts) * f.embed(texts)).sum(axis=1)
    assert cos.mean() >= 0.99


def test_gate_fails_on_purpose_with_report(tmp_path, checkpoints):
    impossible = QuantizeSettings(mode="dynamic", thresholds=gate.Thresholds(min_agreement=1.01, min_cosine=1.01))
    with pytest.raises(QuantizationGateError, match="even with") as info:
        export_bundle(str(checkpoints["token-classification"]), tmp_path / "out", quantize=impossible)
    assert "texts of the task with --calibration FILE" in str(info.value)  # the gate read the corpus sample
    report = info.value.report
    assert report["gate"]["metric"] == "token_agreement" and not report["gate"]["passed"]
    # the fallback's tie-break for taggers: probability error over real tokens
    assert 0.0 <= report["gate"]["mean_score_error"] <= report["gate"]["max_score_error"] <= 1.0
    assert all("tie_break" in r for r in report["sensitivity"])
    assert len(report["sensitivity"]) >= LAYERS  # every group was ranked
    assert len(report["fp32_groups"]) == len(report["sensitivity"]) - 1
    assert not (tmp_path / "out").exists()


def test_gate_text_hint_only_for_classifiers_on_the_corpus_sample():
    from mbert_edge_export.stages.quantize import gate_text_hint

    assert "--calibration FILE" in gate_text_hint("text-classification", user_texts=False)
    assert "--calibration FILE" in gate_text_hint("token-classification", user_texts=False)
    assert gate_text_hint("text-classification", user_texts=True) is None  # the user's own texts judged it
    assert gate_text_hint("feature-extraction", user_texts=False) is None  # cosine has no low-margin flips


def test_fallback_keeps_most_sensitive_groups_in_fp32(tmp_path, bundles, monkeypatch):
    """Control flow of the fallback, with a scripted metric: group 1 is the damaging one."""
    src = tmp_path / "fused.onnx"
    optimize_graph(bundles["feature-extraction"] / "model.onnx", src, 2, 32)
    nodes = gate.quantizable_nodes(src)
    groups = gate.layer_groups(nodes, gate.embedding_nodes(src), LAYERS)
    # the embedding tables (word, position, token type) are a group of their own, then layers and head
    assert len(groups[0]) == 3 and all("embeddings" in n for n in groups[0])
    assert not any("embeddings" in n for g in groups[1:] for n in g) and len(groups) == LAYERS + 2
    bad = set(groups[1])

    def fake_evaluate(reference, path, batches, task, **kw):
        excluded = set(onnx_excluded[str(path)])
        quantized_bad = bad - excluded
        value = 0.95 if quantized_bad else 0.999
        return {"metric": "mean_cosine", "value": value, "threshold": 0.99, "passed": value >= 0.99}

    onnx_excluded: dict[str, list[str]] = {}

    def fake_dynamic(src_path, out, per_channel=True, nodes_to_exclude=()):
        onnx_excluded[str(out)] = list(nodes_to_exclude)
        out.write_bytes(b"")
        return {"mode": "dynamic", "fp32_nodes": list(nodes_to_exclude)}

    monkeypatch.setattr(gate, "evaluate", fake_evaluate)
    monkeypatch.setattr("mbert_edge_export.quantize.dynamic.quantize_dynamic", fake_dynamic)
    monkeypatch.setattr("mbert_edge_export.quantize.embedding.compress_word_embedding", lambda path, node, bits=4: None)
    monkeypatch.setattr(
        "mbert_edge_export.quantize.fixed_ranges.make_batch_invariant", lambda path, batches, overrides=None: {}
    )
    monkeypatch.setattr(gate, "model_outputs", lambda path, batches: [])
    timings = iter([10.0, 12.5])
    monkeypatch.setattr(gate, "latency_ms", lambda path, batch, backend=None: next(timings))
    batch = {"input_ids": np.zeros((8, 20), np.int64)}
    report = quantize_with_gate(src, tmp_path / "q.onnx", QuantizeSettings(), "feature-extraction", LAYERS, [], [batch])
    assert report["sensitivity"][0]["group"] == 1  # ranked most damaging first
    assert report["fp32_groups"] == [1] and report["gate"]["passed"]
    assert set(report["settings"]["fp32_nodes"]) == bad
    assert report["fp32_nodes_returned_to_int8"] == []  # every node of the group is harmful: none goes back
    assert report["fallback_speed_cost"] == {
        "batch_shape": [8, 20],
        "all_int8_ms": 10.0,
        "with_fp32_groups_ms": 12.5,
        "slowdown": 1.25,
    }


def test_calibration_files(tmp_path):
    (tmp_path / "a.txt").write_text("eins\n\nzwei\ndrei\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "uno", "label": "positive"}\n{"text": "dos", "label": "negative"}\n')
    (tmp_path / "c.csv").write_text('id,text,label\n1,"un, deux",neutral\n2,trois,positive\n', encoding="utf-8")
    (tmp_path / "d.csv").write_text("только текст\nещё один\n", encoding="utf-8")
    assert calibration.read_text_file(tmp_path / "a.txt").texts == ["eins", "zwei", "drei"]
    b = calibration.read_text_file(tmp_path / "b.jsonl")
    assert b.texts == ["uno", "dos"] and b.labels == ["positive", "negative"]
    c = calibration.read_text_file(tmp_path / "c.csv")
    assert c.texts == ["un, deux", "trois"] and c.labels == ["neutral", "positive"]
    assert calibration.read_text_file(tmp_path / "d.csv").texts == ["только текст", "ещё один"]
    (tmp_path / "bad.jsonl").write_text('{"no_text": 1}\n')
    with pytest.raises(Exception, match="'text' field"):
        calibration.read_text_file(tmp_path / "bad.jsonl")
    cal, held = calibration.split(calibration.read_text_file(tmp_path / "a.txt"), 10, 1)
    assert len(held.texts) == 1 and not set(cal.texts) & set(held.texts)
    sample = calibration.corpus_sample(80)
    assert len(sample.texts) == 80 and len(set(sample.texts)) > 70


def test_labelled_calibration_file_reports_accuracy(tmp_path, checkpoints):
    from tests.conftest import CLS_LABELS, corpus_lines

    rows = [{"text": line[:200], "label": CLS_LABELS[i % 3]} for i, (_, line) in enumerate(corpus_lines(per_lang=4))]
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    settings = QuantizeSettings(mode="static", thresholds=gate.Thresholds(min_agreement=0.0))
    out = export_bundle(
        str(checkpoints["text-classification"]),
        tmp_path / "b",
        quantize=settings,
        calibration_file=path,
        calibration_size=32,
        eval_size=32,
    )
    report = Manifest.read(out / "manifest.json").fidelity["int8"]
    assert report["calibration_text"] == {"origin": str(path), "calibration": 32, "held_out": 32}
    assert {"accuracy_fp32", "accuracy_int8", "agreement", "mean_score_error"} <= set(report["gate"])
    result = mbert_edge.load(out).predict("Hallo Welt", top_k=None)
    assert sorted(r["label"] for r in result) == sorted(CLS_LABELS)
    assert np.isclose(sum(r["score"] for r in result), 1.0, atol=1e-4)


def test_load_hashes_the_files_it_uses(tmp_path, dynamic_bundle):
    import shutil

    from mbert_edge.bundle import Bundle
    from mbert_edge.errors import BundleIntegrityError

    b = tmp_path / "b"
    shutil.copytree(dynamic_bundle, b)
    data = bytearray((b / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    assert mbert_edge.load(b).model_file.precision == "int8"  # the fp32 file is not read, so not hashed
    with pytest.raises(BundleIntegrityError, match=r"model\.onnx fails its checksum"):
        mbert_edge.load(b, precision="fp32")
    with pytest.raises(BundleIntegrityError):
        Bundle.open(b).verify()  # what `mbert-edge info` does: every file


def test_static_calibrates_once_per_work_dir(tmp_path, bundles, monkeypatch):
    """The gate's fallback passes reuse the calibrated ranges instead of calibrating again."""
    from mbert_edge.tokenizer import BundleTokenizer
    from mbert_edge_export.quantize import static
    from tests.conftest import corpus_lines

    src = tmp_path / "fused.onnx"
    optimize_graph(bundles["feature-extraction"] / "model.onnx", src, 2, 32)
    tok = BundleTokenizer(bundles["feature-extraction"] / "tokenizer.json", 128)
    feeds = list(
        calibration.batches(
            tok, [t[:200] for _, t in corpus_lines(per_lang=1)], ["input_ids", "attention_mask", "token_type_ids"]
        )
    )
    reads = []
    original = static._Reader.get_next
    monkeypatch.setattr(static._Reader, "get_next", lambda self: reads.append(1) or original(self))
    nodes = [n for n in gate.quantizable_nodes(src) if n.endswith("MatMul")]
    static.quantize_static(src, tmp_path / "a.onnx", feeds, work_dir=tmp_path / "work")
    first = len(reads)
    static.quantize_static(src, tmp_path / "b.onnx", feeds, nodes_to_exclude=nodes[:2], work_dir=tmp_path / "work")
    assert first >= len(feeds) and len(reads) == first  # second pass read no calibration batch
    assert op_counts(tmp_path / "b.onnx")["MatMul"] > 0
    assert op_counts(tmp_path / "a.onnx")["QuantizeLinear"] > op_counts(tmp_path / "b.onnx")["QuantizeLinear"]


def test_failed_shape_inference_leaves_no_files_and_says_what_to_do(tmp_path, bundles, monkeypatch):
    """ONNX Runtime dumps its half-typed model into the working directory when symbolic inference fails."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from mbert_edge_export.errors import ExportError
    from mbert_edge_export.quantize import static

    src = tmp_path / "fused.onnx"
    optimize_graph(bundles["feature-extraction"] / "model.onnx", src, 2, 32)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "mine.txt").write_text("a user's file")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(SymbolicShapeInference, "_infer_impl", lambda self: setattr(self, "run_", False) or False)
    with pytest.raises(ExportError, match=r"--quantize dynamic, or --target openvino"):
        static.quantize_static(src, tmp_path / "q.onnx", [], work_dir=tmp_path / "work")
    assert sorted(p.name for p in cwd.iterdir()) == ["mine.txt"]
    assert not (tmp_path / "q.onnx").exists()


@pytest.fixture(scope="module")
def openvino_bundle(tmp_path_factory, checkpoints):
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    return export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path_factory.mktemp("q") / "ov",
        quantize=QuantizeSettings(mode="static", target="openvino"),
        calibration_size=32,
        eval_size=32,
    )


def test_openvino_target_node_types_and_manifest(openvino_bundle):
    """NNCF's recipe on the plain graph: every weight matmul, attention's Q·Kᵀ and the embedding tables int8."""
    graph = onnx.load(str(openvino_bundle / "model.int8.onnx")).graph
    counts = Counter(n.op_type for n in graph.node)
    assert counts["Attention"] == 0 and counts["EmbedLayerNormalization"] == 0  # unfused: OpenVINO fuses itself
    producers = {o: n for n in graph.node for o in n.output}

    def source(tensor: str) -> str:  # the op behind a tensor, looking through Reshape/Transpose
        while tensor in producers and producers[tensor].op_type in ("Reshape", "Transpose"):
            tensor = producers[tensor].input[0]
        return producers[tensor].op_type if tensor in producers else "initializer"

    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 8 * LAYERS  # Q, K, V, Q·Kᵀ, softmax·V, attention output, FFN in, FFN out
    quantized = [n for n in matmuls if all(source(i) == "DequantizeLinear" for i in n.input)]
    # all but softmax·V (NNCF keeps softmax outputs in float) and the matmuls the accuracy gate kept in fp32 (on
    # some CPUs; see test_dynamic_node_types_and_manifest), which the manifest names
    kept = set(Manifest.read(openvino_bundle / "manifest.json").fidelity["int8"]["settings"]["fp32_nodes"])
    assert kept <= {n.name for n in matmuls} and not kept & {n.name for n in quantized}
    assert len(quantized) == 7 * LAYERS - len(kept)
    in_float = [n for n in matmuls if n not in quantized and n.name not in kept]
    assert all(any(source(i) == "Softmax" for i in n.input) for n in in_float)
    weights = {t.name: t for t in graph.initializer}
    word_gather = next(n for n in graph.node if n.op_type == "Gather" and "word_embeddings" in n.name)
    table = producers[word_gather.input[0]]  # Gather on the int8 table, or DequantizeLinear of it
    int8_table = table.op_type == "DequantizeLinear" and weights[table.input[0]].data_type == onnx.TensorProto.INT8
    assert int8_table

    m = Manifest.read(openvino_bundle / "manifest.json")
    (entry,) = m.model_files()
    assert (entry.backend, entry.precision, entry.quantization) == ("openvino", "int8", "static-qdq")
    settings = m.fidelity["int8"]["settings"]
    assert settings["target"] == "openvino" and settings["tool"].startswith("nncf")
    assert m.fidelity["int8"]["gate"]["passed"] and "optimization" not in m.fidelity
    assert m.export["quantize"]["target"] == "openvino"


def test_openvino_target_runs_on_openvino_only_by_name(openvino_bundle, bundles):
    from mbert_edge.errors import BackendUnavailableError
    from tests.conftest import corpus_lines

    with pytest.raises(BackendUnavailableError, match="backend='openvino'"):
        mbert_edge.load(openvino_bundle)  # auto never picks OpenVINO, and ONNX Runtime has no file here
    texts = [line[:200] for _, line in corpus_lines(per_lang=2)]
    q = mbert_edge.load(openvino_bundle, backend="openvino")
    f = mbert_edge.load(bundles["feature-extraction"])  # the fp32 reference, run by ONNX Runtime
    cos = (q.embed(texts) * f.embed(texts)).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.95


def test_openvino_target_gate_fails_on_purpose(tmp_path, checkpoints):
    pytest.importorskip("nncf")
    impossible = QuantizeSettings(
        mode="static", target="openvino", thresholds=gate.Thresholds(min_cosine=1.01), max_fallback_groups=1
    )
    with pytest.raises(QuantizationGateError, match="even with") as info:
        export_bundle(
            str(checkpoints["feature-extraction"]),
            tmp_path / "out",
            quantize=impossible,
            calibration_size=16,
            eval_size=16,
        )
    assert "--target onnxruntime" in str(info.value) and "--quantize dynamic" not in str(info.value)
    report = info.value.report
    # the groups cover the attention matmuls too (NNCF quantizes them), and one group went back to fp32
    assert sum(len(r["nodes"]) for r in report["sensitivity"]) == 8 * LAYERS + 3  # matmuls + 3 embedding tables
    assert len(report["fp32_groups"]) == 1 and report["settings"]["fp32_nodes"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (QuantizeSettings(mode="dynamic", target="openvino"), "needs --quantize static"),
        (QuantizeSettings(mode="static", method="entropy", target="openvino"), "NNCF"),
        (QuantizeSettings(mode="dynamic", method="entropy"), "needs no calibration"),
        (QuantizeSettings(mode="static", target="tensorrt"), "--target must be one of"),
        (QuantizeSettings(outlier_channels="fp16"), "--outlier-channels must be one of"),
    ],
)
def test_quantize_settings_rejected_before_any_work(tmp_path, settings, message):
    from mbert_edge_export.errors import ExportError

    with pytest.raises(ExportError, match=message):
        export_bundle("/nonexistent/checkpoint", tmp_path / "out", quantize=settings)


def test_int4_blocks_hand_checked_and_run_by_onnxruntime(tmp_path):
    """Packing and scales against hand-computed values; the standard ops that replace the Gather decode them in
    ONNX Runtime (ids of rank 1 and 2), as its GatherBlockQuantized contrib op decodes the same table."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mbert_edge_export.quantize import embedding

    table = np.array([[3.5, -0.5, 0.0, 1.4] * 4, [-7.0, 1.0, 7.0, 0.0] * 4], dtype=np.float32)  # 2 x 16
    packed, scales = embedding.quantize_blocks(table, 16)
    np.testing.assert_allclose(scales, [[0.5], [1.0]])  # max |x| / 7 per block
    # values + 8, low nibble first: row 0 -> 7, -1, 0, 1.4/0.5 = 2.8 -> 3: 15, 7, 8, 11; row 1 -> -7, 1, 7, 0
    assert packed[:2] == bytes([0x7F, 0xB8]) and packed[8:10] == bytes([0x91, 0x8F])
    want = np.array([[-7.0, 1.0, 7.0, 0.0] * 4, [3.5, -0.5, 0.0, 1.5] * 4], dtype=np.float32)  # 1.4 -> 3 x 0.5

    for shape in ([None], [None, None]):
        graph = helper.make_graph(
            [helper.make_node("Gather", ["table", "ids"], ["out"], name="word_embeddings/Gather")],
            "g",
            [helper.make_tensor_value_info("ids", TensorProto.INT64, shape)],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [*shape, 16])],
            [numpy_helper.from_array(table, "table")],
        )
        path = tmp_path / f"m{len(shape)}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        assert embedding.word_embedding_node(path) == "word_embeddings/Gather"
        info = embedding.compress_word_embedding(path, "word_embeddings/Gather")
        assert info == {
            "node": "word_embeddings/Gather",
            "shape": [2, 16],
            "bits": 4,
            "block_size": 16,
            "scales": "fp32",
        }
        model = onnx.load(str(path))
        assert {n.domain for n in model.graph.node} == {""}  # standard ops only
        ids = np.array([1, 0], np.int64).reshape((1, 2) if len(shape) == 2 else (2,))
        got = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0]
        np.testing.assert_allclose(got.reshape(2, 16), want, atol=1e-6)

    # ONNX Runtime's contrib op reads the same bytes as UINT4 with zero point 8: the same numbers to the bit
    gbq = helper.make_graph(
        [
            helper.make_node(
                "GatherBlockQuantized",
                ["t", "ids", "s", "z"],
                ["out"],
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=1,
                block_size=16,
            )
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 16])],
        [
            helper.make_tensor("t", TensorProto.UINT4, [2, 16], packed, raw=True),
            numpy_helper.from_array(scales, "s"),
            helper.make_tensor("z", TensorProto.UINT4, [2, 1], bytes([0x88]), raw=True),
        ],
    )
    m = helper.make_model(gbq, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    contrib = ort.InferenceSession(m.SerializeToString()).run(None, {"ids": np.array([1, 0], np.int64)})[0]
    np.testing.assert_array_equal(contrib, got.reshape(2, 16))


def test_int8_rows_fallback_run_by_onnxruntime(tmp_path):
    """The fallback's 8-bit table: a scale per row (max |x| / 127), rows within half a step of the original."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mbert_edge_export.quantize import embedding

    rng = np.random.default_rng(0)
    table = (rng.standard_normal((50, 24)) * rng.uniform(0.01, 2.0, (50, 1))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["out"], name="word_embeddings/Gather")],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, None, 24])],
        [numpy_helper.from_array(table, "table")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    info = embedding.compress_word_embedding(path, "word_embeddings/Gather", bits=8)
    assert info["bits"] == 8
    assert Counter(n.op_type for n in onnx.load(str(path)).graph.node) == {"Gather": 2, "Cast": 1, "Mul": 1}
    ids = np.array([[3, 49, 0], [7, 7, 12]], np.int64)
    got = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0]
    step = np.abs(table).max(axis=1) / 127
    assert np.all(np.abs(got - table[ids]) <= step[ids][..., None] / 2 + 1e-7)
    assert np.abs(got - table[ids]).max() > 0  # it is quantized


def test_fallback_on_embedding_group_takes_the_table_to_8_bits(tmp_path, bundles, monkeypatch):
    """Scripted metric: the 4-bit table is what hurts; the fallback's answer is the 8-bit table, not fp32."""
    src = tmp_path / "fused.onnx"
    optimize_graph(bundles["feature-extraction"] / "model.onnx", src, 2, 32)
    from mbert_edge_export.quantize import embedding

    word = embedding.word_embedding_node(src)
    bits_of: dict[str, int] = {}

    def fake_dynamic(src_path, out, per_channel=True, nodes_to_exclude=()):
        out.write_bytes(b"")
        return {"mode": "dynamic"}

    def fake_compress(path, node, bits=4):
        bits_of[str(path)] = bits
        return {"node": node, "bits": bits}

    def fake_evaluate(reference, path, batches, task, **kw):
        value = 0.95 if bits_of[str(path)] == 4 else 0.999
        return {"metric": "mean_cosine", "value": value, "threshold": 0.99, "passed": value >= 0.99}

    monkeypatch.setattr("mbert_edge_export.quantize.dynamic.quantize_dynamic", fake_dynamic)
    monkeypatch.setattr("mbert_edge_export.quantize.embedding.compress_word_embedding", fake_compress)
    monkeypatch.setattr(gate, "evaluate", fake_evaluate)
    monkeypatch.setattr(
        "mbert_edge_export.quantize.fixed_ranges.make_batch_invariant", lambda path, batches, overrides=None: {}
    )
    monkeypatch.setattr(gate, "model_outputs", lambda path, batches: [])
    monkeypatch.setattr(gate, "latency_ms", lambda path, batch, backend=None: 1.0)
    report = quantize_with_gate(src, tmp_path / "q.onnx", QuantizeSettings(), "feature-extraction", LAYERS, [], [])
    assert report["fp32_groups"] == [0] and report["gate"]["passed"]
    assert report["settings"]["word_embedding"] == {"node": word, "bits": 8}
    assert word not in report["settings"]["fp32_nodes"]


def test_gate_judges_the_worst_language_not_only_the_mean(dynamic_bundle):
    report = {"value": 0.925, "threshold": 0.8}
    per_text = np.array([0.99] * 24 + [0.7] * 8 + [0.0] * 2)  # cosines
    gate._judge_languages(report, per_text, ["en"] * 24 + ["de"] * 8 + ["sw"] * 2)
    assert report["languages"]["de"] == {"value": 0.7, "texts": 8, "judged": True}
    assert report["languages"]["sw"]["texts"] == 2  # reported, too few texts to be judged
    assert report["worst_language"] == {"language": "de", "value": 0.7}
    assert report["value"] == 0.7 and report["overall_value"] == 0.925  # so the gate (0.8) fails
    # token agreement: hits and totals per text, pooled per language
    report = {"value": 0.5, "threshold": 0.5}
    tokens = np.array([[3, 4]] * 8 + [[1, 4]] * 8, dtype=float)
    gate._judge_languages(report, tokens, ["a"] * 8 + ["b"] * 8, discrete=True)
    assert report["languages"]["a"]["value"] == 0.75 and report["worst_language"]["language"] == "b"
    # an agreement over too few texts to resolve the threshold is reported, not judged: at 0.99, one flipped
    # text of 8 (0.875) is noise; of 100 (0.99) it is what the threshold allows
    report = {"value": 0.99, "threshold": 0.99}
    flips = np.array([1.0] * 7 + [0.0] + [1.0] * 99 + [0.0], dtype=float)
    gate._judge_languages(report, flips, ["few"] * 8 + ["many"] * 100, discrete=True)
    assert not report["languages"]["few"]["judged"] and report["languages"]["many"]["judged"]
    assert report["worst_language"] == {"language": "many", "value": 0.99}
    # the default export gates on held-out corpus text of every language, each judged
    g = Manifest.read(dynamic_bundle / "manifest.json").fidelity["int8"]["gate"]
    assert len(g["languages"]) >= 30 and all(v["judged"] for v in g["languages"].values())
    assert g["value"] == min(g["overall_value"], g["worst_language"]["value"])


def test_calibration_files_keep_labels_with_their_texts(tmp_path):
    """A blank text is skipped with its label (hand-checked pairs); a byte-order mark is not part of the CSV
    header or of the first JSON line; a label column without a text column is refused."""
    (tmp_path / "blank.jsonl").write_text(
        '{"text": "a", "label": "x"}\n{"text": "   ", "label": "y"}\n{"text": "b", "label": "z"}\n', encoding="utf-8"
    )
    blank = calibration.read_text_file(tmp_path / "blank.jsonl")
    assert list(zip(blank.texts, blank.labels or [], strict=True)) == [("a", "x"), ("b", "z")]
    (tmp_path / "bom.csv").write_text("text,label\nhallo,positive\nwelt,negative\n", encoding="utf-8-sig")
    bom = calibration.read_text_file(tmp_path / "bom.csv")
    assert bom.texts == ["hallo", "welt"] and bom.labels == ["positive", "negative"]
    (tmp_path / "bom.jsonl").write_text('{"text": "uno", "label": "positive"}\n', encoding="utf-8-sig")
    assert calibration.read_text_file(tmp_path / "bom.jsonl").texts == ["uno"]
    (tmp_path / "sentence.csv").write_text("sentence,label\nhallo,positive\n", encoding="utf-8")
    with pytest.raises(ExportError, match="'label' column needs a 'text' column"):
        calibration.read_text_file(tmp_path / "sentence.csv")


def test_calibration_and_gate_never_share_a_text(tmp_path):
    (tmp_path / "dup.txt").write_text("hello\nhello\nhello\nhello\nworld\nfoo\n", encoding="utf-8")
    cal, held = calibration.split(calibration.read_text_file(tmp_path / "dup.txt"), 10, 10)
    assert not set(cal.texts) & set(held.texts) and sorted(cal.texts + held.texts) == ["foo", "hello", "world"]
    (tmp_path / "one.txt").write_text("only\nonly\n", encoding="utf-8")
    with pytest.raises(ExportError, match="1 distinct text"):
        calibration.split(calibration.read_text_file(tmp_path / "one.txt"), 10, 10)
    for sizes in ((0, 10), (10, 0)):
        with pytest.raises(ExportError, match="must both be at least 1"):
            calibration.split(calibration.read_text_file(tmp_path / "dup.txt"), *sizes)


def test_corpus_gate_judges_every_language_even_with_a_small_calibration(caplog):
    """The gate gets MIN_TEXTS_PER_LANGUAGE texts in each language it covers, however few calibration texts
    there are; 'no' reads the Norwegian folder; a language without corpus text is named, not dropped silently."""
    cal, held = calibration.corpus_sets(16, 16, ["en", "de", "fr", "es", "ru", "zh", "ar", "hi"])
    assert len(cal.texts) == 16
    assert min(Counter(held.langs or []).values()) >= calibration.MIN_TEXTS_PER_LANGUAGE
    assert len(Counter(held.langs or [])) == 8
    _, no = calibration.corpus_sets(8, 8, ["no"])
    assert set(no.langs or []) == {"nb"}
    with caplog.at_level("WARNING"):
        _, mixed = calibration.corpus_sets(8, 8, ["en", "fa"])
    assert set(mixed.langs or []) == {"en"} and "no text in fa" in caplog.text


def test_labels_of_an_embedding_models_calibration_file_are_ignored(tmp_path, checkpoints):
    """Labels are optional: an embedding model's export takes a labelled file and gates on cosine to fp32."""
    from tests.conftest import corpus_lines

    rows = [{"text": line[:200], "label": "any"} for _, line in corpus_lines(per_lang=3)]
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path / "b",
        quantize=QuantizeSettings(thresholds=gate.Thresholds(min_cosine=0.0)),
        calibration_file=path,
        calibration_size=16,
        eval_size=16,
    )
    report = Manifest.read(out / "manifest.json").fidelity["int8"]
    assert report["gate"]["metric"] == "mean_cosine" and "accuracy_int8" not in report["gate"]


def test_unknown_label_fails_before_the_onnx_export(tmp_path, checkpoints, monkeypatch):
    import mbert_edge_export.stages.to_onnx as to_onnx

    monkeypatch.setattr(to_onnx, "run", lambda ctx: pytest.fail("exported before the labels were checked"))
    path = tmp_path / "labelled.jsonl"
    path.write_text('{"text": "gut", "label": "positive"}\n{"text": "schlecht", "label": "spam"}\n', encoding="utf-8")
    with pytest.raises(ExportError, match="spam"):
        export_bundle(
            str(checkpoints["text-classification"]), tmp_path / "b", quantize=QuantizeSettings(), calibration_file=path
        )
    assert not (tmp_path / "b").exists()
