"""What every model source hands to the export pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mbert_edge.manifest import EmbeddingSpec

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer


@dataclass
class LoadedSource:
    """A model in PyTorch (eval mode, eager attention), its fast tokenizer, its task and where it came from."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    task: str
    max_length: int
    labels: dict[int, str] | None = None
    score_function: str | None = None
    embedding: EmbeddingSpec | None = None
    #: name_or_path, kind, architecture, weights_sha256, ... (goes into manifest["source"])
    provenance: dict[str, Any] = field(default_factory=dict)
    #: what the tokenizer check found when the fast tokenizer was converted (goes into the fidelity report)
    tokenizer_check: dict[str, Any] | None = None
