"""The INT8 matmul floor benchmark builds mBERT-base's weight matmuls, all of them and nothing more."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def floor():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_floor", BENCHMARKS / "floor.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _encoder_linear_macs() -> int:
    """MACs per token of the Linear layers in transformers' BERT encoder at mBERT-base's config."""
    import torch
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        model = BertModel(BertConfig(vocab_size=119547), add_pooling_layer=False)
    return sum(m.in_features * m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("fmt, op", [("dynamic", "DynamicQuantizeMatMul"), ("qdq", "MatMul")])
def test_chain_has_exactly_the_encoders_weight_matmuls(floor, tmp_path, fmt, op):
    path = floor._chain(tmp_path / "chain.onnx", fmt)
    model = onnx.load(str(path))
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert sum(n.op_type == op for n in model.graph.node) == 4 * 12
    assert len(int8_weights) == 4 * 12
    assert sum(int(np.prod(i.dims)) for i in int8_weights) == _encoder_linear_macs() == floor.int8_macs_per_token()
    # nothing else that computes: no attention scores, softmax, normalization or activation
    assert {n.op_type for n in model.graph.node} <= {op, "QuantizeLinear", "DequantizeLinear", "Slice", "Add"}


def test_dynamic_chain_runs_in_onnxruntime(floor, tmp_path):
    run = floor.variants.ort_runner(floor._chain(tmp_path / "chain.onnx", "dynamic"), threads=1)
    x = np.random.default_rng(0).standard_normal((2, 5, 768)).astype(np.float32)
    assert run({"x": x}).shape == (2, 5, 768)
