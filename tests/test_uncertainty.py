"""Intervals on retention figures (export/distill/uncertainty.py), against closed forms and hand counts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mbert_edge_export")
from mbert_edge_export.distill.uncertainty import (
    TOLERANCE,
    PairedCounts,
    against,
    mean_interval,
    proportion_interval,
    ratio_interval,
    rounded,
)


@pytest.mark.parametrize(("k", "n"), [(28, 30), (30, 30), (24, 29), (0, 10), (183, 200)])
def test_proportion_interval_is_jeffreys(k, n):
    beta = pytest.importorskip("scipy.stats").beta
    lo, hi = proportion_interval(k, n)
    exact = beta.ppf([0.025, 0.975], k + 0.5, n - k + 0.5)
    assert lo == pytest.approx(exact[0], abs=0.004) and hi == pytest.approx(exact[1], abs=0.004)


def test_proportion_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        proportion_interval(5, 4)


def test_paired_counts_from_hits_by_hand():
    cand = [1, 1, 0, 0, 1, 1, 1]
    ref = [1, 0, 1, 0, 1, 1, 0]
    c = PairedCounts.from_hits(cand, ref)
    assert c == PairedCounts(both=3, candidate_only=2, reference_only=1, neither=1)
    assert c.units == 7 and c.ratio == pytest.approx(5 / 4)
    assert PairedCounts.from_dict(c.to_dict()) == c
    assert PairedCounts(0, 1, 0, 3).ratio is None  # the reference never right: no ratio
    with pytest.raises(ValueError, match="reference is right on no unit"):
        ratio_interval(PairedCounts(0, 1, 0, 3))
    with pytest.raises(ValueError, match="one length"):
        PairedCounts.from_hits([1, 0], [1])


def _delta_interval(cand: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """The large-sample (delta method) 95% interval of mean(cand) / mean(ref) for paired units."""
    n = len(cand)
    x, y = cand.mean(), ref.mean()
    cov = np.cov(np.stack([cand, ref]).astype(float), ddof=1)
    var = (cov[0, 0] / y**2 + x**2 * cov[1, 1] / y**4 - 2 * x * cov[0, 1] / y**3) / n
    r, half = x / y, 1.959964 * np.sqrt(var)
    return r - half, r + half


def test_ratio_interval_matches_the_delta_method_on_a_large_sample():
    rng = np.random.default_rng(1)
    ref = rng.random(4000) < 0.9
    cand = np.where(rng.random(4000) < 0.06, ~ref, ref)  # the candidate differs on ~6% of the units
    lo, hi = ratio_interval(PairedCounts.from_hits(cand, ref))
    d_lo, d_hi = _delta_interval(cand.astype(float), ref.astype(float))
    assert lo == pytest.approx(d_lo, abs=0.003) and hi == pytest.approx(d_hi, abs=0.003)


def test_ratio_interval_is_not_a_point_when_the_two_never_disagree():
    lo, hi = ratio_interval(PairedCounts(both=200, candidate_only=0, reference_only=0, neither=0))
    assert lo < 1.0 < hi and hi - lo > 0.005


def test_ratio_interval_narrows_with_more_units_and_is_seeded():
    small = PairedCounts(both=180, candidate_only=3, reference_only=10, neither=7)
    large = PairedCounts(both=1800, candidate_only=30, reference_only=100, neither=70)
    lo_s, hi_s = ratio_interval(small)
    lo_l, hi_l = ratio_interval(large)
    assert lo_s < small.ratio < hi_s and lo_l < large.ratio < hi_l
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)
    assert ratio_interval(small) == ratio_interval(small)  # same counts, same interval


@pytest.mark.parametrize(
    ("units", "cells", "least"),
    [
        (200, [0.85, 0.03, 0.07, 0.05], 0.92),  # the e5 sets: both kinds of disagreement
        (29, [0.83, 0.0, 0.07, 0.10], 0.90),  # a topic language: the candidate only loses (coverage 91-94%)
    ],
)
def test_ratio_interval_coverage(units, cells, least):
    """Share of simulated samples whose interval holds the true ratio, and that the misses that flatter the
    candidate (true ratio under the interval) stay rare."""
    rng = np.random.default_rng(7)
    p = np.array(cells)
    truth = (p[0] + p[1]) / (p[0] + p[2])
    covered = flattering = 0
    trials = 300
    for t in range(trials):
        counts = PairedCounts(*map(int, rng.multinomial(units, p)))
        if counts.ratio is None:
            continue
        lo, hi = ratio_interval(counts, seed=t)
        covered += lo <= truth <= hi
        flattering += truth < lo
    assert least <= covered / trials <= 0.99
    assert flattering / trials <= 0.09


def test_mean_interval_by_hand():
    lo, hi = mean_interval([0.96, 0.97, 0.98, 0.99])
    half = 1.959964 * np.std([0.96, 0.97, 0.98, 0.99], ddof=1) / 2  # sd / sqrt(4)
    assert lo == pytest.approx(0.975 - half) and hi == pytest.approx(0.975 + half)
    assert mean_interval([0.9]) is None  # one value: no spread, no interval (not a false point)


def test_rounded_goes_outward():
    assert rounded([0.96996, 1.00441]) == [0.9699, 1.0045]
    assert rounded([0.9344, 0.98851], 3) == [0.934, 0.989]


def test_against_a_threshold():
    got = against({"de": [0.98, 1.01], "hi": [0.93, 0.99], "ar": [0.81, 0.92], "ja": None, "fr": [0.972, 0.99]}, 0.97)
    assert got == {"above": ["de", "fr"], "below": ["ar"], "undecided": ["hi"]}
    # a bound within the draws' simulation error of the threshold is too close to call, either side
    near = {"es": [0.97 + TOLERANCE / 2, 1.0], "ru": [0.9, 0.97 - TOLERANCE / 2]}
    assert against(near, 0.97) == {"above": [], "below": [], "undecided": ["es", "ru"]}


def test_the_worst_of_equal_languages_reads_low():
    """Why a worst-language verdict needs intervals: eight languages with the same true retention, measured
    on 200 lookups each; the smallest of the eight figures sits well under their common value."""
    rng = np.random.default_rng(3)
    p = np.array([0.93, 0.02, 0.03, 0.02])  # true retention (0.93 + 0.02) / (0.93 + 0.03) = 0.9896
    truth = 0.95 / 0.96
    worst = [min(PairedCounts(*map(int, rng.multinomial(200, p))).ratio for _ in range(8)) for _ in range(200)]
    assert np.mean(worst) < truth - 0.015


def test_distill_gate_reports_the_worst_languages_interval():
    """The distill report's gate, from hand-made rows: a retrieval-judged language (capped by its cosine), one
    judged by cosine alone (the pivot), and the printed verdict."""
    from mbert_edge_export.distill.evaluate import format_report, gate

    hi = PairedCounts(both=180, candidate_only=2, reference_only=12, neither=6)  # ratio 182 / 192 = 0.948
    de = PairedCounts(both=196, candidate_only=1, reference_only=1, neither=2)  # ratio 1.0
    rows = {
        "de": {"kept": True, "texts": 30, "teacher": {}, "student": {"cosine_mean": 0.99, "retrieval_ratio": 1.0}},
        "hi": {"kept": True, "texts": 30, "teacher": {}, "student": {"cosine_mean": 0.98, "retrieval_ratio": 0.948}},
        "en": {"kept": True, "texts": 30, "teacher": {}, "student": {"cosine_mean": 0.975}},
    }
    rows["de"]["student"]["retrieval_counts"] = de.to_dict()
    rows["hi"]["student"]["retrieval_counts"] = hi.to_dict()
    for lang, ret in (("de", 0.99), ("hi", 0.948), ("en", 0.975)):
        rows[lang]["student"]["retention"] = ret
    report = {
        "task": "feature-extraction",
        "reference": "teacher",
        "candidates": ["student"],
        "kept_languages": ["de", "en", "hi"],
        "languages": rows,
        "mean": {"student": {}},
    }
    # the student's rows carry their intervals, as evaluate() writes them
    rows["de"]["student"]["retrieval_ratio_interval"] = list(ratio_interval(de))
    rows["hi"]["student"]["retrieval_ratio_interval"] = list(ratio_interval(hi))
    for lang, cos in (("de", 0.99), ("hi", 0.98), ("en", 0.975)):
        rows[lang]["student"]["cosine_mean_interval"] = [cos - 0.002, cos + 0.002]
    g = gate(report, "student", 0.97)
    assert g["worst_language"] == "hi" and g["passed"] is False
    lo, hi_bound = g["worst_interval"]
    # the retrieval ratio's interval, capped by the cosine's (retention is the smaller of the two)
    assert lo == pytest.approx(ratio_interval(hi)[0]) and hi_bound == pytest.approx(0.982)
    assert lo < 0.948 < 0.97 < hi_bound  # the threshold inside: too close to call
    assert g["intervals"]["en"] == pytest.approx([0.973, 0.977])  # cosine alone
    assert g["intervals"]["de"][1] == pytest.approx(0.992)  # capped by the cosine's interval
    assert g["against_threshold"] == {"above": ["de", "en"], "below": [], "undecided": ["hi"]}
    report["gate"] = g
    text = format_report(report)
    assert f"sampling error: hi's retention lies in {rounded([lo, hi_bound], 3)[0]:.3f}-0.982 (95%)" in text
    assert "kept languages under 0.97 beyond sampling error: none; too close to call: hi" in text
    # a figure without an interval (one paragraph: no cosine interval) leaves its language out, not certain
    rows["es"] = {"kept": True, "texts": 1, "teacher": {}, "student": {"cosine_mean": 0.9, "retention": 0.9}}
    report["kept_languages"].append("es")
    g2 = gate(report, "student", 0.97)
    assert g2["worst_language"] == "es" and g2["worst_interval"] is None and "es" not in g2["intervals"]
    del rows["es"]
    report["kept_languages"].remove("es")
    # a language clearly under
    report["gate"] = gate(report, "student", 0.995)
    assert report["gate"]["against_threshold"]["below"] == ["de", "en", "hi"]  # de: its cosine tops out at 0.992
