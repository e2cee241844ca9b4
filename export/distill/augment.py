"""Augmented training text: new inputs made from a language's own training paragraphs.

A kept language with little corpus text (Hindi has ~860 training texts in ``dataset-build``, English ~9,900)
is otherwise seen as the same few hundred inputs again and again. The student learns from the teacher's answers,
which exist for any input, so new inputs built from the same paragraphs add signal (TinyBERT's data
augmentation, Jiao et al. 2020, does this with masked-LM word swaps; these are cheaper):

* ``window``: a run of consecutive sentences of a paragraph, shorter than the paragraph;
* ``pair``: a sentence of one paragraph followed by a sentence of another paragraph of the language (two
  topics in one text: the teacher's soft answer on it is informative where a hard label would not be);
* ``drop``: the paragraph with about one word in eight left out (languages written with spaces only).

Everything comes from training paragraphs; a paragraph with a sentence that also belongs to a held-out
paragraph is not used at all, so no evaluated text reaches training. Variants are drawn by a seeded generator:
same seed, same texts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mbert_edge_export import corpus

KINDS = ("window", "pair", "drop")
#: languages written without spaces between words: no word drop, sentences joined without a space
NO_SPACES = frozenset({"zh", "ja", "th", "lo", "km", "my"})
DROP_SHARE = 0.125  #: share of words a ``drop`` variant leaves out
MIN_WORDS_TO_DROP = 6


def _usable(text: str) -> bool:
    """Whether no sentence of ``text`` is also held-out text (a sentence can occur in two paragraphs)."""
    return not any(corpus.split_of(s) is True for s in corpus.sentences(text))


def variants(paragraphs: Sequence[str], n: int, lang: str, seed: str, avoid: set[str] | None = None) -> list[str]:
    """``n`` distinct augmented texts from ``paragraphs`` (training paragraphs of ``lang``), none equal to a
    paragraph, to one of its sentences or to a text in ``avoid``; fewer when the paragraphs cannot make more.

    The kinds take turns (window, pair, drop) where a paragraph allows them.
    """
    if n <= 0 or not paragraphs:
        return []
    rng = random.Random(f"augment:{seed}:{lang}")
    joiner = "" if lang in NO_SPACES else " "
    taken = set(avoid or ()) | set(paragraphs)
    paragraphs = [p for p in paragraphs if _usable(p)]
    split = [corpus.sentences(p) for p in paragraphs]
    taken |= {s for ss in split for s in ss}
    with_sentences = [i for i, ss in enumerate(split) if ss]
    windowed = [i for i in with_sentences if len(split[i]) >= 3]  # paragraphs a shorter run can come from
    out: list[str] = []
    attempts = 0
    while len(out) < n and attempts < 20 * n + 100:
        attempts += 1
        kind = KINDS[len(out) % len(KINDS)] if attempts <= 2 * n else rng.choice(KINDS)
        text = _one(kind, paragraphs, split, with_sentences, windowed, rng, lang, joiner)
        if text and text not in taken:
            taken.add(text)
            out.append(text)
    return out


def _one(
    kind: str,
    paragraphs: Sequence[str],
    split: list[list[str]],
    with_sentences: list[int],
    windowed: list[int],
    rng: random.Random,
    lang: str,
    joiner: str,
) -> str | None:
    if kind == "window":
        if not windowed:
            return None
        ss = split[rng.choice(windowed)]
        size = rng.randint(2, len(ss) - 1)
        start = rng.randint(0, len(ss) - size)
        return joiner.join(ss[start : start + size])
    if kind == "pair":
        if len(with_sentences) < 2:
            return None
        a, b = rng.sample(with_sentences, 2)
        return joiner.join((rng.choice(split[a]), rng.choice(split[b])))
    if lang in NO_SPACES:
        return None
    words = rng.choice(paragraphs).split()
    if len(words) < MIN_WORDS_TO_DROP:
        return None
    k = max(1, round(DROP_SHARE * len(words)))
    gone = set(rng.sample(range(len(words)), k))
    return " ".join(w for i, w in enumerate(words) if i not in gone)


__all__ = ["KINDS", "variants"]
