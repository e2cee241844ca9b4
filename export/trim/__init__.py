"""Vocabulary trimming: keep the pieces that text of the named languages needs, and their embedding rows.

    >>> trimmed, report = trim_source(load_source("default"), ["en", "pt"])

Steps: :mod:`.mining` counts the pieces each language's text uses (word frequency lists, the corpus's
training split, a user corpus); :mod:`.selection` keeps the most frequent up to a coverage target plus the
forced pieces (specials, the scripts' single characters, digits, punctuation, prompts); :mod:`.tokenizer_rewrite`
writes the smaller ``tokenizer.json`` (original order and scores, ids remapped); :mod:`.embeddings` slices the
word-embedding rows; :mod:`.fidelity` measures the result on held-out text of kept and other languages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbert_edge_export import corpus
from mbert_edge_export.errors import ExportError
from mbert_edge_export.languages import LANGUAGES, parse_languages, scripts_of, unspaced_scripts_of
from mbert_edge_export.sources.base import LoadedSource
from mbert_edge_export.tokenizer import prepare_for_bundle
from mbert_edge_export.trim import fidelity, mining, selection
from mbert_edge_export.trim.embeddings import slice_word_embeddings
from mbert_edge_export.trim.tokenizer_rewrite import SUPPORTED, model_type, trimmed_tokenizer

log = logging.getLogger(__name__)

DEFAULT_COVERAGE = 1.0  # of each language's word-frequency token mass (words of at least 1 in 10 million)
#: languages not kept whose degradation is measured and reported (when the corpus has them)
REPORTED_OTHERS = ("en", "de", "fr", "es", "pt", "it", "pl", "tr", "vi", "ru", "el", "ar", "hi", "zh", "ja", "ko")
OUTPUT_CHECK_TEXTS = 8
OTHER_LANGUAGES_NOTE = (
    "text in languages that were not kept still runs but degrades: Latin-script languages split into more, "
    "smaller pieces; other scripts largely into unknown tokens (rates per language in fidelity.trim.not_kept)"
)  # identical-tokenization sentences per kept language run through both models


def check_options(
    languages: Sequence[str] | str,
    sources: Sequence[str] = mining.SOURCES,
    corpus_files: Sequence[Path] = (),
    coverage: float = DEFAULT_COVERAGE,
    max_vocab: int | None = None,
) -> list[str]:
    """Validate trim options before any slow step; return the language codes."""
    langs = parse_languages(languages)
    unknown = [s for s in sources if s not in mining.SOURCES]
    if unknown:
        raise ExportError(f"unknown vocabulary source(s) {unknown}; choose from {', '.join(mining.SOURCES)}")
    if not 0.5 <= coverage <= 1.0:
        raise ExportError(f"--vocab-coverage must be between 0.5 and 1.0, not {coverage}")
    if max_vocab is not None and max_vocab < 100:
        raise ExportError(f"--max-vocab {max_vocab} is too small to hold even the special tokens and characters")
    for f in corpus_files:
        p = Path(f)
        if not p.is_file():
            raise ExportError(f"vocabulary corpus {p} does not exist")
        if not any(line.strip() for line in p.read_text(encoding="utf-8").splitlines()):
            raise ExportError(f"vocabulary corpus {p} holds no text")
    if not sources and not corpus_files:
        raise ExportError("a trim needs at least one vocabulary source (--vocab-source or --vocab-corpus)")
    if "dataset-build" in sources:
        corpus.root()  # raises, saying how to install it, when the corpus is missing
    if "wordfreq" in sources:
        mining.import_wordfreq()
    elif coverage < 1.0:
        log.warning(
            "--vocab-coverage %g applies to the wordfreq source only, which is not used: every piece of the corpus "
            "sources is kept",
            coverage,
        )
    bare = mining.languages_without_text(langs, sources)
    if bare and not corpus_files:
        raise ExportError(
            f"no text to mine for {', '.join(bare)}: neither a wordfreq list nor the dataset-build corpus has "
            "text in it, so the trim would keep only its single characters; pass --vocab-corpus FILE with text in "
            "it, or leave it out of --languages"
        )
    if bare:
        log.warning("%s: only your --vocab-corpus text is mined for it (no word list, no corpus text)", ", ".join(bare))
    return langs


def previous_trim(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The trim a source's vocabulary went through: its own (the lineage's, or an exported bundle's), else its
    teacher's down the lineage (a student distilled without ``--languages`` reads its teacher's vocabulary)."""
    lineage = provenance.get("lineage") or {}
    found = lineage.get("trim") or provenance.get("trim")
    teacher = lineage.get("teacher") or {}
    while not found and teacher.get("lineage"):
        found = teacher["lineage"].get("trim")
        teacher = teacher["lineage"].get("teacher") or {}
    return found or None


def trim_source(
    loaded: LoadedSource,
    languages: Sequence[str] | str,
    *,
    sources: Sequence[str] = mining.SOURCES,
    corpus_files: Sequence[Path] = (),
    coverage: float = DEFAULT_COVERAGE,
    max_vocab: int | None = None,
    check_outputs: bool = True,
) -> tuple[LoadedSource, dict[str, Any]]:
    """Trim ``loaded``'s vocabulary to ``languages``; return the trimmed source and the trim report.

    A source that was already trimmed to the same or a narrower set of languages is returned unchanged (a
    vocabulary cannot grow back), with a report that says so, unless ``max_vocab`` is below its vocabulary
    size: then it is trimmed again to that size (e.g. a distilled student, whose teacher was trimmed, capped
    for a size budget), and the fidelity report compares with the source's trimmed tokenizer.
    """
    langs = check_options(languages, sources, corpus_files, coverage, max_vocab)
    previous = previous_trim(loaded.provenance)
    current = loaded.tokenizer.get_vocab_size(with_added_tokens=True)
    narrowing = max_vocab is not None and max_vocab < current
    if previous and set(previous.get("languages", ())) <= set(langs) and not narrowing:
        log.warning(
            "the source is already trimmed to %s; --languages %s changes nothing",
            ",".join(previous["languages"]),
            ",".join(langs),
        )
        return loaded, {
            **previous,
            "requested_languages": langs,
            "skipped": f"source already trimmed to {','.join(previous['languages'])}",
        }
    tok = prepare_for_bundle(loaded.tokenizer)  # a saved padding or truncation would pad or cut the mined text
    kind = model_type(tok)
    if kind not in SUPPORTED:
        raise ExportError(
            f"vocabulary trimming supports {' and '.join(SUPPORTED)} tokenizers, not {kind}; export without --languages"
        )
    started = time.perf_counter()
    prompts = list(loaded.embedding.prefixes.values()) if loaded.embedding else []
    if loaded.embedding and loaded.embedding.default_prefix:
        prompts.append(loaded.embedding.default_prefix)
    forced = selection.forced_ids(tok, scripts_of(langs), prompts, unspaced_scripts_of(langs))
    selection.check_cap(forced, max_vocab)  # before the mining, which takes minutes for the default
    mined = mining.mine(tok, langs, sources, corpus_files)
    if not any(sum(c.values()) for c in mined.counts.values()):
        raise ExportError(
            f"no text to mine for {','.join(langs)}: the sources {list(sources)} have none for these languages; "
            "pass --vocab-corpus FILE with text in them"
        )
    full = [s for s in mined.sources if s != "wordfreq"]  # corpus text: every piece it uses is kept
    sel = selection.select(mined.counts, forced, coverage, max_vocab, full_sources=full)
    new_tok = trimmed_tokenizer(tok, sel.kept)
    new_model = slice_word_embeddings(loaded.model, sel.kept)
    old_vocab = tok.get_vocab_size(with_added_tokens=True)
    old_rows = int(loaded.model.get_input_embeddings().weight.shape[0])
    dim = int(loaded.model.get_input_embeddings().weight.shape[1])
    report: dict[str, Any] = {
        "languages": langs,
        "tokenizer": kind,
        "sources": mined.sources,
        "coverage": coverage,
        "max_vocab": max_vocab,
        "vocab_size": {"before": old_vocab, "after": len(sel.kept)},
        "embedding_rows": {"before": old_rows, "after": len(sel.kept)},
        "parameters": {
            "before": _params(loaded.model),
            "after": _params(new_model),
            "embedding_before": old_rows * dim,
            "embedding_after": len(sel.kept) * dim,
        },
        "forced": sel.forced,
        "mined_not_forced": sel.mined,
        "dropped_by_cap": sel.dropped_by_cap,
        "kept_ids_sha256": hashlib.sha256(",".join(map(str, sel.kept)).encode()).hexdigest(),
        **({"retrimmed_from": {"languages": previous.get("languages"), "vocab_size": current}} if previous else {}),
        "other_languages": OTHER_LANGUAGES_NOTE,
    }
    report["fidelity"] = measure(tok, new_tok, sel.kept, langs)
    if previous:
        report["fidelity"]["relative_to"] = f"the source's vocabulary, already trimmed ({current} pieces)"
    if check_outputs:
        texts = [
            s
            for lang in langs
            for s in fidelity.identical_texts(tok, new_tok, sel.kept, _held_out_sentences(lang))[:OUTPUT_CHECK_TEXTS]
        ]
        if texts:
            diff = fidelity.output_difference(loaded.model, new_model, tok, new_tok, texts)
            report["fidelity"]["outputs_on_identical_text"] = {"texts": len(texts), "max_abs_diff": diff}
            if diff > 1e-5:
                raise ExportError(
                    f"the trimmed model's outputs differ by {diff:.2e} from the original's on text whose tokens are "
                    "unchanged; this is a bug, please report it"
                )
    report["seconds"] = round(time.perf_counter() - started, 1)
    log.info(
        "trimmed the vocabulary to %s: %d -> %d pieces (%s)",
        ",".join(langs),
        old_vocab,
        len(sel.kept),
        ", ".join(f"{k} {v['sentences']['identical']:.2%}" for k, v in report["fidelity"]["kept"].items() if v),
    )
    provenance = {
        **loaded.provenance,
        "vocab_size": len(sel.kept),
        "trim": {"languages": langs, **({"max_vocab": max_vocab} if max_vocab is not None else {})},
    }
    return dataclasses.replace(loaded, model=new_model, tokenizer=new_tok, provenance=provenance), report


def measure(old, new, kept: Sequence[int], langs: Sequence[str]) -> dict[str, Any]:
    """Tokenization fidelity on held-out corpus text: per kept language and for some languages not kept."""
    available = set(corpus.available_languages()) if _has_corpus() else set()
    out: dict[str, Any] = {"held_out": "dataset-build held-out paragraphs (never mined) and their sentences"}
    out["kept"] = {lang: _lang_fidelity(old, new, kept, lang) if lang in available else None for lang in langs}
    others = [c for c in REPORTED_OTHERS if c not in langs and c in available]
    out["not_kept"] = {lang: _lang_fidelity(old, new, kept, lang) for lang in others}
    return out


def _lang_fidelity(old, new, kept, lang: str) -> dict[str, Any]:
    paras = [p.text for p in corpus.held_out_paragraphs(lang)]
    return {
        "paragraphs": fidelity.compare_tokenization(old, new, kept, paras),
        "sentences": fidelity.compare_tokenization(old, new, kept, _held_out_sentences(lang)),
    }


def _held_out_sentences(lang: str) -> list[str]:
    if not _has_corpus() or LANGUAGES[lang].corpus is None:
        return []
    return [s for p in corpus.held_out_paragraphs(lang) for s in corpus.sentences(p.text)]


def _has_corpus() -> bool:
    try:
        corpus.root()
    except ExportError:
        return False
    return True


def _params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


__all__ = ["DEFAULT_COVERAGE", "check_options", "measure", "trim_source"]
