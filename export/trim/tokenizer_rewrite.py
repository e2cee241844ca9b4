"""Rewrite a ``tokenizer.json`` to keep only some of its pieces, in their original order and with their scores.

Unigram (XLM-R, e5) and WordPiece (M-BERT) are supported. Kept pieces keep their relative order, so the
new id of a piece is its rank among the kept ids; the unknown token, added tokens and the post-processor's
special tokens are remapped to their new ids. Why tokenization does not change on text whose pieces were
all kept:

* Unigram: Viterbi finds the best-scoring segmentation over the pieces in the vocabulary. The original best
  path is still available and every other path of the smaller vocabulary was available before, so it is
  still the best (scores are unchanged).
* WordPiece: greedy longest-match-first. At every position the original longest match is kept, and no
  longer piece can appear by removing pieces, so every step chooses as before.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Tokenizer

from mbert_edge_export.errors import ExportError

SUPPORTED = ("Unigram", "WordPiece")


def model_type(tok: Tokenizer) -> str:
    """The tokenizer's model type, e.g. ``"Unigram"`` or ``"WordPiece"``."""
    return str(json.loads(tok.to_str())["model"]["type"])


def pieces(tok: Tokenizer) -> list[str]:
    """Every piece by id (the model's vocabulary and added tokens)."""
    size = tok.get_vocab_size(with_added_tokens=True)
    return [tok.id_to_token(i) or "" for i in range(size)]


def special_ids(tok: Tokenizer) -> set[int]:
    """Ids that must survive any trim: added tokens, the post-processor's special tokens, unknown and padding."""
    d = json.loads(tok.to_str())
    ids = {int(t["id"]) for t in d.get("added_tokens") or []}
    ids |= set(_post_processor_ids(d.get("post_processor")))
    model = d["model"]
    if model["type"] == "Unigram" and model.get("unk_id") is not None:
        ids.add(int(model["unk_id"]))
    elif model.get("unk_token") is not None and tok.token_to_id(model["unk_token"]) is not None:
        ids.add(int(tok.token_to_id(model["unk_token"])))
    for name in ("<pad>", "[PAD]", "<s>", "</s>", "[CLS]", "[SEP]", "<mask>", "[MASK]"):
        i = tok.token_to_id(name)
        if i is not None:
            ids.add(int(i))
    return ids


def _post_processor_ids(pp: dict[str, Any] | None) -> list[int]:
    if not pp:
        return []
    if pp["type"] == "Sequence":
        return [i for sub in pp["processors"] for i in _post_processor_ids(sub)]
    if pp["type"] == "TemplateProcessing":
        return [int(i) for spec in pp["special_tokens"].values() for i in spec["ids"]]
    if pp["type"] in ("BertProcessing", "RobertaProcessing"):
        return [int(pp["sep"][1]), int(pp["cls"][1])]
    return []


def _remap_post_processor(pp: dict[str, Any] | None, new_id: dict[int, int]) -> None:
    if not pp:
        return
    if pp["type"] == "Sequence":
        for sub in pp["processors"]:
            _remap_post_processor(sub, new_id)
    elif pp["type"] == "TemplateProcessing":
        for spec in pp["special_tokens"].values():
            spec["ids"] = [new_id[int(i)] for i in spec["ids"]]
    elif pp["type"] in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            pp[key] = [pp[key][0], new_id[int(pp[key][1])]]


def trimmed_tokenizer(tok: Tokenizer, kept: list[int]) -> Tokenizer:
    """A tokenizer with only the pieces ``kept`` (sorted old ids), in order, everything else remapped.

    Every id of :func:`special_ids` must be in ``kept``.
    """
    if kept != sorted(set(kept)):
        raise ValueError("kept ids must be sorted and unique")
    missing = special_ids(tok) - set(kept)
    if missing:
        raise ExportError(f"a trim must keep the special tokens; ids {sorted(missing)} are missing")
    d = json.loads(tok.to_str())
    model = d["model"]
    if model["type"] not in SUPPORTED:
        raise ExportError(
            f"vocabulary trimming supports {' and '.join(SUPPORTED)} tokenizers, not {model['type']}; "
            "export without --languages"
        )
    new_id = {old: new for new, old in enumerate(kept)}
    if model["type"] == "Unigram":
        vocab = model["vocab"]
        model["vocab"] = [vocab[i] for i in kept if i < len(vocab)]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[int(model["unk_id"])]
    else:  # WordPiece: token -> id
        by_id = {int(i): t for t, i in model["vocab"].items()}
        model["vocab"] = {by_id[i]: new_id[i] for i in kept if i in by_id}
    for added in d.get("added_tokens") or []:
        added["id"] = new_id[int(added["id"])]
    _remap_post_processor(d.get("post_processor"), new_id)
    if d.get("padding"):
        pad = tok.token_to_id(d["padding"].get("pad_token", ""))
        if pad is not None:
            d["padding"]["pad_id"] = new_id[pad]
    return Tokenizer.from_str(json.dumps(d, ensure_ascii=False))
