"""Stage: trim the vocabulary to the named languages (``--languages``); skipped when none are named."""

from __future__ import annotations

from mbert_edge_export import trim
from mbert_edge_export.stages.context import ExportContext

STEPS = 1


def enabled(ctx: ExportContext) -> bool:
    """Runs when ``--languages`` names languages."""
    return bool(ctx.options.languages)


def check(ctx: ExportContext) -> None:
    """Validate the trim options before any slow step."""
    opts = ctx.options
    if opts.languages:
        opts.languages = trim.check_options(
            opts.languages,
            opts.vocab_sources,
            opts.vocab_corpus,
            opts.vocab_coverage if opts.vocab_coverage is not None else trim.DEFAULT_COVERAGE,
            opts.max_vocab,
        )


def run(ctx: ExportContext) -> None:
    """Replace the loaded model and tokenizer by trimmed ones; record the trim and its fidelity."""
    opts = ctx.options
    assert ctx.loaded is not None and opts.languages
    ctx.step(f"trimming the vocabulary to {','.join(opts.languages)}")
    ctx.loaded, report = trim.trim_source(
        ctx.loaded,
        opts.languages,
        sources=opts.vocab_sources,
        corpus_files=opts.vocab_corpus,
        coverage=opts.vocab_coverage if opts.vocab_coverage is not None else trim.DEFAULT_COVERAGE,
        max_vocab=opts.max_vocab,
    )
    ctx.fidelity["trim"] = report.pop("fidelity", None) or {}
    ctx.settings["trim"] = report
