"""Translation pairs for multilingual distillation: the student reads a translation, the teacher its source.

Multilingual knowledge distillation (Reimers and Gurevych 2020) trains a student on parallel sentences with two
targets from the teacher's vector of the source sentence: the student's vector of the source, and the
student's vector of its translation. The second is what cross-lingual retrieval asks for (a sentence and its
translation near each other); imitating the teacher on each language's own text only gets there through the
teacher. ``distill --parallel FILE`` adds such pairs to the training text: every translation becomes a training
text whose target is the teacher's vector of its source (:attr:`Pair.target_text`), every source an ordinary
training text.

A file is tab-separated, UTF-8, ``#`` lines are comments; its first other line names the columns' languages
(ISO 639-1), the first column is the source::

    en<TAB>de
    The train was late again this morning.<TAB>Der Zug hatte heute Morgen wieder Verspätung.

More columns are more translations of the same source; an empty cell is skipped. ``builtin`` names the project's
own pairs (``export/data/bitext/``: English with each of de, fr, es, ru, zh, ar and hi, about 600 pairs per
language, written and translated for this project by an AI model; see their headers), of which a run reads the
files of its kept languages (all of them without ``--languages``); the ``default`` preset adds them by itself
for sentence-embedding teachers (``builtin_pairs``). No pair may hold a sentence of the evaluation set
(``parallel_eval.tsv``): such a pair is dropped with a warning, so that retrieval stays judged on text never
trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mbert_edge.bundle import sha256_file
from mbert_edge_export.errors import DistillError
from mbert_edge_export.languages import LANGUAGES

log = logging.getLogger(__name__)

BUILTIN = "builtin"  #: the name that stands for the project's own pairs
BUILTIN_DIR = "bitext"  #: their folder under ``mbert_edge_export/data``


@dataclass(frozen=True)
class Pair:
    """One training text from a pair file: the text the student reads, its language, and the text whose
    teacher vector is its target (the source sentence; None for a source itself, which is its own target)."""

    text: str
    lang: str
    target_text: str | None = None


def builtin_files(languages: Sequence[str] | None = None) -> list[Path]:
    """The project's pair files, ``en-XX.tsv``; with ``languages``, those whose translation language is one of them."""
    folder = resources.files("mbert_edge_export").joinpath("data", BUILTIN_DIR)
    files = sorted(Path(str(folder)).glob("en-*.tsv"))
    if languages is not None:
        files = [f for f in files if f.stem.split("-", 1)[1] in set(languages)]
    return files


def resolve(specs: Sequence[str | Path], languages: Sequence[str] | None) -> list[Path]:
    """The files ``--parallel`` names: ``builtin`` expands to :func:`builtin_files` of ``languages``."""
    out: list[Path] = []
    for spec in specs:
        if str(spec) == BUILTIN:
            out += builtin_files(languages)
        else:
            out.append(Path(spec))
    return list(dict.fromkeys(out))


def files_for(
    specs: Sequence[str | Path], languages: Sequence[str] | None, builtin_pairs: bool, applies: bool
) -> list[Path]:
    """The pair files a run reads: ``specs`` (``--parallel``, :func:`resolve`d), and with ``builtin_pairs`` (the
    ``default`` preset's implicit choice) the project's files of ``languages`` too, where pairs ``applies`` (a
    sentence-embedding teacher without per-token losses; elsewhere the implicit choice is skipped, logged)."""
    files = resolve(specs, languages)
    if builtin_pairs:
        if applies:
            files = list(dict.fromkeys([*builtin_files(languages), *files]))
        else:
            log.info("the project's translation pairs are for sentence-embedding students: not used here")
    return files


def check_files(specs: Sequence[str | Path]) -> None:
    """Fail fast (before anything slow) on a ``--parallel`` file that is missing or has a bad header."""
    for spec in specs:
        if str(spec) == BUILTIN:
            continue
        path = Path(spec)
        if not path.is_file():
            raise DistillError(f"--parallel {path}: no such file (a .tsv of translation pairs, or 'builtin')")
        read_header(path)


def read_header(path: Path, lines: Sequence[str] | None = None) -> list[str]:
    """The language codes of ``path``'s header line (from ``lines``, its :func:`_lines`, when given);
    :class:`DistillError` when it is not one."""
    for line in _lines(path) if lines is None else lines:
        codes = [c.strip().lower() for c in line.split("\t")]
        bad = [c for c in codes if c not in LANGUAGES]
        if len(codes) < 2 or bad:
            raise DistillError(
                f"--parallel {path}: the first line (after # comments) must name the columns' languages, "
                f"tab-separated ISO 639-1 codes, the source first (e.g. 'en<TAB>de'); got {line[:80]!r}"
            )
        return codes
    raise DistillError(f"--parallel {path}: the file is empty; give a header line and translation pairs")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DistillError(f"--parallel {path}: not UTF-8 text") from None
    return [ln.rstrip("\r") for ln in text.split("\n") if ln.strip() and not ln.startswith("#")]


def read_pairs(path: Path, evaluation: set[str]) -> tuple[list[Pair], dict[str, Any]]:
    """The training texts of one pair file, and its summary (languages, pairs per language, dropped rows).

    A row that holds a sentence of ``evaluation`` is dropped whole (warned), as is a row without a source.
    """
    lines = _lines(path)
    codes = read_header(path, lines)
    out: list[Pair] = []
    per_lang: dict[str, int] = {}
    dropped_eval = 0
    for n, line in enumerate(lines[1:], 2):
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) > len(codes):
            raise DistillError(
                f"--parallel {path}: row {n} (not counting comments) has {len(cells)} columns, the header "
                f"{len(codes)} ({', '.join(codes)})"
            )
        cells += [""] * (len(codes) - len(cells))
        source, translations = cells[0], cells[1:]
        if not source or not any(translations):
            continue
        if any(c in evaluation for c in cells if c):
            dropped_eval += 1
            continue
        out.append(Pair(source, codes[0]))
        for code, text in zip(codes[1:], translations, strict=True):
            if text:
                out.append(Pair(text, code, target_text=source))
                per_lang[code] = per_lang.get(code, 0) + 1
    if dropped_eval:
        log.warning("%s: %d pair(s) hold evaluation sentences (parallel_eval.tsv), left out", path, dropped_eval)
    if not per_lang:
        raise DistillError(f"--parallel {path}: no translation pairs in it (a source and at least one translation)")
    summary = {
        "path": str(path),
        "sha256": sha256_file(path),
        "source_language": codes[0],
        "pairs_per_language": dict(sorted(per_lang.items())),
        "left_out_as_evaluation_text": dropped_eval,
    }
    return out, summary


def read_all(paths: Sequence[Path], evaluation: set[str]) -> tuple[list[Pair], list[dict[str, Any]]]:
    """:func:`read_pairs` over ``paths``; a source sentence shared by two files is trained on once."""
    items: list[Pair] = []
    summaries = []
    seen: set[tuple[str, str, str | None]] = set()
    for path in paths:
        pairs, summary = read_pairs(path, evaluation)
        for p in pairs:
            key = (p.text, p.lang, p.target_text)
            if key not in seen:
                seen.add(key)
                items.append(p)
        summaries.append(summary)
    return items, summaries


__all__ = [
    "BUILTIN",
    "Pair",
    "builtin_files",
    "check_files",
    "files_for",
    "read_all",
    "read_header",
    "read_pairs",
    "resolve",
]
