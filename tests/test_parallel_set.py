"""The evaluation-only parallel set (``export/data/parallel_eval.tsv``): complete, aligned, in the right scripts.

Every retrieval figure of ``distill``'s report and of the benchmarks reads this file, and a translation under
the wrong id or a cell left in English would show up as a lost lookup of the model, not as a data error.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import pytest

LANGS = ("en", "de", "fr", "es", "ru", "zh", "ar", "hi", "pt", "it", "ja", "ko", "tr", "pl")
#: characters that text of a language must contain (the Latin-script languages: any Latin letter)
SCRIPT = {
    "ru": r"[\u0400-\u04FF]",
    "zh": r"[\u4E00-\u9FFF]",
    "ar": r"[\u0600-\u06FF]",
    "hi": r"[\u0900-\u097F]",
    "ja": r"[\u3040-\u30FF]",  # kana: Japanese, not Chinese
    "ko": r"[\uAC00-\uD7AF]",
}
LATIN = r"[A-Za-z\u00C0-\u024F]"


@pytest.fixture(scope="module")
def sentences():
    from mbert_edge_export.distill.data import parallel_set

    return parallel_set()


def test_every_sentence_in_every_language(sentences):
    assert set(sentences) == set(LANGS)
    ids = set(sentences["en"])
    assert len(ids) == 700
    for lang in LANGS:
        assert set(sentences[lang]) == ids, lang


def test_the_first_ids_are_the_earlier_set(sentences):
    """``--parallel-limit 100`` (and the presets' limits) read the set as it was before it grew."""
    from mbert_edge_export.distill.data import parallel_set

    first = parallel_set(100)
    assert set(first["en"]) == {f"s{i:02d}" for i in range(1, 101)}
    assert first["en"]["s45"] == "The train to Berlin leaves at nine o'clock."
    assert set(first["hi"]) == set(first["en"])
    assert all(first[lang][k] == sentences[lang][k] for lang in LANGS for k in first[lang])


def test_no_sentence_twice_and_no_cell_left_in_english(sentences):
    for lang in LANGS:
        counts = Counter(sentences[lang].values())
        assert [s for s, c in counts.items() if c > 1] == [], lang
        if lang != "en":
            same = [k for k, s in sentences[lang].items() if s == sentences["en"][k]]
            assert same == [], lang


@pytest.mark.parametrize("lang", LANGS)
def test_scripts(sentences, lang):
    for sid, text in sentences[lang].items():
        assert text == text.strip() and "\t" not in text and text, (lang, sid)
        assert unicodedata.normalize("NFC", text) == text, (lang, sid)
        assert re.search(SCRIPT.get(lang, LATIN), text), (lang, sid, text)
        if lang in ("ru", "ar", "hi", "ko", "zh", "ja"):
            # a few Latin letters are fine (units, brand names), a sentence's worth is an untranslated cell
            assert len(re.findall(LATIN, text)) <= 12, (lang, sid, text)


def test_distill_reads_kept_languages_on_the_whole_set(sentences):
    """``distill`` looks kept languages (and English, the pivot) up on every sentence, the others on the first
    100 (their retention reports a trim's damage, far from any threshold), and never more than ``limit``."""
    from mbert_edge_export.distill.data import NOT_KEPT_PARALLEL, evaluation_parallel

    got = evaluation_parallel(["de", "hi", "ko", "tr"], kept=["en", "de", "hi"])
    assert set(got) == {"en", "de", "hi", "ko", "tr"}
    assert got["en"] == sentences["en"] and got["hi"] == sentences["hi"] and len(got["de"]) == 700
    assert NOT_KEPT_PARALLEL == 100 and set(got["ko"]) == {f"s{i:02d}" for i in range(1, 101)}
    assert got["tr"]["s45"] == sentences["tr"]["s45"]
    small = evaluation_parallel(["de", "ko"], kept=["de"], limit=8)
    assert len(small["en"]) == len(small["de"]) == len(small["ko"]) == 8
    assert len(evaluation_parallel(["ko"], kept=["de"], limit=300)["ko"]) == 100


def test_no_sentence_is_in_the_corpus(sentences):
    """Evaluation-only: no parallel sentence occurs in its language's ``dataset-build`` text (training, held-out
    and vocabulary-mining paragraphs alike), so no training or mining step has seen it."""
    from mbert_edge_export import corpus

    available = set(corpus.available_languages())
    checked = 0
    for lang, by_id in sentences.items():
        if lang not in available:
            continue
        text = "\n".join(p.text for p in corpus.paragraphs(lang))
        assert len(text) > 10_000, lang
        assert [k for k, s in by_id.items() if s in text] == [], lang
        checked += 1
    assert checked == len(sentences) == 14  # every language of the set has a corpus folder
