"""Tokenize, batch and run teacher and student the same way: the source's own tokenizer, per-batch padding,
the runtime's pooling (mean or CLS, then L2 norm) for embedding models.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

_PAD_CANDIDATES = ("[PAD]", "<pad>", "<PAD>")
#: at most this many padded tokens per forward pass in inference (teacher pass, evaluation)
INFERENCE_TOKENS = 4096


class TextEncoder:
    """A private copy of a source's tokenizer, truncating at ``max_length`` (special tokens included)."""

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = next((i for t in _PAD_CANDIDATES if (i := self.tokenizer.token_to_id(t)) is not None), 0)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def ids_and_spans(self, texts: Sequence[str]) -> tuple[list[list[int]], list[str]]:
        """Token ids per text, and the part of each text those ids cover: the text cut after its last
        (non-special) token when truncation at ``max_length`` may have dropped the rest, else the whole text."""
        ids, spans = [], []
        for text, e in zip(texts, self.tokenizer.encode_batch(list(texts)), strict=True):
            ids.append(e.ids)
            ends = [end for (_, end), special in zip(e.offsets, e.special_tokens_mask, strict=True) if not special]
            spans.append(text[: max(ends)] if len(e.ids) >= self.max_length and ends else text)
        return ids, spans

    def ids_and_words(self, texts: Sequence[str]) -> list[tuple[list[int], list[int | None]]]:
        """Token ids and the word index of each token (None for special tokens) per text."""
        return [(e.ids, list(e.word_ids)) for e in self.tokenizer.encode_batch(list(texts))]


def collate(ids: Sequence[Sequence[int]], pad_id: int, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Pad token id lists to the longest of the batch: ``input_ids``, ``attention_mask``, ``token_type_ids``."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[row, : len(x)] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": mask.to(device),
        "token_type_ids": torch.zeros_like(input_ids).to(device),
    }


def length_batches(
    lengths: Sequence[int], max_tokens: int = INFERENCE_TOKENS, max_batch: int = 64
) -> Iterator[list[int]]:
    """Indices grouped by similar length (longest first), each group at most ``max_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0]] if batch else lengths[i]
        if batch and ((len(batch) + 1) * width > max_tokens or len(batch) >= max_batch):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vectors from token states: masked mean or the first token (not normalized)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@dataclass
class ModelOutputs:
    """What distillation compares: the pooled sentence vector or the logits, and optionally hidden states."""

    pooled: torch.Tensor | None = None  # (B, H), not normalized
    logits: torch.Tensor | None = None  # (B, C) or (B, T, C)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, then one per layer


def run(
    model: torch.nn.Module, task: str, batch: dict[str, torch.Tensor], pooling: str = "mean", hidden: bool = False
) -> ModelOutputs:
    """Forward ``batch`` through ``model`` for ``task``."""
    kwargs: dict[str, Any] = {"output_hidden_states": True} if hidden else {}
    out = model(**batch, **kwargs)
    # float32 outputs whatever the forward ran in (bf16 autocast): pooling and losses in full precision
    hs = tuple(h.float() for h in out.hidden_states) if hidden else None
    if task == FEATURE_EXTRACTION:
        last = out.last_hidden_state.float()
        return ModelOutputs(pooled=pool(last, batch["attention_mask"], pooling), hidden_states=hs)
    if task in (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION):
        return ModelOutputs(logits=out.logits.float(), hidden_states=hs)
    raise ValueError(f"unknown task {task}")


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
