"""The quality-only benchmark (benchmarks/retention_intervals.py) end to end on tiny bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

pytest.importorskip("mbert_edge_export")
R = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "retention_intervals.py", "bench_intervals")


def test_classifier_against_the_pytorch_teacher(bundles, checkpoints, tmp_path):
    """A tiny classifier's bundle against its own checkpoint in PyTorch: the same label on every paragraph, so
    the paired counts have no discordant paragraph; the tables are written."""
    out = tmp_path / "intervals"
    R.main(
        [
            "--teacher-checkpoint",
            str(checkpoints["text-classification"]),
            "--bundle",
            f"cls-fp32={bundles['text-classification']}",
            "--threads",
            "1",
            "--languages",
            "en,de",
            "--other-languages",
            "ja",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.with_name("intervals.json").read_text(encoding="utf-8"))
    md = out.with_name("intervals.md").read_text(encoding="utf-8")
    assert result["reference"] == "pytorch" and result["names"] == ["cls-fp32", "pytorch"]
    rows = result["quality"]["languages"]
    for lang in ("en", "de"):
        e = rows[lang]["entries"]["cls-fp32"]
        c = e["retention_counts"]
        assert c["candidate_only"] == c["reference_only"] == 0  # the bundle labels as the checkpoint does
        assert sum(c.values()) == rows[lang]["paragraphs"]
        # the tiny head's labels are not topic names: no paragraph right for either, so no ratio to bound
        # (intervals themselves: tests/test_uncertainty.py and test_benchmark_students.py)
        assert e["accuracy"] == 0.0 and e["retention"] is None and "retention_interval" not in e
        assert "retention_interval" not in rows[lang]["entries"]["pytorch"]
    assert "Topic accuracy per language" in md and "Retention with its sampling error" in md
