"""Keep only some rows of a model's word-embedding table (the model side of a vocabulary trim)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def slice_word_embeddings(model: torch.nn.Module, kept: list[int]) -> torch.nn.Module:
    """A copy of ``model`` whose word-embedding rows are ``kept`` (old ids, sorted), bit-identical, re-indexed.

    Rows of the table beyond the tokenizer's vocabulary (some checkpoints pad the table) are dropped.
    ``config.vocab_size`` and ``config.pad_token_id`` follow the new indices.
    """
    import torch

    out = copy.deepcopy(model)
    old = out.get_input_embeddings()
    index = torch.tensor(kept, dtype=torch.long)
    new = torch.nn.Embedding(len(kept), old.embedding_dim, padding_idx=None, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight.index_select(0, index))
    out.set_input_embeddings(new)
    pad = getattr(out.config, "pad_token_id", None)
    new_id = {o: n for n, o in enumerate(kept)}
    out.config.pad_token_id = new_id.get(pad, 0) if pad is not None else None
    out.config.vocab_size = len(kept)
    return out
