"""benchmarks/int8_files.py: the retrieval it reports (the distill evaluation's) hand-checked, and a run on a tiny
bundle whose "INT8 file" is its own fp32 file (so every cosine must be 1 and every retrieval the fp32 file's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "int8_files.py", "bench_int8_files")


def test_retrieval_hand_checked():
    from mbert_edge_export.distill.evaluate import retrieval

    pivot = np.eye(3, dtype=np.float32)
    # row 0 finds 0; row 1 is nearest to pivot 2; row 2 finds 2: x -> en 2 of 3
    x = np.array([[1, 0, 0], [0, 0.4, 0.9], [0, 0.1, 1]], dtype=np.float32)
    # en -> x: pivot 0 -> row 0, pivot 1 -> row 1 (0.4), pivot 2 -> row 2 (1.0 > 0.9): 3 of 3
    assert retrieval(x, pivot) == pytest.approx((2 / 3 + 1) / 2)


def test_a_file_against_itself(tmp_path, bench, bundles):
    bundle = bundles["feature-extraction"]
    out = tmp_path / "result"
    result = bench.main([str(bundle), "--file", "self=model.onnx", "--out", str(out), "--rounds", "1"])
    rows = result["files"]["self"]["fidelity"]
    assert rows["en"]["cosine_to_fp32"] == pytest.approx(1.0, abs=1e-6) and "retrieval" not in rows["en"]
    for lang, row in rows.items():
        assert row["cosine_to_fp32"] == pytest.approx(1.0, abs=1e-6), lang
        if lang != "en":
            assert row["retrieval"] == row["retrieval_fp32"] and row["sentences"] > 0
    assert set(result["files"]["self"]["ms"]) == {"b1xs16", "b1xs128", "b32xs128"}
    assert json.loads(out.with_suffix(".json").read_text())["files"]["self"]["path"].endswith("model.onnx")
    assert "| self |" in out.with_suffix(".md").read_text()


def test_a_file_in_openvino_against_onnx_runtimes_fp32(tmp_path, bench, bundles):
    pytest.importorskip("openvino")
    bundle = bundles["feature-extraction"]
    out = tmp_path / "result"
    args = [str(bundle), "--file", "self=model.onnx", "--backend", "openvino", "--out", str(out), "--rounds", "1"]
    result = bench.main(args)
    assert result["backend"] == "openvino"
    # OpenVINO may run an fp32 file in bf16 where the CPU has it (precision "int8" keeps its defaults): close,
    # not equal, to ONNX Runtime's fp32 reference
    for lang, row in result["files"]["self"]["fidelity"].items():
        assert row["cosine_to_fp32"] == pytest.approx(1.0, abs=2e-3), lang
    assert "INT8 files run in OpenVINO" in out.with_suffix(".md").read_text()
