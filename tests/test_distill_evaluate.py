"""The distillation's evaluation metrics and retention gate against hand-computed references.

Retrieval is checked on hand-built embeddings whose nearest neighbours are known; ``evaluate`` on the tiny
checkpoints of conftest.py with the teacher as its own candidate (every figure must be exactly 1) and with a
classifier whose labels are permuted by hand (agreement and accuracy are then counts made here from the
teacher's own argmax, one text at a time); the gate on report dicts written by hand; and the CLI on a gate
that cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION  # noqa: E402
from mbert_edge_export.distill import REPORT_FILE, work_dir  # noqa: E402
from mbert_edge_export.distill.data import TrainingText  # noqa: E402
from mbert_edge_export.distill.evaluate import (  # noqa: E402
    Candidate,
    EvalTexts,
    evaluate,
    format_report,
    gate,
    retrieval,
    retrieval_hits,
)
from mbert_edge_export.distill.modeling import TextEncoder  # noqa: E402

# -- retrieval on hand-built embeddings ------------------------------------------------------------------------


def _unit(rows: list[list[float]]) -> np.ndarray:
    """Rows scaled to unit length."""
    x = np.array(rows, dtype=float)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _hits_by_hand(a: np.ndarray, b: np.ndarray) -> tuple[list[bool], list[bool]]:
    """Plain-Python accuracy@1 both ways: row i of ``a`` finds row i of ``b`` (first best wins ties), and back."""
    n = len(a)

    def best(q: np.ndarray, pool: np.ndarray) -> int:
        scores = [float(sum(q[d] * pool[j][d] for d in range(len(q)))) for j in range(n)]
        return max(range(n), key=lambda j: (scores[j], -j))

    return [best(a[i], b) == i for i in range(n)], [best(b[i], a) == i for i in range(n)]


def test_retrieval_hits_with_one_wrong_neighbour_in_one_direction():
    """a -> b finds every pair; b -> a, row 1 of b is nearer to a's row 0 than to its own pair."""
    a = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    b = _unit([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]])  # b1 . a0 = 0.8 > b1 . a1 = 0.6
    a_to_b, b_to_a = retrieval_hits(a, b)
    assert a_to_b.tolist() == [True, True, True]
    assert b_to_a.tolist() == [True, False, True]
    assert retrieval(a, b) == pytest.approx(5 / 6)
    # swapping the arguments swaps the directions, and the average stays
    b_to_a2, a_to_b2 = retrieval_hits(b, a)
    assert b_to_a2.tolist() == [True, False, True] and a_to_b2.tolist() == [True, True, True]
    assert retrieval(b, a) == pytest.approx(5 / 6)


def test_retrieval_hits_with_swapped_pairs():
    """Two rows whose translations are swapped miss both ways; the third finds its pair: 2 of 6 lookups."""
    a = _unit([[1, 0], [0.6, 0.8], [0, 1]])
    b = _unit([[0.6, 0.8], [1, 0], [0, 1]])
    a_to_b, b_to_a = retrieval_hits(a, b)
    assert a_to_b.tolist() == [False, False, True]
    assert b_to_a.tolist() == [False, False, True]
    assert retrieval(a, b) == pytest.approx(2 / 6)


def test_retrieval_matches_a_plain_python_count():
    """On noisy random pairs (some found, some not), both directions equal a plain-Python nearest-row count."""
    rng = np.random.default_rng(7)
    a = _unit(rng.normal(size=(12, 5)).tolist())
    b = _unit((a + 0.9 * rng.normal(size=a.shape)).tolist())
    want_ab, want_ba = _hits_by_hand(a, b)
    a_to_b, b_to_a = retrieval_hits(a, b)
    assert a_to_b.tolist() == want_ab and b_to_a.tolist() == want_ba
    assert 0 < sum(want_ab) + sum(want_ba) < 24  # neither all right nor all wrong: the count means something
    assert retrieval(a, b) == pytest.approx((sum(want_ab) + sum(want_ba)) / 24)


# -- evaluate on the tiny checkpoints --------------------------------------------------------------------------

PARAGRAPHS = {
    "en": [
        "The river runs through the old town before it reaches the sea.",
        "Maria bought three apples and a loaf of bread at the market.",
        "In 1999 the company opened its first office in Berlin.",
        "The weather was cold, but the children played outside all day.",
        "Scientists measured the temperature of the lake every morning.",
    ],
    "de": [
        "Der Fluss fließt durch die Altstadt, bevor er das Meer erreicht.",
        "Maria kaufte auf dem Markt drei Äpfel und ein Brot.",
        "Im Jahr 1999 eröffnete die Firma ihr erstes Büro in Berlin.",
        "Das Wetter war kalt, aber die Kinder spielten den ganzen Tag draußen.",
        "Wissenschaftler maßen jeden Morgen die Temperatur des Sees.",
    ],
}
# translation pairs that share names and numbers, so that even a random tiny model finds some of them
PARALLEL = {
    "en": {
        "s1": "Anna Schmidt was born in Hamburg in 1985.",
        "s2": "Tokyo has 14 million inhabitants.",
        "s3": "Pablo Picasso painted Guernica in 1937.",
        "s4": "The Amazon is 6400 kilometres long.",
    },
    "de": {
        "s1": "Anna Schmidt wurde 1985 in Hamburg geboren.",
        "s2": "Tokyo hat 14 Millionen Einwohner.",
        "s3": "Pablo Picasso malte Guernica im Jahr 1937.",
        "s4": "Der Amazonas ist 6400 Kilometer lang.",
    },
}


def _rounded(x: float) -> Any:
    """``x`` as the report holds it: rounded to 5 decimals."""
    return pytest.approx(x, abs=5e-6)


def _candidate(name: str, checkpoint: Path) -> Candidate:
    """The checkpoint loaded as ``distill`` loads a teacher, reading text with its own tokenizer."""
    from mbert_edge_export.sources import load_source

    loaded = load_source(str(checkpoint))
    return Candidate(name, loaded.model.eval(), TextEncoder(loaded.tokenizer, 128))


def test_teacher_against_itself_retains_everything(checkpoints):
    """The teacher as its own candidate: cosine mean and 5th percentile 1, neighbours 1, retrieval ratio 1,
    retention 1 in both languages, and a gate at 1.0 passes."""
    teacher = _candidate("teacher", checkpoints[FEATURE_EXTRACTION])
    itself = Candidate("itself", teacher.model, teacher.encoder)
    report = evaluate(
        FEATURE_EXTRACTION,
        teacher,
        [itself],
        EvalTexts(PARAGRAPHS, PARALLEL, []),
        ["en", "de"],
        min_retention=1.0,
    )
    assert report["candidates"] == ["itself"] and report["kept_languages"] == ["de", "en"]
    rows = report["languages"]
    assert sorted(rows) == ["de", "en"]
    for lang, row in rows.items():
        assert row["kept"] is True and row["texts"] == 5, lang
        mine = row["itself"]
        assert mine["cosine_mean"] == pytest.approx(1.0, abs=1e-6), lang
        assert mine["cosine_p5"] == pytest.approx(1.0, abs=1e-6), lang
        lo, hi = mine["cosine_mean_interval"]
        assert lo <= 1.0 and hi == 1.0, lang  # a cosine interval never passes 1
        assert mine["neighbours@10"] == 1.0, lang
        assert mine["retention"] == pytest.approx(1.0, abs=1e-6), lang
    # English is the pivot: German carries the retrieval figures, both directions over the 4 pairs
    de = rows["de"]
    assert de["parallel_sentences"] == 4 and "parallel_sentences" not in rows["en"]
    assert de["teacher"]["retrieval"] > 0  # else the ratio is undefined and the check below means nothing
    assert de["itself"]["retrieval"] == de["teacher"]["retrieval"]
    assert de["itself"]["retrieval_ratio"] == 1.0
    counts = de["itself"]["retrieval_counts"]
    assert counts["candidate_only"] == 0 and counts["reference_only"] == 0
    assert counts["both"] + counts["neither"] == 8  # 4 pairs, looked up both ways
    assert report["mean"]["itself"]["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert report["gate"]["passed"] is True and report["gate"]["value"] == pytest.approx(1.0, abs=1e-6)


class _PermutedLabels(torch.nn.Module):
    """A classifier whose logit columns are reordered: column ``j`` of its output is column ``perm[j]`` of the
    wrapped model's, so its argmax is ``perm^-1`` of the wrapped model's argmax."""

    def __init__(self, inner: torch.nn.Module, perm: list[int]) -> None:
        super().__init__()
        self.inner = inner
        self.perm = perm

    def forward(self, **batch: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.inner(**batch).logits[..., self.perm])


def _argmax_one_by_one(c: Candidate, texts: list[str]) -> list[int]:
    """The classifier's label for each text run alone (no padding, no batching), with plain ``torch``."""
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([c.encoder.tokenizer.encode(text).ids])
            out.append(int(c.model(input_ids=ids).logits[0].argmax()))
    return out


def test_classifier_agreement_and_accuracy_are_hand_counts(checkpoints):
    """Classifier metrics against counts made here: the model agrees with itself on every text; a copy with two
    labels swapped agrees exactly where the teacher picks the third label; accuracy on held-out user texts is
    the share of labelled texts whose argmax is the gold label (unlabelled texts are not counted)."""
    teacher = _candidate("teacher", checkpoints[TEXT_CLASSIFICATION])
    en, de = PARAGRAPHS["en"], PARAGRAPHS["de"]
    user = [*PARALLEL["en"].values(), *PARALLEL["de"].values()]
    pred = {"en": _argmax_one_by_one(teacher, en), "de": _argmax_one_by_one(teacher, de)}
    user_pred = _argmax_one_by_one(teacher, user)
    fixed = user_pred[0]  # the label the permutation keeps; the other two are swapped
    x, y = (j for j in range(3) if j != fixed)
    perm = [0, 1, 2]
    perm[x], perm[y] = y, x
    swapped_label = {fixed: fixed, x: y, y: x}
    swapped = Candidate("swapped", _PermutedLabels(teacher.model, perm), teacher.encoder)
    itself = Candidate("itself", teacher.model, teacher.encoder)
    # gold labels: right for texts 0, 2, 3, 5, 7; wrong for 1 and 4; none for 6
    gold: list[int | None] = [p if i in (0, 2, 3, 5, 7) else (p + 1) % 3 for i, p in enumerate(user_pred)]
    gold[6] = None
    user_langs = ["en"] * len(PARALLEL["en"]) + ["de"] * len(PARALLEL["de"])  # a 'lang' field in the user's file
    report = evaluate(
        TEXT_CLASSIFICATION,
        teacher,
        [swapped, itself],
        EvalTexts(
            PARAGRAPHS, {}, [TrainingText(t, lang, g) for t, g, lang in zip(user, gold, user_langs, strict=True)]
        ),
        ["en", "de"],
        min_retention=1.0,
    )
    for lang, labels in pred.items():
        row = report["languages"][lang]
        same = sum(p == fixed for p in labels)
        assert row["itself"]["agreement"] == 1.0 and row["itself"]["agreement_counts"] == [5, 5], lang
        assert row["swapped"]["agreement_counts"] == [same, 5], lang
        assert row["swapped"]["agreement"] == _rounded(same / 5), lang
        assert row["swapped"]["retention"] == _rounded(same / 5), lang  # a head's retention is its agreement
        assert row["itself"]["retention"] == 1.0, lang
    u = report["user"]
    assert u["texts"] == 8
    assert u["itself"]["agreement"] == 1.0
    assert u["swapped"]["agreement"] == _rounded(sum(p == fixed for p in user_pred) / 8)
    labelled = [(p, g) for p, g in zip(user_pred, gold, strict=True) if g is not None]
    assert len(labelled) == 7
    assert u["teacher"]["accuracy"] == _rounded(5 / 7) and u["itself"]["accuracy"] == _rounded(5 / 7)
    swapped_acc = sum(swapped_label[p] == g for p, g in labelled) / 7
    assert u["swapped"]["accuracy"] == _rounded(swapped_acc)
    for lang in ("en", "de"):  # the same, per language of the labelled texts
        mine = [(p, g) for p, g, c in zip(user_pred, gold, user_langs, strict=True) if c == lang and g is not None]
        per = u["languages"][lang]
        assert per["texts"] == len(mine)
        right = sum(p == g for p, g in mine)
        assert per["teacher"]["accuracy_counts"] == [right, len(mine)] == per["itself"]["accuracy_counts"], lang
        assert per["swapped"]["accuracy_counts"] == [sum(swapped_label[p] == g for p, g in mine), len(mine)], lang
        assert f"  {lang} ({len(mine)} labelled): accuracy teacher" in format_report(report)
    # the gate judges the last candidate (the model itself): every kept language at 1
    assert report["gate"]["passed"] is True and report["gate"]["value"] == 1.0
    assert report["gate"]["metric"] == "agreement"


# -- the gate on hand-written reports --------------------------------------------------------------------------


def _report(task: str, kept: list[str], retention: dict[str, float | None]) -> dict[str, Any]:
    """A report shaped as ``evaluate`` writes it, with only the figures the gate reads."""
    return {
        "task": task,
        "reference": "teacher",
        "candidates": ["student"],
        "kept_languages": sorted(kept),
        "languages": {
            lang: {"kept": lang in kept, "texts": 30, "teacher": {}, "student": {"retention": value}}
            for lang, value in retention.items()
        },
    }


def test_gate_fails_on_the_worst_kept_language_even_when_the_mean_passes():
    """Mean kept retention 0.96 clears 0.95, but Hindi at 0.90 does not: the gate fails and names Hindi."""
    retention = {"de": 0.99, "fr": 0.98, "hi": 0.90, "ru": 0.97}
    kept = list(retention)
    assert sum(retention.values()) / len(retention) >= 0.95
    g = gate(_report(FEATURE_EXTRACTION, kept, retention), "student", 0.95)
    assert g["passed"] is False
    assert g["worst_language"] == "hi" and g["value"] == 0.90 and g["threshold"] == 0.95
    assert g["metric"] == "min(cosine_mean, retrieval_ratio)" and g["unmeasured_languages"] == []
    # without a threshold the gate reports the same worst language and passes no verdict
    g = gate(_report(FEATURE_EXTRACTION, kept, retention), "student", None)
    assert g["passed"] is None and g["worst_language"] == "hi"


def test_gate_ignores_languages_that_are_not_kept():
    """A probe language far under the threshold does not fail the gate when every kept language passes."""
    retention = {"de": 0.97, "en": 0.99, "zh": 0.40}
    g = gate(_report(FEATURE_EXTRACTION, ["de", "en"], retention), "student", 0.95)
    assert g["passed"] is True and g["worst_language"] == "de" and g["value"] == 0.97
    # a head's gate reads the same retention under the name agreement; at exactly the threshold it passes
    g = gate(_report(TEXT_CLASSIFICATION, ["de", "en"], retention), "student", 0.97)
    assert g["passed"] is True and g["metric"] == "agreement"


def test_gate_with_no_measured_kept_language_fails_when_set():
    """Kept languages without any retention figure: no worst language, listed as unmeasured, and a set
    threshold fails (the gate never passes on nothing)."""
    report = _report(FEATURE_EXTRACTION, ["de", "sw"], {"de": None, "sw": None, "en": 0.99})
    g = gate(report, "student", 0.9)
    assert g["passed"] is False and g["worst_language"] is None and g["value"] is None
    assert g["unmeasured_languages"] == ["de", "sw"]
    assert gate(report, "student", None)["passed"] is None


# -- the CLI when the gate fails -------------------------------------------------------------------------------


def test_cli_distill_gate_failure_prints_the_report_and_writes_nothing(checkpoints, tmp_path, capsys):
    """``--min-retention 1.0`` on a 1-layer smoke student: exit status 1, the per-language table and the FAILED
    verdict on stdout, the error on stderr; nothing at ``-o``, the report kept in the work directory."""
    from mbert_edge.cli import main

    out = tmp_path / "gated"
    rc = main([
        "distill", str(checkpoints[FEATURE_EXTRACTION]), "-o", str(out), "--layers", "1", "--preset", "smoke",
        "--min-retention", "1.0", "--threads", "1",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out.splitlines()[0].split()[:3] == ["lang", "kept", "texts"]  # the per-language table
    assert "retention gate (min(cosine_mean, retrieval_ratio), worst kept language)" in captured.out
    assert "(needs >= 1.0): FAILED" in captured.out
    assert "error: retention gate failed: worst kept language" in captured.err
    assert "Nothing was written to" in captured.err
    # the checkpoint is not written; the report waits in the work directory beside it for a rerun
    assert not out.exists()
    saved = json.loads((work_dir(out) / REPORT_FILE).read_text(encoding="utf-8"))
    ev = saved["evaluation"]
    assert sorted(ev["kept_languages"]) == ["de", "en", "ru", "zh"]  # the smoke preset's languages, all kept
    # the worst kept language by hand: each language's retention is min(cosine_mean, retrieval ratio capped at 1)
    by_hand = {}
    for lang in ev["kept_languages"]:
        s = ev["languages"][lang]["student"]
        figures = [v for v in (s.get("cosine_mean"), s.get("retrieval_ratio")) if v is not None]
        by_hand[lang] = min(min(1.0, v) for v in figures)
        assert s["retention"] == pytest.approx(by_hand[lang], abs=1e-5), lang
    worst = min(by_hand, key=lambda lang: (by_hand[lang], lang))
    assert ev["gate"]["worst_language"] == worst and ev["gate"]["passed"] is False
    assert f"worst kept language {worst} " in captured.err
    assert f"retention gate (min(cosine_mean, retrieval_ratio), worst kept language): {worst} " in captured.out
    for lang in ev["kept_languages"]:  # one table row per language, marked kept
        assert any(line.split()[:2] == [lang, "yes"] for line in captured.out.splitlines()), lang
