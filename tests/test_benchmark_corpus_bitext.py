"""``benchmarks/corpus_bitext.py``: the ratio margin it mines with, against values worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_script

pytest.importorskip("mbert_edge_export")
C = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "corpus_bitext.py", "bench_corpus_bitext")


def test_ratio_margin_by_hand(monkeypatch):
    """Two sentences against three English ones, k = 2. Cosines (rows: x, columns: English):
    x0: 0.9 0.5 0.1 / x1: 0.8 0.7 0.2. x0's best is e0 (0.9); x0's 2 nearest: (0.9 + 0.5) / 2 = 0.7; e0's 2
    nearest among the x: (0.9 + 0.8) / 2 = 0.85; margin 0.9 / ((0.7 + 0.85) / 2) = 1.16129. x1's best is e0 too
    (0.8); its 2 nearest (0.8 + 0.7) / 2 = 0.75; margin 0.8 / ((0.75 + 0.85) / 2) = 1.0."""
    monkeypatch.setattr(C, "K", 2)
    sim = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.2]])
    # unit vectors whose dot products are ``sim``: x as the rows of sim in a 3-d basis, English as that basis
    best, cos, margin = C.margins(sim, np.eye(3))
    assert best.tolist() == [0, 0]
    np.testing.assert_allclose(cos, [0.9, 0.8])
    np.testing.assert_allclose(margin, [0.9 / 0.775, 1.0], rtol=1e-9)


def test_summary_shares_and_percentiles():
    cos = np.linspace(0.8, 0.9, 11)
    margin = np.array([1.0] * 8 + [1.05, 1.07, 1.10])
    s = C.summary(cos, margin)
    assert s["n"] == 11 and s["cosine_p10_p50_p90"] == [0.81, 0.85, 0.89]
    assert s["share_margin_ge_1.04"] == round(3 / 11, 4) and s["share_margin_ge_1.06"] == round(2 / 11, 4)
