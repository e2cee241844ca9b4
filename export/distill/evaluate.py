"""How close the student is to its teacher, per language, on text it never trained on.

The reference is the teacher as loaded, before any vocabulary trim; each model reads text with its own
tokenizer, so the numbers include what trimming costs. Candidates are the student, the untrained student
(the teacher's layers copied, no training: the baseline training must beat) and, when languages were named,
the trimmed 12-layer teacher (trimming alone).

Embedding models, per language:

* ``cosine_mean`` / ``cosine_p5``: cosine of each held-out paragraph's embedding to the teacher's (mean and
  5th percentile), half with each prefix the model has ("query: " / "passage: " for e5);
* ``neighbours@10``: share of the teacher's 10 nearest neighbours (in a pool of every evaluated
  language's paragraphs) that the candidate also ranks in its top 10;
* ``retrieval``: cross-lingual retrieval accuracy@1 on the parallel set (``export/data/parallel_eval.tsv``):
  English sentence -> its translation among all sentences of the language, and back, averaged; for the
  teacher and the candidate, and their ratio.

Classifiers and taggers: argmax agreement with the teacher on held-out paragraphs (taggers: per word, on its
first sub-token), and accuracy on held-out user texts with gold labels (overall, and per language for texts
whose line in the user's file has a ``lang`` field).

Retention of a language is ``min(cosine_mean, retrieval ratio)`` for embeddings and the agreement for heads;
the gate (``min_retention``) is judged on the worst kept language, not the mean.

Each retrieval ratio, agreement and mean cosine also gets its 95% interval from the counts behind it
(``uncertainty.py``: 700 sentences and ~30 paragraphs per language leave one to a few points of sampling
error), and the gate each kept language's retention interval and which kept languages are under the threshold
beyond sampling error or too close to call. The verdict itself stays on the measured figure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION
from mbert_edge_export.distill.data import USER, evaluation_parallel, held_out_texts
from mbert_edge_export.distill.modeling import TextEncoder, collate, length_batches, normalize, run
from mbert_edge_export.distill.uncertainty import (
    LEVEL,
    PairedCounts,
    against,
    against_text,
    format_interval,
    mean_interval,
    proportion_interval,
    ratio_interval,
    rounded,
)

if TYPE_CHECKING:
    import torch

    from mbert_edge_export.distill.data import TrainingText

log = logging.getLogger(__name__)

NEIGHBOURS = 10
PIVOT = "en"


@dataclass
class Candidate:
    """A model to evaluate, with the tokenizer it reads text with."""

    name: str
    model: torch.nn.Module
    encoder: TextEncoder


@dataclass
class EvalTexts:
    """Held-out paragraphs per language, parallel sentences per language, held-out user texts."""

    paragraphs: dict[str, list[str]]
    parallel: dict[str, dict[str, str]]
    user: list[TrainingText]


def _outputs(c: Candidate, task: str, texts: Sequence[str], pooling: str, device: str) -> list[np.ndarray]:
    """Per text: the L2-normed embedding, the logits, or the per-word (first sub-token) label ids."""
    import torch

    c.model.eval()
    encoded = c.encoder.ids_and_words(texts)
    ids = [e[0] for e in encoded]
    out: list[np.ndarray] = [np.empty(0)] * len(texts)
    with torch.inference_mode():
        for b in length_batches([len(x) for x in ids]):
            res = run(c.model, task, collate([ids[i] for i in b], c.encoder.pad_id, device), pooling)
            if task == FEATURE_EXTRACTION:
                assert res.pooled is not None
                vals = normalize(res.pooled.float().cpu().numpy())
                for row, i in enumerate(b):
                    out[i] = vals[row]
            elif task == TEXT_CLASSIFICATION:
                assert res.logits is not None
                vals = res.logits.float().cpu().numpy()
                for row, i in enumerate(b):
                    out[i] = vals[row]
            else:
                assert res.logits is not None
                pred = res.logits.argmax(-1).cpu().numpy()
                for row, i in enumerate(b):
                    words = encoded[i][1]
                    first: dict[int, int] = {}
                    for pos, w in enumerate(words):
                        if w is not None and w not in first:
                            first[w] = int(pred[row, pos])
                    out[i] = np.array([first.get(w, -1) for w in range(max(first, default=-1) + 1)])
    return out


def evaluation_set(
    languages: Sequence[str],
    eval_languages: Sequence[str],
    per_language: int,
    parallel_sentences: int | None,
    user: Sequence[TrainingText] = (),
) -> tuple[list[str], EvalTexts]:
    """The kept languages (``languages``, or ``eval_languages`` when none were named) and the held-out text a
    run's recipe is judged on: ``distill``'s own evaluation and export's ``teacher_fidelity`` stage read the same."""
    kept = list(languages) if languages else list(eval_languages)
    langs = sorted(set(kept) | set(eval_languages))
    paragraphs = held_out_texts(langs, per_language)
    return kept, EvalTexts(paragraphs, evaluation_parallel(langs, kept, parallel_sentences), list(user))


def _prefixed(texts: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    return [prefixes[i % len(prefixes)] + t for i, t in enumerate(texts)] if prefixes else list(texts)


def retrieval_hits(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per lookup of row-aligned embeddings, whether it finds its row: each row of ``a`` among ``b``, and each
    row of ``b`` among ``a``."""
    sim = a @ b.T
    target = np.arange(len(a))
    return sim.argmax(1) == target, sim.argmax(0) == target


def retrieval(a: np.ndarray, b: np.ndarray) -> float:
    """Accuracy@1 both ways between row-aligned embeddings ``a`` and ``b``, averaged."""
    return float(np.concatenate(retrieval_hits(a, b)).mean())


def _interval(bounds: tuple[float, float]) -> list[float]:
    return rounded(bounds)


def _cosine_interval(bounds: tuple[float, float] | None) -> list[float] | None:
    """A mean cosine's interval, clipped to what a cosine can be (the normal interval can pass 1 by rounding)."""
    if bounds is None:
        return None
    lo, hi = _interval(bounds)
    return [max(-1.0, lo), min(1.0, hi)]


def _topk(emb: np.ndarray, k: int) -> np.ndarray:
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 5)


def evaluate(
    task: str,
    reference: Candidate,
    candidates: Sequence[Candidate],
    texts: EvalTexts,
    kept: Sequence[str],
    *,
    prefixes: Sequence[str] = (),
    query_prefix: str = "",
    pooling: str = "mean",
    min_retention: float | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Compare each candidate with the reference per language; returns the report (see module docstring)."""
    langs = sorted(set(texts.paragraphs) | {lang for lang in texts.parallel if lang != PIVOT})
    report: dict[str, Any] = {
        "task": task,
        "reference": reference.name,
        "candidates": [c.name for c in candidates],
        "kept_languages": sorted(kept),
        "languages": {},
    }
    rows: dict[str, dict[str, Any]] = {
        lang: {
            "kept": lang in kept,
            "texts": len(texts.paragraphs.get(lang, [])),
            reference.name: {},
            **{c.name: {} for c in candidates},
        }
        for lang in langs
    }
    # held-out paragraphs (and the mixed-language neighbour pool)
    pool_langs = [lang for lang in langs if lang in texts.paragraphs]
    pool = [t for lang in pool_langs for t in _prefixed(texts.paragraphs[lang], prefixes)]
    owner = np.array([lang for lang in pool_langs for _ in texts.paragraphs[lang]])
    if pool:
        ref_out = _outputs(reference, task, pool, pooling, device)
        ref_emb = np.stack(ref_out) if task == FEATURE_EXTRACTION else None
        k = min(NEIGHBOURS, len(pool) - 1)
        ref_nn = _topk(ref_emb, k) if ref_emb is not None and k > 0 else None
        for c in candidates:
            out = _outputs(c, task, pool, pooling, device)
            if ref_emb is not None:
                emb = np.stack(out)
                cos = (emb * ref_emb).sum(1)
                recall = None
                if ref_nn is not None:
                    nn = _topk(emb, k)
                    recall = np.array([len(set(a) & set(b)) / k for a, b in zip(ref_nn, nn, strict=True)])
                for lang in pool_langs:
                    sel = owner == lang
                    rows[lang][c.name].update(
                        {
                            "cosine_mean": _round(cos[sel].mean()),
                            "cosine_mean_interval": _cosine_interval(mean_interval(cos[sel])),
                            "cosine_p5": _round(np.percentile(cos[sel], 5)),
                            "neighbours@10": _round(recall[sel].mean()) if recall is not None else None,
                        }
                    )
            else:
                agree = [_agreement(a, b) for a, b in zip(ref_out, out, strict=True)]
                for lang in pool_langs:
                    mine = [agree[i] for i in np.flatnonzero(owner == lang)]
                    total = sum(x[1] for x in mine)
                    matches = sum(x[0] for x in mine)
                    rows[lang][c.name]["agreement"] = _round(matches / total) if total else None
                    if total:
                        rows[lang][c.name]["agreement_counts"] = [matches, total]
                        rows[lang][c.name]["agreement_interval"] = _interval(proportion_interval(matches, total))
    # cross-lingual retrieval on translation pairs
    if task == FEATURE_EXTRACTION and PIVOT in texts.parallel:
        prefix = [query_prefix] if query_prefix else []
        models = [reference, *candidates]
        cache: dict[str, dict[str, dict[str, np.ndarray]]] = {m.name: {} for m in models}
        for m in models:
            for lang, sents in texts.parallel.items():
                keys = sorted(sents)
                emb = np.stack(_outputs(m, task, _prefixed([sents[s] for s in keys], prefix), pooling, device))
                cache[m.name][lang] = dict(zip(keys, emb, strict=True))
        for lang in texts.parallel:
            if lang == PIVOT:
                continue
            ids = sorted(set(texts.parallel[lang]) & set(texts.parallel[PIVOT]))
            if len(ids) < 2:
                continue
            rows[lang]["parallel_sentences"] = len(ids)
            hits = {}
            for m in models:
                a = np.stack([cache[m.name][PIVOT][s] for s in ids])
                b = np.stack([cache[m.name][lang][s] for s in ids])
                hits[m.name] = np.concatenate(retrieval_hits(a, b))
                rows[lang][m.name]["retrieval"] = _round(hits[m.name].mean())
            for c in candidates:
                counts = PairedCounts.from_hits(hits[c.name], hits[reference.name])
                rows[lang][c.name]["retrieval_ratio"] = _round(counts.ratio) if counts.ratio is not None else None
                rows[lang][c.name]["retrieval_counts"] = counts.to_dict()
                if counts.ratio is not None:
                    rows[lang][c.name]["retrieval_ratio_interval"] = _interval(ratio_interval(counts))
    # held-out user texts: agreement, accuracy with gold labels
    if texts.user and task in (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION):
        user_texts = [t.text for t in texts.user]
        ref_out = _outputs(reference, task, user_texts, pooling, device)
        user_row: dict[str, Any] = {"texts": len(user_texts), reference.name: {}, **{c.name: {} for c in candidates}}
        gold = [t.label for t in texts.user]
        tagged = sorted({t.lang for t in texts.user if t.lang != USER and t.label is not None})
        if task == TEXT_CLASSIFICATION and tagged:
            user_row["languages"] = {}
        outs = [(reference, ref_out)] + [(c, _outputs(c, task, user_texts, pooling, device)) for c in candidates]
        for m, out in outs:
            if m is not reference:
                agree = [_agreement(a, b) for a, b in zip(ref_out, out, strict=True)]
                total = sum(x[1] for x in agree)
                user_row[m.name]["agreement"] = _round(sum(x[0] for x in agree) / total) if total else None
            if task == TEXT_CLASSIFICATION and any(g is not None for g in gold):
                right = [
                    (int(np.argmax(o)) == g, t.lang)
                    for o, g, t in zip(out, gold, texts.user, strict=True)
                    if g is not None
                ]
                user_row[m.name]["accuracy"] = _round(sum(r for r, _ in right) / len(right))
                for lang in tagged:  # labelled texts whose line had a 'lang' field
                    mine = [r for r, code in right if code == lang]
                    user_row["languages"].setdefault(lang, {"texts": len(mine)})[m.name] = {
                        "accuracy": _round(sum(mine) / len(mine)),
                        "accuracy_counts": [int(sum(mine)), len(mine)],
                    }
        report["user"] = user_row
    for lang in langs:
        for c in candidates:
            rows[lang][c.name]["retention"] = _retention(task, rows[lang][c.name])
    report["languages"] = rows
    report["mean"] = {
        c.name: {
            metric: _round(np.mean(vals))
            for metric in ("cosine_mean", "cosine_p5", "neighbours@10", "retrieval", "retrieval_ratio", "agreement")
            if (vals := [rows[lang][c.name][metric] for lang in langs if rows[lang][c.name].get(metric) is not None])
        }
        for c in candidates
    }
    report["gate"] = gate(report, candidates[-1].name if candidates else "", min_retention)
    return report


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(matches, compared) of argmax labels: one per text for classifiers, per word for taggers."""
    if a.ndim == 1 and a.dtype.kind == "f":  # classifier logits
        return int(np.argmax(a) == np.argmax(b)), 1
    n = min(len(a), len(b))
    both = (a[:n] >= 0) & (b[:n] >= 0)
    return int(((a[:n] == b[:n]) & both).sum()), int(both.sum())


def _retention(task: str, metrics: dict[str, Any]) -> float | None:
    if task == FEATURE_EXTRACTION:
        vals = [metrics.get("cosine_mean"), metrics.get("retrieval_ratio")]
        vals = [min(1.0, v) for v in vals if v is not None]
    else:
        vals = [metrics["agreement"]] if metrics.get("agreement") is not None else []
    return _round(min(vals)) if vals else None


def gate(report: dict[str, Any], candidate: str, min_retention: float | None) -> dict[str, Any]:
    """The retention gate: the worst kept language's retention against ``min_retention`` (None: report only)."""
    metric = "min(cosine_mean, retrieval_ratio)" if report["task"] == FEATURE_EXTRACTION else "agreement"
    kept = set(report["kept_languages"])
    values = {
        lang: row[candidate]["retention"]
        for lang, row in report["languages"].items()
        if lang in kept and row.get(candidate, {}).get("retention") is not None
    }
    unmeasured = sorted(kept - set(values))
    if not values:
        return {
            "metric": metric,
            "threshold": min_retention,
            "worst_language": None,
            "value": None,
            "passed": None if min_retention is None else False,
            "unmeasured_languages": unmeasured,
        }
    worst = min(values, key=lambda lang: (values[lang], lang))
    value = values[worst]
    return {
        "metric": metric,
        "threshold": min_retention,
        "worst_language": worst,
        "value": value,
        "passed": None if min_retention is None else bool(value >= min_retention),
        "unmeasured_languages": unmeasured,
        **_worst_uncertainty(report, candidate, sorted(values), worst, min_retention),
    }


def _worst_uncertainty(
    report: dict[str, Any], candidate: str, langs: Sequence[str], worst: str, threshold: float | None
) -> dict[str, Any]:
    """Each kept language's retention interval (from the intervals of the figures it is the smaller of; none
    when one of those figures has none), the worst language's, and which kept languages are above, under or too
    close to ``threshold`` to call."""
    figures = ("cosine_mean", "retrieval_ratio") if report["task"] == FEATURE_EXTRACTION else ("agreement",)
    intervals: dict[str, list[float]] = {}
    for lang in langs:
        m = report["languages"][lang][candidate]
        present = [f for f in figures if m.get(f) is not None]
        parts = [m.get(f"{f}_interval") for f in present]
        if parts and all(parts):  # the retention is the smaller figure: the smaller bounds (covers >= 92.5%)
            intervals[lang] = [min(1.0, *(p[0] for p in parts)), min(1.0, *(p[1] for p in parts))]
    if not intervals:
        return {}
    out: dict[str, Any] = {"level": LEVEL, "intervals": intervals, "worst_interval": intervals.get(worst)}
    if threshold is not None:
        out["against_threshold"] = against(intervals, threshold)
    return out


def format_report(report: dict[str, Any]) -> str:
    """The evaluation as a per-language table and the gate verdict."""
    ev = report.get("evaluation", report)
    names = ev["candidates"]
    student = names[-1]
    ref = ev["reference"]
    lines = []
    if ev["task"] == FEATURE_EXTRACTION:
        head = (
            f"{'lang':<5}{'kept':<5}{'texts':>6}{'cos':>8}{'cos p5':>8}{'nn@10':>7}"
            f"{'retr T':>8}{'retr S':>8}{'ratio':>7}{'ratio 95%':>12}"
        )
        extra = [n for n in names if n != student]
        head += "".join(f"{('cos ' + n)[:14]:>15}" for n in extra) + f"{'retention':>11}"
        lines.append(head)
        for lang, row in ev["languages"].items():
            s, t = row[student], row[ref]
            line = (
                f"{lang:<5}{'yes' if row['kept'] else '':<5}{row['texts']:>6}{_f(s.get('cosine_mean')):>8}"
                f"{_f(s.get('cosine_p5')):>8}{_f(s.get('neighbours@10'), 2):>7}{_f(t.get('retrieval'), 3):>8}"
                f"{_f(s.get('retrieval'), 3):>8}{_f(s.get('retrieval_ratio'), 3):>7}"
                f"{_span(s.get('retrieval_ratio_interval')):>12}"
            )
            line += "".join(f"{_f(row[n].get('cosine_mean')):>15}" for n in extra)
            lines.append(line + f"{_f(s.get('retention')):>11}")
    else:
        extra = [n for n in names if n != student]
        lines.append(
            f"{'lang':<5}{'kept':<5}{'texts':>6}{'agreement':>11}{'95%':>12}"
            + "".join(f"{('agr ' + n)[:14]:>15}" for n in extra)
        )
        for lang, row in ev["languages"].items():
            s = row[student]
            line = (
                f"{lang:<5}{'yes' if row['kept'] else '':<5}{row['texts']:>6}{_f(s.get('agreement')):>11}"
                f"{_span(s.get('agreement_interval')):>12}"
            )
            lines.append(line + "".join(f"{_f(row[n].get('agreement')):>15}" for n in extra))
        if "user" in ev:
            u = ev["user"]
            acc = ", ".join(f"{n} {_f(u[n].get('accuracy'))}" for n in [ref, *names] if "accuracy" in u[n])
            lines.append(
                f"your held-out texts ({u['texts']}): agreement {_f(u[student].get('agreement'))}"
                + (f"; accuracy: {acc}" if acc else "")
            )
            for lang, per in (u.get("languages") or {}).items():
                accs = ", ".join(f"{n} {_f(per[n]['accuracy'])}" for n in [ref, *names] if n in per)
                lines.append(f"  {lang} ({per['texts']} labelled): accuracy {accs}")
    mean = ev["mean"].get(student, {})
    lines.append("mean: " + ", ".join(f"{k} {_f(v)}" for k, v in mean.items()))
    g = ev["gate"]
    verdict = {None: "report only (set --min-retention to gate)", True: "passed", False: "FAILED"}[g["passed"]]
    if g["worst_language"] is None:
        lines.append(f"retention gate: no kept language could be measured; {verdict}")
    else:
        need = f" (needs >= {g['threshold']})" if g["threshold"] is not None else ""
        lines.append(
            f"retention gate ({g['metric']}, worst kept language): {g['worst_language']} {g['value']:.4f}{need}: "
            f"{verdict}"
        )
        if g.get("worst_interval"):
            line = (
                f"  sampling error: {g['worst_language']}'s retention lies in {_span(g['worst_interval'])} "
                f"({g['level']:.0%})"
            )
            if a := g.get("against_threshold"):
                line += f"; kept languages {against_text(a, g['threshold'])}"
            lines.append(line)
    if g.get("unmeasured_languages"):
        lines.append(f"kept languages without held-out text or translations: {', '.join(g['unmeasured_languages'])}")
    return "\n".join(lines)


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _span(x: Sequence[float] | None) -> str:
    return "-" if not x else format_interval(x)
