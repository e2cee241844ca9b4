"""Stage: load the source model (a checkpoint, the embedded default, or a distilled student with its lineage)."""

from __future__ import annotations

import dataclasses
import logging

from mbert_edge.manifest import TEXT_CLASSIFICATION
from mbert_edge_export.errors import ExportError
from mbert_edge_export.quantize import calibration
from mbert_edge_export.sources import load_source
from mbert_edge_export.stages.context import ExportContext

STEPS = 1

log = logging.getLogger(__name__)


def enabled(ctx: ExportContext) -> bool:
    """Always runs."""
    return True


def run(ctx: ExportContext) -> None:
    """Load the source; settle the max length; read calibration text early so a bad file fails fast."""
    opts = ctx.options
    ctx.step(f"loading {opts.source}")
    ctx.loaded = load_source(opts.source, task=opts.task)
    limit = ctx.loaded.max_length
    if opts.max_length is not None:
        if not 2 <= opts.max_length <= limit:
            raise ExportError(f"--max-length must be between 2 and the model's limit {limit}, not {opts.max_length}")
        limit = opts.max_length
    ctx.max_length = limit
    if opts.needs_text:
        if opts.calibration_file:
            texts = calibration.read_text_file(opts.calibration_file)
            ctx.calibration, ctx.held_out = calibration.split(texts, opts.calibration_size, opts.eval_size)
            if texts.labels is not None:
                if ctx.loaded.task == TEXT_CLASSIFICATION:  # the gate reports accuracy: the names must be the model's
                    calibration.label_ids(texts.labels, ctx.loaded.labels)
                else:  # an embedding model has no labels, a tagger's are per token: the gate compares with fp32
                    log.info("%s: labels ignored (used for text classification only)", opts.calibration_file)
                    ctx.calibration = dataclasses.replace(ctx.calibration, labels=None)
                    ctx.held_out = dataclasses.replace(ctx.held_out, labels=None)
        else:  # the corpus: calibrate on training paragraphs, gate on held-out ones, of the kept languages
            ctx.calibration, ctx.held_out = calibration.corpus_sets(
                opts.calibration_size, opts.eval_size, opts.languages
            )
    ctx.settings.update({"source_spec": opts.source, "task": ctx.loaded.task, "max_length": limit})
