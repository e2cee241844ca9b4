"""Stage: write ``tokenizer.model``, the bundle's Unigram tokenizer for SentencePiece, when it gives the same ids.

The runtime then loads it instead of ``tokenizer.json`` (faster, in less memory; see
:mod:`mbert_edge.tokenizer_sentencepiece`). Skipped for WordPiece tokenizers, for token classification (its
character offsets come from ``tokenizers``), and for Unigram tokenizers of another shape or that give other ids
on one text of the check (:mod:`mbert_edge_export.sentencepiece_model`), each said in the fidelity report.
"""

from __future__ import annotations

import dataclasses
import logging

from tokenizers import Tokenizer

from mbert_edge.manifest import TOKEN_CLASSIFICATION
from mbert_edge_export import bundle_writer, sentencepiece_model
from mbert_edge_export.stages.context import TOKENIZER_FILE, ExportContext
from mbert_edge_export.trim.tokenizer_rewrite import model_type

log = logging.getLogger(__name__)

STEPS = 0  # a few seconds, for Unigram tokenizers only: logged, not counted as a step
SENTENCEPIECE_FILE = "tokenizer.model"


def enabled(ctx: ExportContext) -> bool:
    """Always runs (whether the tokenizer fits is known once the source is loaded)."""
    return True


def run(ctx: ExportContext) -> None:
    """Convert and check the tokenizer; write the file and its manifest entry when every text agrees."""
    loaded = ctx.loaded
    assert loaded is not None
    bundled = Tokenizer.from_file(str(ctx.path(TOKENIZER_FILE)))  # what the bundle ships, written by to_onnx
    if model_type(bundled) != "Unigram":  # WordPiece (mBERT) bundles simply have no SentencePiece form
        return
    if loaded.task == TOKEN_CLASSIFICATION:
        ctx.fidelity["tokenizer_sentencepiece"] = {
            "written": False,
            "reason": "token classification reads character offsets, which tokenizers computes",
        }
        return
    try:
        form = sentencepiece_model.convert(bundled)
    except sentencepiece_model.NotConvertible as exc:
        ctx.fidelity["tokenizer_sentencepiece"] = {"written": False, "reason": str(exc)}
        log.info("no tokenizer.model: %s", exc)
        return
    texts = sentencepiece_model.check_texts()
    log.info(
        "checking tokenizer.model (the tokenizer for SentencePiece) against tokenizer.json on %d texts", len(texts)
    )
    report = sentencepiece_model.check(bundled, form, texts)
    ctx.fidelity["tokenizer_sentencepiece"] = {"written": report.passed, **report.to_dict()}
    if not report.passed:
        log.warning(
            "no tokenizer.model: SentencePiece gives other ids than tokenizer.json on %d of %d texts (%d of them "
            "ties; first: %s); the bundle keeps tokenizer.json only",
            report.texts - report.identical,
            report.texts,
            report.ties,
            report.differences[0]["text"][:80] if report.differences else "none",
        )
        return
    ctx.path(SENTENCEPIECE_FILE).write_bytes(form.model)
    entry = bundle_writer.file_entry(ctx.stage_dir, SENTENCEPIECE_FILE, "tokenizer-sentencepiece")
    ctx.files.append(dataclasses.replace(entry, special_ids=form.special_ids, fallback_pattern=form.fallback_pattern))
    log.info(
        "tokenizer.model: the same ids as tokenizer.json on %d of %d texts of %d languages (%d ties)",
        report.identical,
        report.texts,
        report.languages,
        report.ties,
    )
