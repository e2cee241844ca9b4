"""Outlier channels kept in float32 beside the integer GEMMs (export/quantize/outlier_channels.py), on a tiny
model with one planted outlier neuron: the split graph computes what the original computes, and the INT8 file
gets closer to fp32 than the same file with every channel in the integer product."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mbert_edge.cli import _gate_summary
from mbert_edge.manifest import Manifest
from mbert_edge_export.optimize import optimize_graph
from mbert_edge_export.quantize import gate
from mbert_edge_export.quantize.gated import QuantizeSettings
from mbert_edge_export.quantize.outlier_channels import outlier_channels, split_outliers
from tests.tiny_int8 import CALIBRATION, HELD_OUT, LAYERS, assert_batch_invariant, feeds, quantize, run

PLANTED = 5  # the feed-forward neuron of layer 0 made an outlier


@pytest.mark.parametrize(
    ("absmax", "want"),
    [
        ([1.0, 30.0, 2.0, 3.0], [1]),  # one channel 10x the next
        ([30.0, 25.0, 5.0, 4.0], [0, 1]),  # two stand apart together
        ([3.0, 2.5, 2.0, 1.0], []),  # no gap of 4x
        ([8.0, 1.0, 2.0, 1.5], []),  # exactly 4x the next is not above it
        ([100.0] * 5 + [1.0], []),  # five alike: more than max_channels (4), so none is set apart
    ],
)
def test_outlier_channels_hand_checked(absmax, want):
    assert outlier_channels(np.asarray(absmax)) == want


@pytest.fixture(scope="module")
def planted(tmp_path_factory, bundles):
    """The tiny feature extractor's fused graph with feed-forward neuron PLANTED of layer 0 pushed to ~60 on
    every token (its Gelu output then dwarfs the other neurons' few units)."""
    root = tmp_path_factory.mktemp("outliers")
    fused = root / "fused.onnx"
    optimize_graph(bundles["feature-extraction"] / "model.onnx", fused, 2, 32)
    model = onnx.load(str(fused))
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    ffn_in = next(
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and "layer.0/" in n.name and producer[n.input[0]].op_type == "LayerNormalization"
    )
    bias_add = next(n for n in model.graph.node if n.op_type == "Add" and ffn_in.output[0] in n.input)
    w = numpy_helper.to_array(inits[ffn_in.input[1]]).copy()
    b_name = next(i for i in bias_add.input if i in inits)
    b = numpy_helper.to_array(inits[b_name]).copy()
    w[:, PLANTED] *= 4.0
    b[PLANTED] = 60.0
    inits[ffn_in.input[1]].CopyFrom(numpy_helper.from_array(w, ffn_in.input[1]))
    inits[b_name].CopyFrom(numpy_helper.from_array(b, b_name))
    onnx.save_model(model, str(fused))
    return fused


def _second_feed_forward_product(path) -> tuple[str, str, str, np.ndarray, np.ndarray]:
    """Layer 0's second feed-forward product (the one the planted neuron feeds): the names of its input (the
    Gelu output), of the residual sum that adds it and of that sum's other input; its weight and bias."""
    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dense = next(n for n in graph.node if n.op_type == "MatMul" and "layer.0/output/dense" in n.name)
    bias = next(n for n in graph.node if n.op_type == "Add" and dense.output[0] in n.input)
    total = next(n for n in graph.node if n.op_type == "Sum" and bias.output[0] in n.input)
    other = next(i for i in total.input if i != bias.output[0])
    b = next(inits[i] for i in bias.input if i in inits)
    return dense.input[0], total.output[0], other, inits[dense.input[1]], b


def test_split_graph_computes_what_the_original_computes(tmp_path, planted):
    ranges, report = split_outliers(planted, tmp_path / "split.onnx", CALIBRATION)
    # the planted neuron, and only it, leaves the second feed-forward product of layer 0
    split = {r["matmul"]: r for r in report["matmuls"]}
    ffn_out = [m for m in split if "layer.0/output/dense" in m]
    assert len(ffn_out) == 1 and split[ffn_out[0]]["channels"] == [PLANTED]
    assert split[ffn_out[0]]["absmax"][0] > 50
    # only products that a residual Sum adds are split; the others are reported, left in INT8
    assert all("output/dense" in m for m in split)
    assert all("intermediate/dense" in r["matmul"] for r in report["not_split"])
    assert report["fp32_matmuls"] == [f"{m}/outliers/MatMul" for m in split]
    (x,) = [k for k in ranges if k in {n.input[0] for n in onnx.load(str(planted)).graph.node if n.name == ffn_out[0]}]
    assert ranges[x][1] < 0.2 * split[ffn_out[0]]["absmax"][0]  # the other channels' range
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "split.onnx")).graph.node)
    before = Counter(n.op_type for n in onnx.load(str(planted)).graph.node)
    assert ops["Gather"] - before["Gather"] == len(split) and ops["MatMul"] - before["MatMul"] == len(split)
    for seed in (10, 11):  # held-out inputs: the same function, to float32 rounding
        batch = feeds(seed)
        np.testing.assert_allclose(run(tmp_path / "split.onnx", batch), run(planted, batch), atol=2e-5)


def test_int8_with_split_outliers_is_closer_to_fp32(tmp_path, planted, bundles):
    spec = Manifest.read(bundles["feature-extraction"] / "manifest.json").embedding
    lenient = gate.Thresholds(min_cosine=0.0)
    gelu, total, residual, weight, bias = _second_feed_forward_product(planted)
    errors = {}
    for mode in ("float32", "int8"):
        out = tmp_path / f"{mode}.onnx"
        settings = QuantizeSettings(outlier_channels=mode, thresholds=lenient)
        report = quantize(planted, out, settings, spec)
        # the error of that one product, judged on the INT8 model's own input to it (the error upstream, the
        # same in both files, left out): what the sum added against float32 arithmetic on the same input
        err = []
        for f in HELD_OUT:
            real = f["attention_mask"] > 0
            got_total, got_residual, got_gelu = run(out, f, [total, residual, gelu])
            err.append(float(np.abs(got_total - got_residual - (got_gelu @ weight + bias))[real].max()))
        errors[mode] = max(err)
        ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
        if mode == "float32":
            split = report["settings"]["outlier_channels"]["matmuls"]
            assert split and ops["MatMul"] == len(split)  # the float32 side products, not quantized
            assert ops["MatMulIntegerToFloat"] == 3 * LAYERS  # every weight matmul still an integer GEMM
            n = sum(len(m["channels"]) for m in split)
            assert f"{n} outlier channel(s) of {len(split)} matmul(s) in float32" in _gate_summary(report)
        else:
            assert report["settings"]["outlier_channels"] == "int8" and ops["MatMul"] == 0
            assert "outlier" not in _gate_summary(report)
        # still batch-invariant: a text alone gives what it gives inside its batch
        assert_batch_invariant(out, HELD_OUT[0])
    assert errors["float32"] < 0.25 * errors["int8"], errors
