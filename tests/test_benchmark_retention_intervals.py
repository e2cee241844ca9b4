"""The quality-only benchmark (benchmarks/retention_intervals.py) end to end on tiny bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

pytest.importorskip("mbert_edge_export")
R = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "retention_intervals.py", "bench_intervals")


def _run(checkpoint: Path, bundle: str, out: Path, kept: str, others: str, *extra: str) -> None:
    """The benchmark's command line on one thread: a checkpoint run in PyTorch and one bundle (NAME=PATH)."""
    args = ["--teacher-checkpoint", str(checkpoint), "--bundle", bundle, "--threads", "1", "--languages", kept]
    R.main([*args, "--other-languages", others, *extra, "--out", str(out)])


def test_classifier_against_the_pytorch_teacher(bundles, checkpoints, tmp_path):
    """A tiny classifier's bundle against its own checkpoint in PyTorch: the same label on every paragraph, so
    the paired counts have no discordant paragraph; the tables are written."""
    out = tmp_path / "intervals"
    _run(checkpoints["text-classification"], f"cls-fp32={bundles['text-classification']}", out, "en,de", "ja")
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


def test_parallel_limit_reads_the_first_sentences(bundles, checkpoints, tmp_path):
    """``--parallel-limit N``: every language is looked up on the set's first N sentences (both ways), and the
    tables say how many English sentences the pivot row is made of."""
    from mbert_edge_export.distill.data import parallel_set

    out = tmp_path / "limited"
    bundle = f"emb-fp32={bundles['feature-extraction']}"
    _run(checkpoints["feature-extraction"], bundle, out, "en,de,hi", "ko", "--parallel-limit", "12")
    result = json.loads(out.with_name("limited.json").read_text(encoding="utf-8"))
    rows = result["quality"]["languages"]
    assert len(parallel_set()["en"]) > 12
    for lang in ("de", "hi", "ko"):
        assert rows[lang]["parallel_sentences"] == 12
        assert sum(rows[lang]["entries"]["emb-fp32"]["retention_counts"].values()) == 24
    assert "--parallel-limit 12" in result["command"]
    assert "of the same 12 English sentences" in out.with_name("limited.md").read_text(encoding="utf-8")
