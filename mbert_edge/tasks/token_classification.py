"""Token classification: per-token scores to word-level entities, as transformers'
``TokenClassificationPipeline(aggregation_strategy="simple")`` does.

Adjacent tokens whose predicted tags match (``B-X`` starts a new entity, ``I-X`` or a bare ``X`` continues
one) are merged; the entity's score is the mean of its tokens' scores; ``start``/``end`` are character
offsets into the original text; entities tagged ``O`` are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

IGNORED_LABELS = ("O",)


def _tag(label: str) -> tuple[str, str]:
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def aggregate_simple(
    text: str,
    scores: np.ndarray,
    token_ids: Sequence[int],
    tokens: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    special_mask: Sequence[int],
    labels: Mapping[int, str],
    decode: Callable[[Sequence[str]], str],
    unk_id: int | None,
) -> list[dict[str, Any]]:
    """Group one text's token predictions into entities.

    ``scores`` is (tokens, labels) after softmax; the other sequences are per token as the tokenizer gave
    them; ``decode`` joins token strings into a word (the tokenizer's decoder).
    """
    per_token: list[dict[str, Any]] = []
    for i, token_scores in enumerate(scores):
        if special_mask[i]:
            continue
        start, end = offsets[i]
        word = text[start:end] if token_ids[i] == unk_id else tokens[i]
        best = int(token_scores.argmax())
        per_token.append(
            {"entity": labels[best], "score": float(token_scores[best]), "word": word, "start": start, "end": end}
        )

    groups: list[list[dict[str, Any]]] = []
    for ent in per_token:
        if groups:
            bi, tag = _tag(ent["entity"])
            _, last_tag = _tag(groups[-1][-1]["entity"])
            if tag == last_tag and bi != "B":
                groups[-1].append(ent)
                continue
        groups.append([ent])

    entities = []
    for group in groups:
        name = group[0]["entity"].split("-", 1)[-1]
        if name in IGNORED_LABELS:
            continue
        entities.append(
            {
                "entity_group": name,
                "score": float(np.mean([e["score"] for e in group])),
                "word": decode([e["word"] for e in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
        )
    return entities
