"""What a trim changed: tokenization before and after on held-out text, per language, and model outputs.

A text is *identical* when the trimmed tokenizer gives exactly the original pieces (original ids mapped to
their new ids). On such text the trimmed model's outputs equal the original's, since the kept embedding
rows are bit-identical; :func:`output_difference` measures that. Other text re-segments into more, smaller
pieces (Latin-script languages) or, for scripts whose characters were not kept, into unknown tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer

if TYPE_CHECKING:
    import torch

MAX_EXCEPTIONS = 5


def compare_tokenization(old: Tokenizer, new: Tokenizer, kept: Sequence[int], texts: Sequence[str]) -> dict[str, Any]:
    """Share of ``texts`` tokenized identically, length ratio and unknown tokens per 1,000, with examples."""
    new_id = {o: n for n, o in enumerate(kept)}
    unk = new.token_to_id("<unk>")
    if unk is None:
        unk = new.token_to_id("[UNK]")
    identical, old_len, new_len, unks, kept_tokens = 0, 0, 0, 0, 0
    exceptions: list[dict[str, Any]] = []
    for text, eo, en in zip(
        texts,
        old.encode_batch(list(texts), add_special_tokens=False),
        new.encode_batch(list(texts), add_special_tokens=False),
        strict=True,
    ):
        mapped = [new_id.get(i, -1) for i in eo.ids]
        old_len += len(mapped)
        new_len += len(en.ids)
        kept_tokens += sum(1 for i in mapped if i >= 0)
        unks += sum(1 for i in en.ids if i == unk)
        if mapped == en.ids:
            identical += 1
        elif len(exceptions) < MAX_EXCEPTIONS:
            at = next((k for k, (a, b) in enumerate(zip(mapped, en.ids, strict=False)) if a != b), 0)
            exceptions.append(
                {"text": text[:120], "original": eo.tokens[at : at + 3], "trimmed": en.tokens[at : at + 3]}
            )
    n = len(texts)
    return {
        "texts": n,
        "identical": round(identical / n, 5) if n else None,
        "original_tokens_kept": round(kept_tokens / old_len, 5) if old_len else None,
        "length_ratio": round(new_len / old_len, 4) if old_len else None,
        "unk_per_1k_tokens": round(1000 * unks / new_len, 2) if new_len else None,
        "exceptions": exceptions,
    }


def identical_texts(old: Tokenizer, new: Tokenizer, kept: Sequence[int], texts: Sequence[str]) -> list[str]:
    """The texts whose tokenization the trim left unchanged."""
    new_id = {o: n for n, o in enumerate(kept)}
    out = []
    for text, eo, en in zip(texts, old.encode_batch(list(texts)), new.encode_batch(list(texts)), strict=True):
        if [new_id.get(i, -1) for i in eo.ids] == en.ids:
            out.append(text)
    return out


def output_difference(
    old_model: torch.nn.Module,
    new_model: torch.nn.Module,
    old: Tokenizer,
    new: Tokenizer,
    texts: Sequence[str],
    max_length: int = 128,
) -> float:
    """Max abs difference of the two models' first outputs (token states or logits) on ``texts``."""
    import torch

    diff = 0.0
    for start in range(0, len(texts), 16):
        chunk = list(texts[start : start + 16])
        outs = []
        for model, tok in ((old_model, old), (new_model, new)):
            encs = tok.encode_batch(chunk)
            width = min(max(len(e.ids) for e in encs), max_length)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, e in enumerate(encs):
                k = min(len(e.ids), width)
                ids[row, :k] = torch.tensor(e.ids[:k])
                mask[row, :k] = 1
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=mask)
            outs.append((out[0] * mask.unsqueeze(-1) if out[0].dim() == 3 else out[0]).float())
        diff = max(diff, float((outs[0] - outs[1]).abs().max()))
    return diff
