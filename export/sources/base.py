"""What every model source hands to the export pipeline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbert_edge.manifest import EmbeddingSpec
from mbert_edge_export.errors import SourceError

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


def read_json(path: Path) -> Any:
    """A checkpoint's JSON file (config, tokenizer config, lineage); a :class:`SourceError` names the file and
    the place when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix it"
        ) from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
