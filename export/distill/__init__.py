"""``mbert-edge distill``: a smaller student cut out of a teacher and trained to imitate it.

    >>> from mbert_edge_export.distill import distill
    >>> report = distill("default", Path("ckpt/e5-small-6l"), layers=6, languages=["en", "de"])

Steps (each in its own module):

1. :mod:`.settings`: the preset plus overrides, checked against the teacher's config before anything slow;
   :mod:`.data`: the training texts (user files and the corpus's training split).
2. Load the teacher; with ``languages``, trim its vocabulary first (``mbert_edge_export.trim``): the student
   reads the trimmed tokenizer; sentence-level targets come from the untrimmed teacher on the original
   tokenization of the same text span (per-token targets from the trimmed teacher, which reads the same tokens).
3. :mod:`.layers`: the student keeps ``layers`` of the teacher's layers, copied (``distilbert`` map by default);
   with ``intermediate_size``, :mod:`.pruning` narrows their feed-forward blocks to the most important neurons.
4. :mod:`.trainer`: imitate the teacher (:mod:`.losses`; teacher outputs cached once by :mod:`.teacher_cache`),
   with resume checkpoints in a work directory beside the output (``.<name>.distill-work``).
5. :mod:`.evaluate`: per-language retention on held-out text, against the untrimmed teacher; the gate.
6. Write an ordinary Hugging Face checkpoint (staged beside ``output`` and renamed into place) with the
   lineage (teacher checksum, layer map, recipe, data, trim, evaluation) and ``distill_report.json``;
   ``mbert-edge export`` takes it as its source.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbert_edge.bundle import sha256_file
from mbert_edge.manifest import TOKEN_CLASSIFICATION
from mbert_edge_export import bundle_writer
from mbert_edge_export.distill import pruning
from mbert_edge_export.distill.data import TrainingData, build_training_data
from mbert_edge_export.distill.evaluate import Candidate, evaluate, evaluation_set, format_report
from mbert_edge_export.distill.layers import NAMED_MAPS, make_student, named_map, read_init_student
from mbert_edge_export.distill.modeling import TextEncoder, collate, length_batches, run
from mbert_edge_export.distill.precision import resolve as resolve_precision
from mbert_edge_export.distill.settings import (
    PRESETS,
    DistillSettings,
    TeacherInfo,
    fingerprint,
    inspect_teacher,
    make_settings,
    validate,
)
from mbert_edge_export.distill.trainer import StepCallback, Trainer, read_state, resume_dir, untrained_summary
from mbert_edge_export.errors import DistillError
from mbert_edge_export.sources.checkpoint import LINEAGE_FILE

log = logging.getLogger(__name__)

REPORT_FILE = "distill_report.json"
#: what makes a directory an earlier student, which --force may replace
CHECKPOINT_MARKERS = (REPORT_FILE, LINEAGE_FILE)
AUTO_TEXTS, AUTO_LENGTH = 64, 64  # texts and tokens per text for choosing the layer map


def work_dir(output: Path) -> Path:
    """Where an unfinished run keeps its resume checkpoint: a hidden folder beside ``output``."""
    return output.parent / f".{output.name}.distill-work"


def distill(
    source: str,
    output: str | Path,
    layers: int,
    *,
    languages: Sequence[str] | str | None = None,
    data_files: Sequence[str | Path] = (),
    preset: str = "default",
    force: bool = False,
    restart: bool = False,
    trim_options: dict[str, Any] | None = None,
    on_step: StepCallback | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Distill ``source`` into a student of ``layers`` layers, written as a checkpoint at ``output``.

    ``languages`` (ISO 639-1) trims the vocabulary first, weights those languages up in the corpus and names
    the languages the retention gate judges. ``data_files`` are the user's texts (``.txt``, ``.jsonl``,
    ``.csv``, optional labels). ``preset`` (``default``, ``long`` or ``smoke``) sets the recipe; ``overrides`` are
    :class:`~.settings.DistillSettings` fields (``steps``, ``time_budget``, ``lr``, ``layer_map``,
    ``min_retention``, ...). An unfinished run at the same ``output`` resumes when the settings match (else
    :class:`DistillError`; ``restart=True`` discards it). ``trim_options`` go to
    :func:`mbert_edge_export.trim.trim_source` (``sources``, ``coverage``, ``max_vocab``, ...).
    ``on_step(step, loss)`` is called after each step.

    Returns the report (also written to ``output/distill_report.json``). Raises :class:`DistillError` on bad
    settings (before anything slow) and when the gate fails (``exc.distill_report`` holds the report; nothing
    is written to ``output``, the trained student stays in the work directory for a rerun).
    """
    started = time.monotonic()
    output = Path(output)
    settings = make_settings(preset, layers, languages=languages, data_files=[Path(p) for p in data_files], **overrides)
    teacher_info = inspect_teacher(source)
    validate(settings, teacher_info)
    init_lineage, init_record = None, None
    if settings.init_student is not None:
        settings.init_student = Path(settings.init_student)
        init_lineage = read_init_student(
            settings.init_student, settings.layers, teacher_info.weights_sha256, settings.languages
        )
        theirs = list(init_lineage["distill"]["layer_map"])
        if isinstance(settings.layer_map, list) and settings.layer_map != theirs:
            raise DistillError(
                f"--layer-map {settings.layer_map}: --init-student keeps its own layer map {theirs}; leave it out"
            )
        width = json.loads((settings.init_student / "config.json").read_text(encoding="utf-8")).get("intermediate_size")
        if settings.intermediate_size is not None and isinstance(width, int) and settings.intermediate_size > width:
            raise DistillError(
                f"--intermediate-size {settings.intermediate_size}: --init-student {settings.init_student} has "
                f"{width} feed-forward neurons per layer; keep at most that many"
            )
        from mbert_edge_export.sources import huggingface

        init_record = {  # hashed once: the fingerprint, the report and the lineage all carry it
            "path": str(settings.init_student),
            "weights_sha256": huggingface.weights_sha256(settings.init_student),
            "distill": init_lineage.get("distill"),
        }
    bundle_writer.check_output(output, force, source=source, replaceable=CHECKPOINT_MARKERS)
    trim_options = dict(trim_options or {})
    if settings.languages:
        from mbert_edge_export.trim import check_options, trim_source  # imported only when needed

        check_options(settings.languages, **{k: v for k, v in trim_options.items() if k != "check_outputs"})
    else:
        trim_source = None
        if trim_options:
            raise DistillError("trim options need --languages (the languages to trim the vocabulary to)")
    data = build_training_data(settings, teacher_info)
    work = work_dir(output)
    extra = {"teacher": teacher_info.weights_sha256, "texts": _texts_sha256(data), "trim": trim_options}
    if trim_options.get("corpus_files"):  # what they hold decides the vocabulary, not where they are
        extra["vocab_corpus_sha256"] = [sha256_file(Path(f)) for f in trim_options["corpus_files"]]
    if init_record is not None:
        extra["init_student"] = init_record["weights_sha256"]
    # Sentence-level targets (pooled vectors, logits) come from the untrimmed teacher reading the original
    # tokenization, so that pieces a cap or a coverage target dropped (and the few rare words any trim splits
    # differently) cost the student its own inputs but never its targets. Per-token targets (token
    # classification, hidden-state MSE) need both to read the same tokens: the trimmed teacher gives those.
    untrimmed_targets = (
        bool(settings.languages) and teacher_info.task != TOKEN_CLASSIFICATION and settings.hidden_weight == 0
    )
    if untrimmed_targets:
        extra["teacher_targets"] = "untrimmed"
    fp = fingerprint(settings, extra)
    state = read_state(work)
    if state is not None and restart:
        log.info("discarding the unfinished run in %s (--restart)", work)
        shutil.rmtree(work)
        state = None
    if state is not None and state.fingerprint != fp:
        raise DistillError(_mismatch(work, state.settings, settings))

    # -- slow from here ------------------------------------------------------------------------------------
    import torch

    from mbert_edge_export.sources import load_source

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and (torch.device(device).index or 0) >= torch.cuda.device_count():
        raise DistillError(
            f"--device {device}: torch sees {torch.cuda.device_count()} CUDA GPU(s) here; leave --device out to "
            "train on the CPU (or on the GPU when there is one)"
        )
    precision = resolve_precision(settings.precision, device)
    log.info("training precision: %s (--precision %s)", precision, settings.precision)
    loaded = load_source(source)
    if loaded.task != teacher_info.task:
        raise DistillError(f"{source} loaded as {loaded.task}, its config says {teacher_info.task}")
    teacher_src, trim_report = loaded, None
    if trim_source is not None:
        assert settings.languages is not None
        log.info("trimming the teacher's vocabulary to %s", ", ".join(settings.languages))
        teacher_src, trim_report = trim_source(loaded, list(settings.languages), **trim_options)
    for m in {id(loaded.model): loaded.model, id(teacher_src.model): teacher_src.model}.values():
        _fast_attention(m)
        m.to(device).eval()
    pooling = loaded.embedding.pooling if loaded.embedding else "mean"
    prefixes = list(teacher_src.embedding.prefixes.values()) if teacher_src.embedding else []
    encoder = TextEncoder(teacher_src.tokenizer, settings.max_length)
    prompts = [prefixes[i % len(prefixes)] if prefixes else "" for i in range(len(data.items))]
    texts = [prompt + t.text for prompt, t in zip(prompts, data.items, strict=True)]
    # a translation (--parallel) is trained towards the teacher's vector of its source, under the same prompt
    sources = {i: prompts[i] + t.target_text for i, t in enumerate(data.items) if t.target_text is not None}
    teacher_model, teacher_ids, teacher_pad = teacher_src.model, None, None
    if untrimmed_targets and teacher_src is not loaded:
        # the teacher reads exactly the span the student reads: a trimmed tokenizer needs more pieces, so a
        # long text is cut earlier for the student, and the teacher gets the text cut at the same place
        ids, spans = encoder.ids_and_spans(texts)
        spans = [sources.get(i, span) for i, span in enumerate(spans)]  # a source: whole, cut at its own length
        original = TextEncoder(loaded.tokenizer, settings.max_length)
        teacher_model, teacher_ids, teacher_pad = loaded.model, original.ids(spans), original.pad_id
        log.info(
            "targets from the untrimmed teacher on the original tokenization (%d of %d training texts have "
            "another token count after the trim; %d cut at %d tokens, the teacher reading the same span)",
            sum(len(a) != len(b) for a, b in zip(ids, teacher_ids, strict=True)),
            len(ids),
            sum(s is not t for s, t in zip(spans, texts, strict=True)),
            settings.max_length,
        )
    else:
        ids = encoder.ids(texts)
        if sources:  # same tokenizer for both: only the translations' targets read other text
            teacher_ids = [list(x) for x in ids]
            for i, x in zip(sources, encoder.ids(list(sources.values())), strict=True):
                teacher_ids[i] = x
    if sources:
        log.info("%d translations trained towards their source's teacher vector (--parallel)", len(sources))

    auto_scores = None
    if state is not None:
        layer_map = list(state.layer_map)
    elif init_lineage is not None:
        layer_map = list(init_lineage["distill"]["layer_map"])
    elif settings.layer_map == "auto":
        layer_map, auto_scores = choose_layer_map(
            teacher_src.model, teacher_src.task, encoder, texts, settings, pooling
        )
    elif isinstance(settings.layer_map, str):
        layer_map = named_map(settings.layer_map, settings.layers, teacher_info.num_layers)
    else:
        layer_map = list(settings.layer_map)
    log.info("student: teacher layers %s of %d", layer_map, teacher_info.num_layers)

    def initial_student() -> Any:
        """The student before training: cut from the teacher, or the earlier student (``--init-student``)."""
        if settings.init_student is None:
            return make_student(teacher_src.model, layer_map).to(device)
        start = load_source(str(settings.init_student))
        if trim_report is not None and init_lineage is not None:
            theirs = (init_lineage.get("trim") or {}).get("kept_ids_sha256")
            if theirs != trim_report.get("kept_ids_sha256"):
                raise DistillError(
                    f"--init-student {settings.init_student} reads another trimmed vocabulary than this run's; "
                    "pass the vocabulary options (--max-vocab, --vocab-coverage, --vocab-corpus) it was made with"
                )
        if start.task != teacher_src.task:
            raise DistillError(f"--init-student {settings.init_student}: a {start.task} model, not {teacher_src.task}")
        _fast_attention(start.model)
        return start.model.to(device)

    student = initial_student()
    if settings.init_student is not None:
        log.info("starting from the earlier student %s", settings.init_student)
    ffn_keep, ffn_report = None, None
    if settings.intermediate_size is not None and settings.intermediate_size != int(student.config.intermediate_size):
        if state is not None and state.ffn_pruning is not None:
            ffn_report = {k: v for k, v in state.ffn_pruning.items() if k != "keep"}
            ffn_keep = state.ffn_pruning["keep"]  # the resumed run's neurons, not a rescoring
            pruning.prune(student, ffn_keep)
        else:  # an earlier student is scored on its own layers; a fresh cut on the teacher's it copies
            scored, at = (student, list(range(len(layer_map)))) if init_record else (teacher_src.model, layer_map)
            ffn_keep, ffn_report = pruning.prune_by_importance(
                scored, student, at, settings.intermediate_size, ids, encoder.pad_id, refit=settings.ffn_refit
            )
    evaluate_only = settings.steps == 0  # the student as it starts (cut, narrowed, or --init-student)
    if evaluate_only:
        log.info("--steps 0: no training; the student is evaluated and written as it starts")
        training = untrained_summary(precision)
    else:
        trainer = Trainer(
            student,
            teacher_model,
            teacher_src.task,
            ids,
            [t.label for t in data.items],
            settings,
            layer_map,
            encoder.pad_id,
            work,
            fp,
            pooling=pooling,
            device=device,
            teacher_ids=teacher_ids,
            teacher_pad_id=teacher_pad,
            precision=precision,
            ffn_pruning=None if ffn_keep is None else {"keep": ffn_keep, **(ffn_report or {})},
        )
        folder = resume_dir(work)
        if state is not None and folder is not None:
            trainer.load(folder)
        deadline = None
        if settings.time_budget:  # the budget is the whole run's: a resumed run has what its earlier runs left
            spent = trainer.state.budget_seconds
            deadline = started + settings.time_budget * 60 - spent
            if spent:
                left = max(0.0, settings.time_budget * 60 - spent) / 60
                log.info("time budget: %.1f of %g min spent before, %.1f left", spent / 60, settings.time_budget, left)
        training = trainer.train(deadline, on_step, clock_start=started)

    log.info("evaluating on held-out text")
    kept, eval_texts = evaluation_set(
        settings.languages,
        settings.eval_languages,
        settings.eval_texts,
        settings.parallel_sentences,
        data.held_out_user,
    )
    reference = Candidate("teacher", loaded.model, TextEncoder(loaded.tokenizer, settings.max_length))
    candidates = []
    if teacher_src is not loaded:
        candidates.append(Candidate("trim only", teacher_src.model, encoder))
    untrained = None
    if not evaluate_only:  # with --steps 0 the student is the untrained one
        untrained = initial_student().eval()
        if ffn_keep is not None:  # narrowed as training started: the same neurons, refit on the same text
            grams = None
            if settings.ffn_refit:
                scored, at = (untrained, list(range(len(layer_map)))) if init_record else (teacher_src.model, layer_map)
                grams = pruning.refit_grams(scored, at, ids, encoder.pad_id)
            pruning.prune(untrained, ffn_keep, grams)
        candidates.append(Candidate("untrained", untrained, encoder))
    candidates.append(Candidate("student", student, encoder))
    evaluation = evaluate(
        teacher_src.task,
        reference,
        candidates,
        eval_texts,
        kept,
        prefixes=prefixes,
        query_prefix=teacher_src.embedding.default_prefix if teacher_src.embedding else "",
        pooling=pooling,
        min_retention=settings.min_retention,
        device=device,
    )
    del untrained

    data.summary["tokens_per_language"] = _tokens_per_language(data, ids)
    report: dict[str, Any] = {
        "output": str(output),
        "teacher": {
            "name": loaded.provenance.get("name_or_path", source),
            "weights_sha256": loaded.provenance.get("weights_sha256", teacher_info.weights_sha256),
            "layers": teacher_info.num_layers,
            "parameters": _parameters(loaded.model),
            "targets": (
                "untrimmed teacher, original tokenization"
                if teacher_ids is not None
                else ("trimmed teacher" if teacher_src is not loaded else "teacher")
            ),
            **({"lineage": loaded.provenance["lineage"]} if "lineage" in loaded.provenance else {}),
        },
        "student": {
            "layers": len(layer_map),
            "layer_map": layer_map,
            "intermediate_size": int(student.config.intermediate_size),
            "feed_forward_pruning": ffn_report,
            "initialized_from": init_record,
            "parameters": _parameters(student),
        },
        "layer_map_scores": auto_scores,
        "recipe": settings.recipe(),
        "data": data.summary,
        "training": training,
        "trim": trim_report,
        "evaluation": evaluation,
        "environment": {
            "device": device,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "versions": _versions(),
        },
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    gate = evaluation["gate"]
    if gate["passed"] is False:
        worst = gate["worst_language"]
        value = "not measured" if worst is None else f"{worst} {gate['value']:.4f}"
        failed = (
            f"retention gate failed: worst kept language {value} < --min-retention {gate['threshold']} "
            f"({gate['metric']})"
        )
        if evaluate_only:
            raise DistillError(
                f"{failed}. Nothing was written to {output} (--steps 0: the student as it starts, untrained); "
                "train it (leave out --steps 0) or lower --min-retention",
                distill_report=report,
            )
        (work / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        raise DistillError(
            f"{failed}. Nothing was written to {output}; the trained student stays in {work}: rerun "
            "the same command with a lower --min-retention to write it without training again, or train "
            "longer (--time-budget, --steps), keep more layers, or name fewer languages",
            distill_report=report,
        )

    lineage = {
        "teacher": report["teacher"],
        "distill": {
            "layers": len(layer_map),
            "layer_map": layer_map,
            "intermediate_size": int(student.config.intermediate_size),
            "feed_forward_pruning": ffn_report,
            "initialized_from": init_record,
            "recipe": settings.recipe(),
            "data": data.summary,
            "seed": settings.seed,
            "steps": training["steps"],
            "planned_steps": training["planned_steps"],
            "stopped_by": training["stopped_by"],
            "wall_seconds": report["wall_seconds"],
            "device": device,
            "precision": precision,
            "torch": report["environment"]["versions"].get("torch"),
        },
        "trim": trim_report,
        "evaluation": evaluation,
    }
    _write_checkpoint(teacher_src, student, output, lineage, report, force)
    shutil.rmtree(work, ignore_errors=True)
    log.info("student written to %s (report: %s)", output, output / REPORT_FILE)
    return report


def choose_layer_map(
    teacher: Any, task: str, encoder: TextEncoder, texts: Sequence[str], settings: DistillSettings, pooling: str
) -> tuple[list[int], dict[str, Any]]:
    """The named map whose untrained student is closest to the teacher (mean cosine of outputs) on a few
    training texts (never held-out ones: choosing is training), and every candidate's score."""
    import torch

    from mbert_edge_export.distill.layers import encoder_layers

    total = len(encoder_layers(teacher))
    step = max(1, len(texts) // AUTO_TEXTS)
    sample = [texts[i] for i in range(0, len(texts), step)][:AUTO_TEXTS]
    ids = [x[:AUTO_LENGTH] for x in encoder.ids(sample)]
    device = next(teacher.parameters()).device

    def outputs(model: Any) -> list[torch.Tensor]:
        res: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        with torch.inference_mode():
            for b in length_batches([len(x) for x in ids]):
                batch = collate([ids[i] for i in b], encoder.pad_id, device)
                out = run(model, task, batch, pooling)
                vals = out.pooled if out.pooled is not None else out.logits
                assert vals is not None
                for row, i in enumerate(b):
                    v = vals[row] if vals.dim() == 2 else vals[row, : len(ids[i])]
                    res[i] = v.float().reshape(-1, v.shape[-1]).cpu()
        return res

    ref = outputs(teacher)
    scores: dict[str, Any] = {}
    best: tuple[float, str] | None = None
    for name in NAMED_MAPS:
        layers = named_map(name, settings.layers, total)
        student = make_student(teacher, layers)
        cand = outputs(student)
        cos = torch.cat([torch.nn.functional.cosine_similarity(a, b, dim=-1) for a, b in zip(ref, cand, strict=True)])
        score = float(cos.mean())
        scores[name] = {"layer_map": layers, "cosine_untrained": round(score, 5)}
        log.info("layer map %-12s %s: untrained cosine to the teacher %.4f", name, layers, score)
        if best is None or score > best[0]:
            best = (score, name)
        del student
    assert best is not None
    scores["chosen"] = best[1]
    return list(scores[best[1]]["layer_map"]), scores


def _write_checkpoint(
    teacher_src: Any, student: Any, output: Path, lineage: dict[str, Any], report: dict[str, Any], force: bool
) -> None:
    """Stage the checkpoint beside ``output`` and rename it into place (an existing one only with ``force``)."""
    from mbert_edge_export.sources.checkpoint import save_checkpoint

    student.cpu()
    _eager_attention(student)
    with bundle_writer.staging_dir(output) as stage:
        save_checkpoint(teacher_src, stage, model=student, tokenizer=teacher_src.tokenizer, lineage=lineage)
        (stage / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        bundle_writer.move_into_place(stage, output, force, replaceable=CHECKPOINT_MARKERS)


def _fast_attention(model: Any) -> None:
    """PyTorch's fused attention for training and evaluation (same results as eager, ~20% faster on CPU)."""
    with contextlib.suppress(Exception):
        model.set_attn_implementation("sdpa")


def _eager_attention(model: Any) -> None:
    with contextlib.suppress(Exception):
        model.set_attn_implementation("eager")


def _texts_sha256(data: TrainingData) -> str:
    h = hashlib.sha256()
    for t in data.items:
        h.update(f"{t.lang}\t{t.label}\t{t.text}\n".encode())
        if t.target_text is not None:
            h.update(f"target\t{t.target_text}\n".encode())
    return h.hexdigest()


def _tokens_per_language(data: TrainingData, ids: Sequence[Sequence[int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t, x in zip(data.items, ids, strict=True):
        out[t.lang] = out.get(t.lang, 0) + len(x)
    return dict(sorted(out.items()))


def _parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _mismatch(work: Path, saved: dict[str, Any], settings: DistillSettings) -> str:
    now = settings.fingerprint_fields()
    diff = [f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in sorted(now) if saved.get(k) != now.get(k)]
    what = (
        "; ".join(diff)
        if diff
        else (
            "the teacher's weights, the training texts or the vocabulary trim changed, or the run was started by an "
            "mbert-edge that took its targets from the trimmed teacher"
        )
    )
    return (
        f"{work} holds an unfinished run with other settings ({what}). Run the same command as before to "
        "resume it, or pass --restart to discard it"
    )


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("mbert-edge", "torch", "transformers", "tokenizers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


__all__ = [
    "PRESETS",
    "REPORT_FILE",
    "DistillError",
    "DistillSettings",
    "TeacherInfo",
    "choose_layer_map",
    "distill",
    "format_report",
    "work_dir",
]
