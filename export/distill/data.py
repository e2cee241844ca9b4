"""Training text for distillation, and the held-out text it is judged on.

Training text is the user's files (``--data``: ``.txt`` one text per line, ``.jsonl`` with ``text`` and an
optional ``label``, ``.csv`` with a ``text`` and optional ``label`` column) plus unlabeled multilingual text
from the ``dataset-build`` corpus: training paragraphs and their sentences (short and long texts, as queries
and passages come), spread over every language of the corpus with the named languages weighted up
(``kept_weight``) and no language, English included, above its share. User texts come first; when the corpus
is on they fill at most three quarters of ``max_texts``. With ``augment`` > 0 each kept language also gets that
many augmented variants per corpus text it was given (:mod:`.augment`), on top of ``max_texts``. Translation
pairs (``parallel``, :mod:`.bitext`) come on top too: each source as a text of its own, each translation as a
text whose target is the teacher's output for its source (:attr:`TrainingText.target_text`).

Evaluation text never meets training: corpus paragraphs come from :func:`corpus.held_out_paragraphs`, a
user's text that is corpus text keeps the corpus's split (:func:`corpus.split_of`) and the rest is split by
the same hash rule (about 10 % held out), and the parallel sentences of ``export/data/parallel_eval.tsv`` are
evaluation-only.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mbert_edge.bundle import sha256_file
from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from mbert_edge_export import corpus
from mbert_edge_export.distill import augment, bitext
from mbert_edge_export.distill.settings import DistillSettings, TeacherInfo
from mbert_edge_export.errors import DistillError, ExportError
from mbert_edge_export.languages import LANGUAGES
from mbert_edge_export.quantize.calibration import read_text_file

log = logging.getLogger(__name__)

USER = "user"  #: the language tag of the user's texts (their language is not known)
USER_SHARE = 0.75  #: at most this share of max_texts comes from the user's files when the corpus is on
#: no language gets more than this many times its (weighted) fair share: English has ~9x the text of others
LANGUAGE_CAP = 3.0
PARALLEL_FILE = "parallel_eval.tsv"
#: languages that are not kept are looked up on the parallel set's first this many sentences only: their
#: retention reports how a trim degrades them (0.02-0.8 of the teacher's), far from any threshold, and the full
#: set for every language would add minutes of evaluation to each ``distill`` run
NOT_KEPT_PARALLEL = 100


@dataclass
class TrainingText:
    """One training text: its language (ISO 639-1, or ``user``) and gold label id, if any."""

    text: str
    lang: str
    label: int | None = None
    #: the text whose teacher output is this text's target (a translation's source, :mod:`.bitext`); None: itself
    target_text: str | None = None


@dataclass
class TrainingData:
    """The training texts, the user's held-out texts (for evaluation) and a summary for the report."""

    items: list[TrainingText]
    held_out_user: list[TrainingText] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        """Whether any training text carries a gold label."""
        return any(t.label is not None for t in self.items)


def _label_ids(labels: list[str], teacher: TeacherInfo, path: Path) -> list[int]:
    assert teacher.labels is not None
    by_name = {name: i for i, name in teacher.labels.items()}
    out = []
    for raw in labels:
        name = raw.strip()
        if name in by_name:
            out.append(by_name[name])
        elif name.lstrip("-").isdigit() and int(name) in teacher.labels:
            out.append(int(name))
        else:
            raise DistillError(
                f"{path}: label {raw!r} is not one of the teacher's labels ({', '.join(teacher.labels.values())}); "
                "use those names (or their ids), or leave labels out"
            )
    return out


def read_user_texts(
    paths: list[Path], teacher: TeacherInfo
) -> tuple[list[TrainingText], list[TrainingText], list[dict[str, Any]]]:
    """The user's texts split into training and held-out, and a per-file summary (with SHA-256)."""
    train: list[TrainingText] = []
    held: list[TrainingText] = []
    files = []
    for path in paths:
        try:
            ts = read_text_file(Path(path))
        except ExportError as exc:
            raise DistillError(f"--data {path}: {exc}") from None
        ids: list[int | None] = [None] * len(ts.texts)
        if ts.labels:
            if teacher.task == TEXT_CLASSIFICATION and teacher.labels:
                ids = list(_label_ids(ts.labels, teacher, Path(path)))
            else:
                log.info("%s: labels ignored (gold labels are used for text classification only)", path)
        langs = getattr(ts, "langs", None) or []  # a 'lang' field or column, when the file has one
        if len(langs) != len(ts.texts):
            langs = [USER] * len(ts.texts)
        langs = [code.strip().lower() if code.strip().lower() in LANGUAGES else USER for code in langs]
        n_held = 0
        for text, label, lang in zip(ts.texts, ids, langs, strict=True):
            item = TrainingText(text, lang, label)
            # corpus text keeps the corpus's split (a held-out paragraph is judged, never trained on; a training
            # one is not judged, the corpus sample may hold it too); other text is split by its own hash
            split = corpus.split_of(text)
            if split if split is not None else corpus.is_held_out(USER, text):
                held.append(item)
                n_held += 1
            else:
                train.append(item)
        files.append(
            {
                "path": str(path),
                "sha256": sha256_file(Path(path)),
                "texts": len(ts.texts),
                "held_out": n_held,
                "labelled": bool(ts.labels) and ids[0] is not None,
            }
        )
    return train, held, files


def corpus_languages() -> dict[str, str]:
    """ISO 639-1 code -> dataset-build folder, one code per folder (:func:`corpus.split_code`: ``nb``, not ``no``)."""
    return {c: LANGUAGES[c].corpus for c in corpus.available_languages() if corpus.split_code(c) == c}


def corpus_pool(lang: str) -> list[str]:
    """Training texts of one language: each training paragraph and its sentences, without repeats."""
    out: list[str] = []
    seen: set[str] = set()
    for p in corpus.train_paragraphs(lang):
        for text in (p.text, *corpus.sentences(p.text)):
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def allocate(total: int, sizes: dict[str, int], weights: dict[str, float], cap: float = LANGUAGE_CAP) -> dict[str, int]:
    """Split ``total`` texts over languages in proportion to ``weights``, none above its pool ``sizes`` nor
    above ``cap`` times its fair share; what a full language cannot take goes to the others."""
    wall = sum(weights.values()) or 1.0
    sizes = {lang: min(n, math.ceil(cap * total * weights[lang] / wall)) for lang, n in sizes.items()}
    quota = dict.fromkeys(sizes, 0)
    active = [lang for lang in sorted(sizes) if sizes[lang] > 0]
    remaining = min(total, sum(sizes.values()))
    while active and remaining > 0:
        wsum = sum(weights[lang] for lang in active)
        share = {lang: remaining * weights[lang] / wsum for lang in active}
        full = [lang for lang in active if sizes[lang] - quota[lang] <= share[lang]]
        if full:
            for lang in full:
                remaining -= sizes[lang] - quota[lang]
                quota[lang] = sizes[lang]
                active.remove(lang)
            continue
        floors = {lang: math.floor(share[lang]) for lang in active}
        left = remaining - sum(floors.values())
        for lang in sorted(active, key=lambda x: (floors[x] - share[x], x))[:left]:
            floors[lang] += 1
        for lang in active:
            quota[lang] += floors[lang]
        break
    return quota


def _sample(pool: list[str], n: int, seed: str) -> list[str]:
    """``n`` texts of ``pool``: without repeats, or whole shuffled passes (then a sample) when ``n`` is larger."""
    rng = random.Random(seed)
    out: list[str] = []
    while n - len(out) >= len(pool):
        out += rng.sample(pool, len(pool))
    return out + rng.sample(pool, n - len(out))


def build_training_data(settings: DistillSettings, teacher: TeacherInfo) -> TrainingData:
    """Read the user's files and sample the corpus; raise :class:`DistillError` when there is no text."""
    user_train, user_held, files = read_user_texts(list(settings.data_files), teacher)
    rng = random.Random(settings.seed)
    cap = settings.max_texts
    if settings.corpus:
        cap = max(1, int(settings.max_texts * USER_SHARE)) if user_train else 0
    if len(user_train) > cap:
        log.info("using %d of your %d training texts (max_texts %d)", cap, len(user_train), settings.max_texts)
        user_train = [user_train[i] for i in sorted(rng.sample(range(len(user_train)), cap))]
    items = list(user_train)
    corpus_counts: dict[str, int] = {}
    augmented: dict[str, int] = {}
    missing: list[str] = []
    if settings.corpus:
        langs = corpus_languages()
        kept = {corpus.split_code(code) for code in settings.languages or ()}  # "no" reads "nb"'s folder
        missing = sorted(kept - set(langs))
        pools = {code: corpus_pool(code) for code in langs}
        weights = {code: settings.kept_weight if code in kept else 1.0 for code in langs}
        # a kept language may repeat its text up to kept_weight times when its pool is smaller than its share
        room = {c: len(p) * (math.ceil(weights[c]) if c in kept else 1) for c, p in pools.items()}
        quota = allocate(settings.max_texts - len(items), room, weights)
        for code in sorted(pools):
            n = quota.get(code, 0)
            if n:
                items += [TrainingText(t, code) for t in _sample(pools[code], n, f"{settings.seed}:{code}")]
                corpus_counts[code] = n
        for code in sorted(kept & set(corpus_counts)) if settings.augment > 0 else ():
            made = augment.variants(
                [p.text for p in corpus.train_paragraphs(code)],
                round(settings.augment * corpus_counts[code]),
                code,
                str(settings.seed),
                avoid=set(pools[code]),
            )
            items += [TrainingText(t, code) for t in made]
            augmented[code] = len(made)
        if missing:
            log.warning(
                "the corpus has no text in %s: the student learns those languages only from --data", ", ".join(missing)
            )
    pair_files: list[dict[str, Any]] = []
    applies = teacher.task == FEATURE_EXTRACTION and settings.hidden_weight == 0
    pair_paths = bitext.files_for(settings.parallel, settings.languages, settings.builtin_pairs, applies)
    if pair_paths:
        evaluation = {s for sents in parallel_set().values() for s in sents.values()}
        pairs, pair_files = bitext.read_all(pair_paths, evaluation)
        items += [TrainingText(p.text, p.lang, target_text=p.target_text) for p in pairs] * settings.parallel_weight
    if not items:
        where = ", ".join(str(p) for p in settings.data_files) or "the corpus"
        raise DistillError(f"no training text in {where}: give --data files with text, or use the corpus")
    counts = Counter(t.lang for t in items)
    summary = {
        "texts": len(items),
        "user_files": files,
        "user_texts": len(user_train),
        "user_held_out": len(user_held),
        "labelled_texts": sum(t.label is not None for t in items),
        "corpus": (
            {
                "name": "dataset-build",
                "split": f"train paragraphs and their sentences; {corpus.HELD_OUT_PERCENT}% of paragraphs held out",
                "texts_per_language": corpus_counts,
                "kept_weight": settings.kept_weight,
                "languages_without_text": missing,
                "augmented_per_language": augmented,
            }
            if settings.corpus
            else None
        ),
        "texts_per_language": dict(sorted(counts.items())),
        "parallel": pair_files or None,
    }
    return TrainingData(items, user_held, summary)


def held_out_texts(langs: list[str], per_language: int) -> dict[str, list[str]]:
    """Up to ``per_language`` held-out corpus paragraphs per language, spread over the language's files."""
    out: dict[str, list[str]] = {}
    available = set(corpus.available_languages())
    for lang in langs:
        if lang not in available:
            continue
        paras = corpus.held_out_paragraphs(lang)  # split as its folder is in training ("no" as "nb")
        if len(paras) > per_language:
            paras = [paras[i * len(paras) // per_language] for i in range(per_language)]
        if paras:
            out[lang] = [p.text for p in paras]
    return out


def parallel_set(limit: int | None = None) -> dict[str, dict[str, str]]:
    """The evaluation-only parallel sentences: language -> sentence id -> sentence (the first ``limit`` ids)."""
    text = resources.files("mbert_edge_export").joinpath("data", PARALLEL_FILE).read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ExportError(f"{PARALLEL_FILE}:{n}: expected id<TAB>lang<TAB>sentence")
        sid, lang, sentence = (x.strip() for x in parts)
        if sid == "id" and lang == "lang":
            continue  # header row
        if sid not in order:
            order.append(sid)
        out.setdefault(lang, {})[sid] = sentence
    if limit is not None:
        keep = set(order[:limit])
        out = {lang: {k: v for k, v in d.items() if k in keep} for lang, d in out.items()}
    return out


def evaluation_parallel(
    languages: Sequence[str], kept: Sequence[str], limit: int | None = None
) -> dict[str, dict[str, str]]:
    """The parallel sentences ``distill`` judges ``languages`` on: English (the pivot) and the kept languages on
    the first ``limit`` sentences (all by default), the others on at most :data:`NOT_KEPT_PARALLEL`."""
    full = parallel_set(limit)
    first = set(list(full.get("en", {}))[:NOT_KEPT_PARALLEL])  # the pivot's ids in file order
    wanted = set(languages) | set(kept) | {"en"}
    return {
        lang: sents if lang in kept or lang == "en" else {k: v for k, v in sents.items() if k in first}
        for lang, sents in full.items()
        if lang in wanted
    }
