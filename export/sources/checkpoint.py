"""Write a loaded (and possibly trimmed or distilled) model back out as an ordinary Hugging Face checkpoint.

``mbert-edge distill`` ends with such a checkpoint, which ``export`` then takes as its source. The
checkpoint carries everything :mod:`~mbert_edge_export.sources.huggingface` reads back: ``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``, the sentence-transformers files that
set pooling, normalization, prompts and max length, and ``mbert_edge_lineage.json``: where the model came
from (teacher checksum, vocabulary trim, layer map, recipe), which export copies into the bundle manifest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbert_edge.manifest import FEATURE_EXTRACTION
from mbert_edge_export.sources.base import LoadedSource, read_json

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

LINEAGE_FILE = "mbert_edge_lineage.json"


def read_lineage(checkpoint: Path) -> dict[str, Any] | None:
    """The lineage record of a checkpoint written by :func:`save_checkpoint`, or None."""
    p = checkpoint / LINEAGE_FILE
    return read_json(p) if p.is_file() else None


def save_checkpoint(
    source: LoadedSource,
    out_dir: Path,
    model: torch.nn.Module | None = None,
    tokenizer: Tokenizer | None = None,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (default: ``source.model``) with ``tokenizer`` (default: ``source.tokenizer``) and the
    task, labels, embedding settings and max length of ``source`` into ``out_dir``; return ``out_dir``."""
    model = source.model if model is None else model
    tokenizer = source.tokenizer if tokenizer is None else tokenizer
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tok_cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": source.max_length}
    _write_json(out_dir / "tokenizer_config.json", tok_cfg)
    if source.task == FEATURE_EXTRACTION and source.embedding is not None:
        spec = source.embedding
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if spec.normalize:
            modules.append(
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            )
            (out_dir / "2_Normalize").mkdir(exist_ok=True)
        _write_json(out_dir / "modules.json", modules)
        (out_dir / "1_Pooling").mkdir(exist_ok=True)
        _write_json(
            out_dir / "1_Pooling" / "config.json",
            {
                "word_embedding_dimension": spec.dim,
                "pooling_mode_mean_tokens": spec.pooling == "mean",
                "pooling_mode_cls_token": spec.pooling == "cls",
            },
        )
        _write_json(out_dir / "sentence_bert_config.json", {"max_seq_length": source.max_length})
        default_name = next((k for k, v in spec.prefixes.items() if v == spec.default_prefix and v), None)
        _write_json(
            out_dir / "config_sentence_transformers.json",
            {"prompts": spec.prefixes, "default_prompt_name": default_name},
        )
    if lineage is not None:
        _write_json(out_dir / LINEAGE_FILE, lineage)
    log.info("checkpoint written to %s", out_dir)
    return out_dir


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
