"""The project's training pairs (``export/data/bitext/en-XX.tsv``, ``distill --parallel builtin``): well formed,
in the right scripts, and disjoint from every text that quality is judged on.

A pair that repeated an evaluation sentence would train the student on the very lookup that retrieval then
scores; a cell left in English would train a sentence towards itself under the wrong language.
"""

from __future__ import annotations

import re
import unicodedata

import pytest

from mbert_edge_export.distill import bitext
from mbert_edge_export.distill.data import parallel_set

from .test_parallel_set import LATIN, SCRIPT

LANGS = ("de", "fr", "es", "ru", "zh", "ar", "hi")
MIN_PAIRS = 500


@pytest.fixture(scope="module")
def pairs() -> dict[str, list[tuple[str, str]]]:
    out = {}
    for f in bitext.builtin_files():
        items, summary = bitext.read_pairs(f, evaluation=set())
        lang = f.stem.split("-", 1)[1]
        assert summary["source_language"] == "en" and list(summary["pairs_per_language"]) == [lang]
        out[lang] = [(p.target_text, p.text) for p in items if p.target_text is not None]
    return out


def test_one_file_per_kept_language_of_the_benchmark(pairs):
    assert set(pairs) == set(LANGS)
    for lang, rows in pairs.items():
        assert len(rows) >= MIN_PAIRS, lang


def test_no_sentence_is_evaluation_text(pairs):
    """Nothing of parallel_eval.tsv, in any language, compared after NFC, case and space folding."""

    def fold(s: str) -> str:
        return " ".join(unicodedata.normalize("NFC", s).casefold().split())

    evaluation = {fold(s) for sents in parallel_set().values() for s in sents.values()}
    for lang, rows in pairs.items():
        hits = [s for row in rows for s in row if fold(s) in evaluation]
        assert not hits, (lang, hits[:3])


def test_no_sentence_is_corpus_text(pairs):
    """Nor a sentence of the dataset-build corpus (held-out paragraphs are judged on): none inside its language's
    text, English included."""
    from mbert_edge_export import corpus

    def text_of(lang: str) -> str:
        return "\n".join(p.text for p in corpus.paragraphs(lang))

    english = text_of("en")
    for lang, rows in pairs.items():
        own = text_of(lang)
        assert not [en for en, _ in rows if en in english], lang
        assert not [tr for _, tr in rows if tr in own], lang


def test_scripts_sources_and_normal_form(pairs):
    for lang, rows in pairs.items():
        sources = [en for en, _ in rows]
        assert len(set(sources)) == len(sources), lang
        for en, tr in rows:
            for s in (en, tr):
                assert s == unicodedata.normalize("NFC", s) and s == s.strip() and "\t" not in s
            assert re.search(LATIN, en), en
            assert tr != en, (lang, en)
            if lang in SCRIPT:
                assert re.search(SCRIPT[lang], tr), (lang, tr)
            else:
                assert re.search(LATIN, tr), (lang, tr)
