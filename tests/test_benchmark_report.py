"""The benchmark report: ratios to the best peer are computed the right way round."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _report():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
    spec = importlib.util.spec_from_file_location("bench_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _variant(b1s16, b1s128, b32s128_ms, size=100.0):
    return {
        "b1s16": {"median_ms": b1s16, "p99_ms": b1s16 * 1.1},
        "b1s128": {"median_ms": b1s128, "p99_ms": b1s128},
        "b32s128": {"median_ms": b32s128_ms, "p99_ms": b32s128_ms, "seq_per_s": 32000 / b32s128_ms},
        "size_mb": size,
        "peak_rss_mb": 300.0,
        "cold_start_s": 0.5,
    }


def test_ratios_against_best_peer():
    results = {
        "machine": {"cpu": "test cpu", "cores": 2, "isa": ["avx512_vnni"]},
        "versions": {"onnxruntime": "x"},
        "threads": 2,
        "started": "now",
        "load_before": (0.1, 0.1, 0.1),
        "load_after": (0.2, 0.2, 0.2),
        "models": {
            "m": {
                "variants": {
                    "optimum-int8": _variant(8.0, 30.0, 1000.0),  # 32 seq/s
                    "openvino-int8": _variant(5.0, 20.0, 500.0),  # 64 seq/s: best peer everywhere
                    "ours-int8-dynamic": {
                        **_variant(4.0, 40.0, 250.0),  # 128 seq/s
                        "batch_invariance": {"max_abs_diff": 0.0},
                    },
                    "ours-int8-dynamic-per-batch": {
                        **_variant(4.0, 40.0, 250.0),
                        "batch_invariance": {"max_abs_diff": 0.0192},
                    },
                }
            }
        },
    }
    md = _report().markdown(results)
    row = next(line for line in md.splitlines() if "ours-int8-dynamic" in line)
    assert "[1.25x]" in row  # 5.0 / 4.0: faster than the best peer at b1 x s16
    assert "[0.50x]" in row  # 20 / 40: slower at b1 x s128
    assert "[2.00x]" in row  # 128 / 64 seq/s
    assert "Best peer per shape: b1s16: openvino-int8, b1s128: openvino-int8, b32s128: openvino-int8" in md
    assert "test cpu" in md and "load average" in md
    assert row.endswith("| 0.0e+00 |") and "| 1.9e-02 |" in md  # alone vs in a batch
