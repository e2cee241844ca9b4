"""Mine which pieces text of the kept languages needs: token counts from frequency sources.

Sources (each gives, per language, a mass per piece id):

* ``wordfreq``: the ``wordfreq`` package's word frequency lists ("large" where it has one, else "small";
  lower-cased), each word tokenized on its own and in its capitalized form, weighted by its frequency. With a
  Metaspace or BERT pre-tokenizer a text's pieces are the concatenation of its words' pieces, so word lists
  are a faithful proxy for running text (apart from attached punctuation, which is kept anyway).
* ``dataset-build``: the training split of the multilingual corpus (never its held-out paragraphs, which
  measure the trim).
* a user corpus (``--vocab-corpus FILE``): lines of text, counted for every kept language.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from mbert_edge_export import corpus
from mbert_edge_export.errors import ExportError

log = logging.getLogger(__name__)

SOURCES = ("wordfreq", "dataset-build")
#: codes wordfreq lists under another code (same language and script): Norwegian as Bokmål, Croatian and
#: Bosnian as Serbo-Croatian (Latin script; Serbian is written in Cyrillic, so it is not mapped)
WORDFREQ_CODES = {"no": "nb", "hr": "sh", "bs": "sh"}
WORDFREQ_MIN_FREQUENCY = 1e-7  # rarer words (1 in 10 million) are mostly names and typos
_BATCH = 4096


@dataclass
class Mined:
    """Piece masses per (language, source), and a description of each source for the manifest."""

    counts: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)
    sources: dict[str, dict[str, object]] = field(default_factory=dict)


def count_pieces(tok: Tokenizer, texts: Iterable[str], weights: Iterable[float] | None = None) -> Counter[int]:
    """Mass of every piece id in ``texts`` (special tokens excluded), each text weighted (default 1)."""
    out: Counter[int] = Counter()
    texts = list(texts)
    ws = list(weights) if weights is not None else [1.0] * len(texts)
    for start in range(0, len(texts), _BATCH):
        encs = tok.encode_batch(texts[start : start + _BATCH], add_special_tokens=False)
        for enc, w in zip(encs, ws[start : start + _BATCH], strict=True):
            for i in enc.ids:
                out[i] += w
    return out


def wordfreq_words(lang: str) -> tuple[list[str], list[float], str]:
    """(words, frequencies, list name) from ``wordfreq`` for ``lang``; capitalized forms added."""
    wordfreq = import_wordfreq()
    code = wordfreq_code(lang)
    if code is None:
        return [], [], "none"
    listname = "large" if code in wordfreq.available_languages(wordlist="large") else "small"
    freqs = wordfreq.get_frequency_dict(code, wordlist=listname)
    if code != lang:
        listname = f"{listname} ({code})"
    words: list[str] = []
    weights: list[float] = []
    for w, f in freqs.items():
        if f < WORDFREQ_MIN_FREQUENCY:
            continue
        words.append(w)
        weights.append(f)
        # The list is lower-cased: add sentence starts and nouns (German), and acronyms (PVC, NATO). A word
        # after an opening quote or bracket is segmented without the word-start marker ("(United" is "▁(" +
        # "United"), which needs other pieces: add that form too.
        cap = w[:1].upper() + w[1:]
        for form, share in ((cap, 0.25), (w.upper(), 0.05), ("(" + w, 0.05), ("(" + cap, 0.05)):
            if form != w:
                words.append(form)
                weights.append(f * share)
    return words, weights, listname


def import_wordfreq() -> Any:
    """The ``wordfreq`` module, or an :class:`ExportError` that says how to install it."""
    try:
        import wordfreq
    except ImportError as exc:
        raise ExportError(
            "the wordfreq vocabulary source needs the package wordfreq: pip install 'mbert-edge[export]' "
            "(or choose --vocab-source dataset-build)"
        ) from exc
    return wordfreq


def wordfreq_code(lang: str) -> str | None:
    """The code of ``lang``'s wordfreq list (:data:`WORDFREQ_CODES`), or None when wordfreq has none."""
    available = import_wordfreq().available_languages(wordlist="small")
    return next((c for c in (lang, WORDFREQ_CODES.get(lang)) if c is not None and c in available), None)


def languages_without_text(languages: Sequence[str], sources: Sequence[str]) -> list[str]:
    """The languages that none of ``sources`` has text for (wordfreq's lists, the corpus's folders)."""
    missing = []
    corpus_langs = set(corpus.available_languages()) if "dataset-build" in sources else set()
    for lang in languages:
        if lang in corpus_langs or ("wordfreq" in sources and wordfreq_code(lang) is not None):
            continue
        missing.append(lang)
    return missing


def mine(
    tok: Tokenizer,
    languages: Sequence[str],
    sources: Sequence[str] = SOURCES,
    corpus_files: Sequence[Path] = (),
) -> Mined:
    """Count the pieces each language needs, per source."""
    mined = Mined()
    for lang in languages:
        if "wordfreq" in sources:
            words, weights, listname = wordfreq_words(lang)
            if words:
                mined.counts[(lang, "wordfreq")] = count_pieces(tok, words, weights)
                log.info("mined %s: %d wordfreq words (%s list)", lang, len(words), listname)
            mined.sources.setdefault(
                "wordfreq", {"version": _version("wordfreq"), "min_frequency": WORDFREQ_MIN_FREQUENCY}
            )
            mined.sources["wordfreq"].setdefault("lists", {})[lang] = listname  # type: ignore[index]
        if "dataset-build" in sources:
            paras = corpus.train_paragraphs(lang)
            if paras:
                mined.counts[(lang, "dataset-build")] = count_pieces(tok, [p.text for p in paras])
            log.info("mined %s: %d dataset-build training paragraphs", lang, len(paras))
            mined.sources.setdefault("dataset-build", {"version": _version("dataset-build"), "split": "train"})
            mined.sources["dataset-build"].setdefault("paragraphs", {})[lang] = len(paras)  # type: ignore[index]
    for path in corpus_files:
        lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        texts = [ln for ln in lines if corpus.split_of(ln) is not True]  # held-out corpus text measures the trim
        if len(texts) < len(lines):
            log.info("%s: %d lines are held-out corpus text, not mined", path, len(lines) - len(texts))
        counts = count_pieces(tok, texts)
        key = f"file:{Path(path).name}"
        if key in mined.sources:  # two files of one name
            key = f"file:{path}"
        for lang in languages:  # a user corpus counts for every kept language
            mined.counts[(lang, key)] = counts
        mined.sources[key] = {"lines": len(texts), "held_out_lines_skipped": len(lines) - len(texts)}
    return mined


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
