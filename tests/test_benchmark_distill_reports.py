"""benchmarks/distill_reports.py: its summary of two hand-made reports checked by hand, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "distill_reports.py", "bench_reports")


def _report(cos: dict, nn: dict, ratio: dict, retrieval: dict, **recipe) -> dict:
    langs = {
        lang: {
            "student": {
                "cosine_mean": cos[lang],
                "neighbours@10": nn[lang],
                "retrieval": retrieval.get(lang),
                "retrieval_ratio": ratio.get(lang),
            }
        }
        for lang in cos
    }
    return {
        "recipe": {"seed": 0, "steps": 20, "threads": 1, **recipe},
        "training": {"steps": 20, "train_seconds": 12.5},
        "environment": {"threads": recipe.get("threads", 1), "device": "cpu"},
        "evaluation": {"kept_languages": ["de", "en"], "languages": langs},
    }


def _write(tmp_path: Path, name: str, report: dict) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "distill_report.json").write_text(json.dumps(report))
    return path


def test_summary_and_differing_settings(tmp_path, bench):
    # en is the pivot: no retrieval; ja is not kept
    a = _report(
        {"de": 0.96, "en": 0.95, "ja": 0.90},
        {"de": 0.5, "en": 0.3, "ja": 0.4},
        {"de": 0.98, "ja": 0.60},
        {"de": 0.97, "ja": 0.58},
        relation_weight=0.0,
        threads=2,
    )
    b = _report(
        {"de": 0.95, "en": 0.97, "ja": 0.89},
        {"de": 0.6, "en": 0.5, "ja": 0.5},
        {"de": 0.99, "ja": 0.70},
        {"de": 0.98, "ja": 0.68},
        relation_weight=0.3,
    )
    b["evaluation"]["languages"]["de"]["student"]["retrieval_ratio_interval"] = [0.962, 1.007]  # newer reports
    pa, pb = _write(tmp_path, "a", a), _write(tmp_path, "b", b)
    out = tmp_path / "res" / "cmp"
    result = bench.main(["--student", f"plain={pa}", "--student", f"rel={pb}", "--out", str(out)])
    ka = result["students"]["plain"]["summary"]["kept"]
    assert ka["languages"] == ["de", "en"]
    assert ka["cosine_mean"] == pytest.approx(0.955) and ka["cosine_worst"] == ["en", 0.95]
    assert ka["neighbours@10"] == pytest.approx(0.4)
    assert ka["retrieval_ratio_worst"] == ["de", 0.98] and ka["retrieval_ratio_mean"] == pytest.approx(0.98)
    ob = result["students"]["rel"]["summary"]["other"]
    assert ob["languages"] == ["ja"] and ob["retrieval_mean"] == pytest.approx(0.68)
    assert result["students"]["rel"]["summary"]["kept"]["cosine_worst"] == ["de", 0.95]
    # threads differ too, but do not change what was trained
    assert result["differing_settings"] == {"relation_weight": {"plain": 0.0, "rel": 0.3}}
    md = out.with_suffix(".md").read_text()
    assert "| plain | 20 | 12 | 0.9550 / 0.9500 (en) | 0.400 | 0.980 (de) / 0.980 | 0.400 | 0.580 |" in md
    assert "| 0.990 (de; 0.962-1.007) / 0.990 |" in md  # the worst ratio with its interval, where there is one
    assert "0.9500 / 0.60 / 0.990 0.962-1.007" in md  # and in the per-language table
    assert "`relation_weight`: plain 0.0, rel 0.3" in md
    assert "plain 2 thread(s); rel 1 thread(s)." in md
    assert json.loads(out.with_suffix(".json").read_text())["students"]["rel"]["steps"] == 20


def test_bad_student_arguments(tmp_path, bench):
    with pytest.raises(SystemExit):
        bench.main(["--student", "no-equals-sign", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        bench.main(["--student", f"a={tmp_path}", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x.md").exists()


def test_classifier_students_are_summed_up_by_agreement(tmp_path, bench):
    """Reports of text-classification students carry agreement, not cosine: the page shows it per language."""

    def heads(agreement: dict, texts: int, **recipe) -> dict:
        report = _report({}, {}, {}, {}, **recipe)
        report["evaluation"] = {
            "task": "text-classification",
            "kept_languages": ["de", "hi"],
            "languages": {lang: {"texts": 30, "student": {"agreement": a}} for lang, a in agreement.items()},
        }
        report["data"] = {"texts": texts}
        return report

    pa = _write(tmp_path, "a", heads({"de": 0.9, "hi": 0.8, "ko": 0.4}, 100))
    pb = _write(tmp_path, "b", heads({"de": 0.95, "hi": 0.9, "ko": 0.5}, 300, augment=2.0))
    out = tmp_path / "heads"
    result = bench.main(["--student", f"first={pa}", "--student", f"aug={pb}", "--out", str(out)])
    kept = result["students"]["aug"]["summary"]["kept"]
    assert kept["agreement_worst"] == ["hi", 0.9] and kept["agreement_mean"] == pytest.approx(0.925)
    assert result["students"]["first"]["summary"]["other"]["agreement_mean"] == pytest.approx(0.4)
    md = out.with_suffix(".md").read_text()
    assert "| first | 20 | 12 | 100 | 0.800 (hi) / 0.850 | 0.400 |" in md
    assert "| hi | yes | 30 | 0.800 | 0.900 |" in md and "| ko |  | 30 | 0.400 | 0.500 |" in md
    assert "cosine" not in md.split("Agreement per language")[0].split("Command:")[1]
    assert "`augment`: first None, aug 2.0" in md
