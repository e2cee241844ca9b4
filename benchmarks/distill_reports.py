"""Distilled students side by side, from their own ``distill_report.json`` (the distill command's evaluation).

Each student's report holds its evaluation on held-out text against the teacher in PyTorch fp32, per language
(see ``export/distill/evaluate.py``): cosine to the teacher, whether it finds the teacher's 10 nearest
neighbours (``nn@10``), and cross-lingual retrieval on the parallel sentences as a ratio of the teacher's.
This script lays those reports out side by side, per language and summed up over the kept and the other
languages, with the recipe settings in which the students differ. It trains nothing and times nothing; use it
for students trained with the same data and step count (same seed), so that the setting is what differs.

    .venv/bin/python benchmarks/distill_reports.py --student plain=build/exp/s2-A \\
        --student relation-1.0=build/exp/s2-B --out benchmarks/results/NAME

Writes ``NAME.md`` and ``NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # machine and version facts, shared with the main benchmark

from mbert_edge.manifest import FEATURE_EXTRACTION
from mbert_edge_export.distill.uncertainty import format_interval

REPORT = "distill_report.json"
#: the report sections copied into the results (the trim's fidelity tables stay in the checkpoint)
KEPT_SECTIONS = ("teacher", "student", "recipe", "training", "evaluation", "environment", "wall_seconds")
#: recipe fields that may differ between runs without changing what was trained or how it was judged (unlike
#: ``DistillSettings._NOT_IN_FINGERPRINT``, evaluation settings are listed when they differ: they change the report)
_NOT_RECIPE = {"threads", "device", "time_budget", "min_retention", "checkpoint_every"}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """One student's figures over its kept languages and over the others (``None`` where a figure is missing)."""
    langs = report["evaluation"]["languages"]
    kept = set(report["evaluation"]["kept_languages"])
    out: dict[str, Any] = {}
    for group, members in (("kept", sorted(k for k in langs if k in kept)), ("other", sorted(set(langs) - kept))):
        rows = {lang: langs[lang]["student"] for lang in members}
        cos = {lang: r["cosine_mean"] for lang, r in rows.items() if r.get("cosine_mean") is not None}
        ratio = {lang: r["retrieval_ratio"] for lang, r in rows.items() if r.get("retrieval_ratio") is not None}
        nn = [r["neighbours@10"] for r in rows.values() if r.get("neighbours@10") is not None]
        agree = {lang: r["agreement"] for lang, r in rows.items() if r.get("agreement") is not None}
        worst_cos = min(cos, key=lambda k: (cos[k], k)) if cos else None
        worst_ratio = min(ratio, key=lambda k: (ratio[k], k)) if ratio else None
        worst_agree = min(agree, key=lambda k: (agree[k], k)) if agree else None
        out[group] = {
            "languages": members,
            "cosine_mean": _mean(list(cos.values())),
            "cosine_worst": None if worst_cos is None else [worst_cos, cos[worst_cos]],
            "neighbours@10": _mean(nn),
            "retrieval_ratio_mean": _mean(list(ratio.values())),
            "retrieval_ratio_worst": None if worst_ratio is None else [worst_ratio, ratio[worst_ratio]],
            # its 95% interval (reports written since 2026-12-02; export/distill/uncertainty.py)
            "retrieval_ratio_worst_interval": None
            if worst_ratio is None
            else rows[worst_ratio].get("retrieval_ratio_interval"),
            "retrieval_mean": _mean([r["retrieval"] for r in rows.values() if r.get("retrieval") is not None]),
            "agreement_mean": _mean(list(agree.values())),  # heads: share of the teacher's labels the student gives
            "agreement_worst": None if worst_agree is None else [worst_agree, agree[worst_agree]],
        }
    return out


def differing_settings(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The recipe settings whose values are not the same in every report: setting -> student -> value."""
    recipes = {name: r.get("recipe", {}) for name, r in reports.items()}
    keys = sorted(set().union(*recipes.values()) - _NOT_RECIPE)
    out = {}
    for key in keys:
        values = {name: rec.get(key) for name, rec in recipes.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            out[key] = values
    return out


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _worst(pair: list | None, digits: int = 3, interval: list | None = None) -> str:
    if pair is None:
        return "-"
    return f"{pair[1]:.{digits}f} ({pair[0]}{_span(interval, '; ')})"


def _span(interval: list | None, sep: str = " ") -> str:
    """`` lo-hi`` of a 95% interval where the report has one (rounded outward)."""
    return "" if not interval else sep + format_interval(interval)


def _is_heads(result: dict[str, Any]) -> bool:
    """Whether the students are classifiers or taggers (judged by agreement), not sentence encoders."""
    first = next(iter(result["students"].values()))["report"]["evaluation"]
    return first.get("task") not in (None, FEATURE_EXTRACTION)


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown page: the summary, the per-language table and the settings that differ."""
    names = list(result["students"])
    m = result["machine"]
    heads = _is_heads(result)
    lines = [
        "# Distilled students side by side (their own distill reports)",
        "",
        f"Reports read on {m.get('cpu', '?')} (started {result['started']}). A report records the torch threads and "
        "platform of its training, not the CPU: "
        + "; ".join(
            f"{n} {s['report']['environment'].get('threads')} thread(s)"
            for n, s in result["students"].items()
            if s["report"].get("environment")
        )
        + ".",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    if heads:
        lines += _heads_tables(result)
        return _settings(lines, result)
    lines += [
        "Each report's evaluation: held-out corpus paragraphs per language (cosine to the teacher, nn@10: share of "
        "the teacher's 10 nearest neighbours the student finds), and the parallel sentences (retrieval looked up "
        "both ways, as a ratio of the teacher's, with its 95% interval where the report has one), all against the "
        "teacher in PyTorch fp32.",
        "",
        "| student | steps | training s | kept: cosine mean / worst | kept: nn@10 | kept: retrieval ratio worst "
        "/ mean | other: nn@10 | other: retrieval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        s = result["students"][n]
        k, o = s["summary"]["kept"], s["summary"]["other"]
        lines.append(
            f"| {n} | {s['steps']} | {_f(s['train_seconds'], 0)} | {_f(k['cosine_mean'])} / "
            f"{_worst(k['cosine_worst'], 4)} | {_f(k['neighbours@10'], 3)} | "
            f"{_worst(k['retrieval_ratio_worst'], interval=k.get('retrieval_ratio_worst_interval'))} / "
            f"{_f(k['retrieval_ratio_mean'], 3)} | {_f(o['neighbours@10'], 3)} | {_f(o['retrieval_mean'], 3)} |"
        )
    lines += ["", "Per language (cosine / nn@10 / retrieval ratio):", ""]
    lines += _per_language(
        result,
        lambda row: (
            f"{_f(row.get('cosine_mean'))} / {_f(row.get('neighbours@10'), 2)} / {_f(row.get('retrieval_ratio'), 3)}"
            f"{_span(row.get('retrieval_ratio_interval'))}"
        ),
    )
    return _settings(lines, result)


def _per_language(result: dict[str, Any], cell: Callable[[dict[str, Any]], str], texts: bool = False) -> list[str]:
    """A table with a row per language of the first report and a column per student: ``cell`` of the student's
    figures there (``texts``: with a column of the first report's held-out text count)."""
    names = list(result["students"])
    first = result["students"][names[0]]
    langs = first["report"]["evaluation"]["languages"]
    lines = [
        "| language | kept | " + ("texts | " if texts else "") + " | ".join(names) + " |",
        "|---|---|" + ("---|" if texts else "") + "---|" * len(names),
    ]
    for lang in sorted(langs):
        cells = [
            cell(result["students"][n]["report"]["evaluation"]["languages"].get(lang, {}).get("student", {}))
            for n in names
        ]
        kept = "yes" if lang in first["summary"]["kept"]["languages"] else ""
        count = f"{langs[lang].get('texts', '-')} | " if texts else ""
        lines.append(f"| {lang} | {kept} | {count}" + " | ".join(cells) + " |")
    return lines


def _heads_tables(result: dict[str, Any]) -> list[str]:
    """The summary and per-language tables of classifier or tagger students: agreement with the teacher."""
    names = list(result["students"])
    lines = [
        "Each report's evaluation: held-out corpus paragraphs per language, the share on which the student gives "
        "the teacher's label (agreement; the teacher in PyTorch fp32).",
        "",
        "| student | steps | training s | training texts | kept: agreement worst / mean | other: agreement mean |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        s = result["students"][n]
        k, o = s["summary"]["kept"], s["summary"]["other"]
        lines.append(
            f"| {n} | {s['steps']} | {_f(s['train_seconds'], 0)} | {s.get('texts', '-')} | "
            f"{_worst(k['agreement_worst'])} / {_f(k['agreement_mean'], 3)} | {_f(o['agreement_mean'], 3)} |"
        )
    lines += ["", "Agreement per language:", ""]
    lines += _per_language(result, lambda row: _f(row.get("agreement"), 3), texts=True)
    return lines


def _settings(lines: list[str], result: dict[str, Any]) -> str:
    names = list(result["students"])
    lines += ["", "Settings that differ:", ""]
    if result["differing_settings"]:
        for key, values in result["differing_settings"].items():
            lines.append(f"- `{key}`: " + ", ".join(f"{n} {values[n]}" for n in names))
    else:
        lines.append("- none")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", action="append", required=True, metavar="NAME=CHECKPOINT")
    ap.add_argument("--out", type=Path, required=True, help="results prefix: writes PREFIX.md and PREFIX.json")
    args = ap.parse_args(argv)
    reports: dict[str, dict[str, Any]] = {}
    for spec in args.student:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            ap.error(f"--student {spec!r}: expected NAME=CHECKPOINT")
        file = Path(path) / REPORT
        if not file.is_file():
            ap.error(f"--student {spec!r}: {file} does not exist (not a distilled checkpoint?)")
        reports[name] = json.loads(file.read_text(encoding="utf-8"))
    result = {
        "machine": run.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "benchmarks/distill_reports.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "students": {
            n: {
                "checkpoint": spec.partition("=")[2],
                "steps": r.get("training", {}).get("steps"),
                "train_seconds": r.get("training", {}).get("train_seconds"),
                "texts": r.get("data", {}).get("texts"),
                "summary": summary(r),
                "report": {k: r.get(k) for k in KEPT_SECTIONS},
            }
            for (n, r), spec in zip(reports.items(), args.student, strict=True)
        },
        "differing_settings": differing_settings(reports),
    }
    run.write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
