"""Smoothing of the feed-forward input before INT8 (export/quantize/smoothing.py), on the tiny model with one
planted wide channel in the LayerNorm that feeds layer 0's first feed-forward matmul: the smoothed graph
computes what the original computes, and the INT8 file's feed-forward product gets closer to float32
arithmetic than the same file without smoothing."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mbert_edge.cli import _gate_summary, _parser
from mbert_edge.manifest import Manifest
from mbert_edge_export.errors import ExportError
from mbert_edge_export.optimize import optimize_graph
from mbert_edge_export.quantize import gate, smoothing
from mbert_edge_export.quantize.gated import QuantizeSettings, check_settings
from tests.tiny_int8 import CALIBRATION, HELD_OUT, LAYERS, assert_batch_invariant, feeds, quantize, run

WIDE = 7  # the channel of layer 0's attention-output LayerNorm made wide


def test_scales_hand_checked():
    # alpha 0.5: sqrt(act / weight) = 2, 1, 0.5 (geometric mean already 1); a channel never active keeps 1
    s = smoothing.smoothing_scales(np.array([4.0, 1.0, 1.0, 0.0]), np.array([1.0, 1.0, 4.0, 1.0]))
    np.testing.assert_allclose(s, [2.0, 1.0, 0.5, 1.0])
    # alpha 1: all of the spread leaves the activations (scaled to a geometric mean of 1)
    s = smoothing.smoothing_scales(np.array([8.0, 2.0]), np.array([1.0, 1.0]), alpha=1.0)
    np.testing.assert_allclose(s, [2.0, 0.5])
    np.testing.assert_allclose(np.array([8.0, 2.0]) / s, [4.0, 4.0])
    # alpha 0: the activations keep their spread; only the weights' rows are evened out
    s = smoothing.smoothing_scales(np.array([8.0, 2.0]), np.array([4.0, 1.0]), alpha=0.0)
    np.testing.assert_allclose(s, [0.5, 2.0])


def _first_feed_forward(model) -> tuple[object, object]:
    """Layer 0's first feed-forward MatMul and the LayerNormalization that writes its input."""
    producer = {o: n for n in model.graph.node for o in n.output}
    ffn = next(
        n
        for n in model.graph.node
        if n.op_type == "MatMul"
        and "layer.0/intermediate/dense" in n.name
        and producer[n.input[0]].op_type == "LayerNormalization"
    )
    return ffn, producer[ffn.input[0]]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, bundles):
    """The tiny feature extractor's fused graph with the scale (gamma) of channel WIDE of layer 0's
    attention-output LayerNorm multiplied by 15: that channel then spans ~10 times the median channel's range,
    as the widest channel of e5-small's feed-forward input does (19-31 against a median of ~2)."""
    root = tmp_path_factory.mktemp("smoothing")
    fused = root / "fused.onnx"
    optimize_graph(bundles["feature-extraction"] / "model.onnx", fused, 2, 32)
    model = onnx.load(str(fused))
    inits = {t.name: t for t in model.graph.initializer}
    _, norm = _first_feed_forward(model)
    gamma = numpy_helper.to_array(inits[norm.input[1]]).copy()
    gamma[WIDE] *= 15.0
    inits[norm.input[1]].CopyFrom(numpy_helper.from_array(gamma, norm.input[1]))
    onnx.save_model(model, str(fused))
    return fused


def test_smoothed_graph_computes_what_the_original_computes(tmp_path, planted):
    report = smoothing.smooth(planted, tmp_path / "smoothed.onnx", CALIBRATION)
    assert report["alpha"] == smoothing.ALPHA
    # one tensor per layer: the first feed-forward matmul's input (Q, K and V are one fused Attention here)
    assert len(report["tensors"]) == LAYERS
    assert all(len(t["matmuls"]) == 1 and "intermediate/dense" in t["matmuls"][0] for t in report["tensors"])
    layer0 = next(t for t in report["tensors"] if "layer.0/" in t["matmuls"][0])
    assert layer0["spread_before"] > 5 and layer0["spread_after"] < 0.5 * layer0["spread_before"]
    before = Counter(n.op_type for n in onnx.load(str(planted)).graph.node)
    model = onnx.load(str(tmp_path / "smoothed.onnx"))
    after = Counter(n.op_type for n in model.graph.node)
    assert after - before == Counter({"Mul": LAYERS})
    # the residual still reads the LayerNorm's own output; only the matmul reads the smoothed one
    ffn = next(n for n in model.graph.node if n.name == layer0["matmuls"][0])
    assert ffn.input[0] == f"{layer0['tensor']}/smoothing/x"
    assert any(layer0["tensor"] in n.input for n in model.graph.node if n.op_type in ("Add", "Sum"))
    for seed in (10, 11):  # held-out inputs: the same function, to float32 rounding
        batch = feeds(seed)
        np.testing.assert_allclose(run(tmp_path / "smoothed.onnx", batch), run(planted, batch), rtol=2e-5, atol=2e-5)


def test_int8_with_smoothing_is_closer_to_fp32(tmp_path, planted, bundles):
    spec = Manifest.read(bundles["feature-extraction"] / "manifest.json").embedding
    lenient = gate.Thresholds(min_cosine=0.0)
    original = onnx.load(str(planted))
    ffn, norm = _first_feed_forward(original)
    inits = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    weight = inits[ffn.input[1]]
    bias_add = next(n for n in original.graph.node if n.op_type == "Add" and ffn.output[0] in n.input)
    bias = next(inits[i] for i in bias_add.input if i in inits)
    errors = {}
    for alpha in (0.5, 0.0):
        out = tmp_path / f"alpha-{alpha}.onnx"
        settings = QuantizeSettings(smoothing=alpha, thresholds=lenient)
        report = quantize(planted, out, settings, spec)
        # the rounding error of layer 0's first feed-forward product, judged on the INT8 file's own input to
        # it (the error upstream left out): its biased product against float32 arithmetic on that input, mean
        # over real tokens
        err = []
        for f in HELD_OUT:
            real = f["attention_mask"] > 0
            x, got = run(out, f, [norm.output[0], bias_add.output[0]])
            err.append(np.abs(got - (x @ weight + bias))[real].ravel())
        errors[alpha] = float(np.concatenate(err).mean())
        ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
        assert ops["MatMulIntegerToFloat"] == 3 * LAYERS  # every weight matmul still an integer GEMM
        if alpha:
            assert [t["matmuls"] for t in report["settings"]["smoothing"]["tensors"]]
            assert f"the input of {LAYERS} feed-forward matmul(s) smoothed (alpha 0.5)" in _gate_summary(report)
        else:
            assert report["settings"]["smoothing"] == "off" and "smoothed" not in _gate_summary(report)
        # still batch-invariant: a text alone gives what it gives inside its batch
        assert_batch_invariant(out, HELD_OUT[0])
    assert errors[0.5] < 0.5 * errors[0.0], errors


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_strength_out_of_range_fails_before_any_slow_step(alpha):
    with pytest.raises(ExportError, match="--smoothing must be between 0"):
        check_settings(QuantizeSettings(smoothing=alpha))


def test_cli_default_is_the_library_default():
    from mbert_edge_export.quantize.gated import QuantizeSettings

    assert QuantizeSettings().smoothing == smoothing.ALPHA
    assert _parser().parse_args(["export", "ckpt", "-o", "out", "--quantize", "dynamic"]).smoothing is None
    args = ["export", "ckpt", "-o", "out", "--quantize", "dynamic", "--smoothing", "0"]
    assert _parser().parse_args(args).smoothing == 0.0


@pytest.mark.parametrize(
    "extra",
    [
        [],  # no --quantize
        ["--quantize", "static"],
        ["--quantize", "dynamic", "--activation-ranges", "per-batch"],
    ],
)
def test_smoothing_where_it_does_not_apply_fails_before_any_slow_step(tmp_path, checkpoints, extra):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbert_edge.cli",
            "export",
            str(checkpoints["feature-extraction"]),
            "-o",
            str(tmp_path / "b"),
            "--smoothing",
            "0.7",
            *extra,
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "--smoothing applies to --quantize dynamic" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "b").exists()
