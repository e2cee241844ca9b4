"""Hugging Face checkpoints: a local directory, or a hub id already in the local cache (never downloaded).

The task comes from the architecture in ``config.json`` (``*ForSequenceClassification``,
``*ForTokenClassification``, or a bare encoder for sentence embeddings) unless given. Sentence-transformers
files (``modules.json``, ``1_Pooling/config.json``, ``config_sentence_transformers.json``,
``sentence_bert_config.json``) set pooling, normalization, prompts and max length. Weights load from
safetensors when present; ``pytorch_model.bin`` goes through ``torch.load(weights_only=True)`` (transformers'
default), so no pickle code ever runs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from mbert_edge.manifest import FEATURE_EXTRACTION, TASKS, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION, EmbeddingSpec
from mbert_edge_export import samples
from mbert_edge_export import tokenizer as tokenizer_conversion
from mbert_edge_export.errors import SourceError
from mbert_edge_export.sources.base import LoadedSource, read_json
from mbert_edge_export.sources.checkpoint import read_lineage

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_UNBOUNDED = 10**6  # tokenizer_config's "no limit" values are huge ints


def resolve(spec: str) -> Path:
    """A checkpoint directory for ``spec``: an existing path, or a hub id found in the local HF cache."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise SourceError(f"{spec} is a file; pass the checkpoint directory that holds config.json")
    if spec.count("/") > 1 or spec.startswith((".", "/", "~")):
        raise SourceError(f"no checkpoint directory at {spec}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception as exc:
        raise SourceError(
            f"{spec!r} is neither a local directory nor a model in the local Hugging Face cache, and export never "
            "downloads. Download it where a hub is reachable (`hf download {spec}`) and copy the cache or the "
            "folder here, then pass that folder".replace("{spec}", spec)
        ) from exc


def weights_sha256(checkpoint: Path) -> str:
    """SHA-256 over the checkpoint's weight files (sharded files included, in name order)."""
    files = sorted(p for p in checkpoint.iterdir() if p.name.endswith((".safetensors", ".bin")) and "model" in p.name)
    if not files:
        raise SourceError(f"{checkpoint} holds no weights ({' or '.join(WEIGHT_FILES)})")
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def infer_task(config: dict[str, Any], checkpoint: Path) -> str:
    """The task a checkpoint was trained for, from its architecture name."""
    archs = config.get("architectures") or []
    for arch in archs:
        if arch.endswith("ForSequenceClassification"):
            return TEXT_CLASSIFICATION
        if arch.endswith("ForTokenClassification"):
            return TOKEN_CLASSIFICATION
    if (checkpoint / "modules.json").is_file():
        return FEATURE_EXTRACTION
    for arch in archs:
        if arch.endswith(("Model", "ForMaskedLM", "ForPreTraining")):
            return FEATURE_EXTRACTION
    raise SourceError(
        f"cannot tell the task of {checkpoint} from its architectures {archs}; pass --task ({', '.join(TASKS)})"
    )


ST_MODULES = ("Transformer", "Pooling", "Normalize")  #: sentence-transformers modules a bundle reproduces
#: position ids start after the padding id in these models, so max_position_embeddings overstates the limit
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def _embedding_spec(checkpoint: Path, hidden_size: int) -> EmbeddingSpec:
    pooling, normalize = "mean", True
    modules = checkpoint / "modules.json"
    if modules.is_file():
        entries = read_json(modules)
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in entries)
        other = [str(m.get("type", "")) for m in entries if not str(m.get("type", "")).endswith(ST_MODULES)]
        if other:  # e.g. LaBSE's and distiluse's Dense: without it the vectors are not the model's
            raise SourceError(
                f"{modules}: the sentence-transformers module(s) {', '.join(other)} are not supported (only "
                f"{', '.join(ST_MODULES)}): the bundle's vectors would differ from the model's"
            )
        for m in entries:
            if str(m.get("type", "")).endswith("Pooling"):
                cfg_path = checkpoint / m.get("path", "") / "config.json"
                cfg = read_json(cfg_path) if cfg_path.is_file() else {}
                modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode_") and v)
                if len(modes) > 1 or cfg.get("include_prompt") is False:
                    what = " + ".join(modes) + (" without the prompt" if cfg.get("include_prompt") is False else "")
                    raise SourceError(f"{cfg_path}: {what} is not supported: only mean or CLS pooling over every token")
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_mean_tokens", True):
                    pooling = "mean"
                else:
                    raise SourceError(f"{cfg_path}: only mean or CLS pooling is supported")
    prefixes: dict[str, str] = {}
    default_prefix = ""
    st_cfg = checkpoint / "config_sentence_transformers.json"
    if st_cfg.is_file():
        cfg = read_json(st_cfg)
        prefixes = {str(k): str(v) for k, v in (cfg.get("prompts") or {}).items()}
        default_name = cfg.get("default_prompt_name")
        if default_name:
            default_prefix = prefixes.get(default_name, "")
    return EmbeddingSpec(
        dim=hidden_size, pooling=pooling, normalize=normalize, default_prefix=default_prefix, prefixes=prefixes
    )


def _max_length(config: dict[str, Any], checkpoint: Path, tok_cfg: dict[str, Any]) -> int:
    positions = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in OFFSET_POSITIONS:  # XLM-R: 514 positions, 512 tokens
        positions -= int(config.get("pad_token_id") or 1) + 1
    limits = [positions]
    model_max = tok_cfg.get("model_max_length")
    if isinstance(model_max, int) and model_max < _UNBOUNDED:
        limits.append(model_max)
    sbert = checkpoint / "sentence_bert_config.json"
    if sbert.is_file():
        seq = read_json(sbert).get("max_seq_length")
        if isinstance(seq, int):
            limits.append(seq)
    return min(limits)


def load(checkpoint: Path, task: str | None = None, name: str | None = None) -> LoadedSource:
    """Load a checkpoint directory for export."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    config_path = checkpoint / "config.json"
    if not config_path.is_file():
        raise SourceError(f"{checkpoint} has no config.json, so it is not a Hugging Face checkpoint")
    config = read_json(config_path)
    task = task or infer_task(config, checkpoint)
    if task not in TASKS:
        raise SourceError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    auto = {
        TEXT_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
        TOKEN_CLASSIFICATION: transformers.AutoModelForTokenClassification,
        FEATURE_EXTRACTION: transformers.AutoModel,
    }[task]
    kwargs: dict[str, Any] = {"attn_implementation": "eager", "dtype": torch.float32}
    if (checkpoint / "model.safetensors").is_file() or (checkpoint / "model.safetensors.index.json").is_file():
        kwargs["use_safetensors"] = True
    digest = weights_sha256(checkpoint)
    log.info("loading %s as %s", checkpoint, task)
    label2id = config.get("label2id")
    if task != FEATURE_EXTRACTION and not config.get("id2label") and isinstance(label2id, dict) and label2id:
        # transformers fills id2label with LABEL_0.. and ignores a lone label2id: take the names from it
        kwargs["id2label"] = {int(i): str(name) for name, i in label2id.items()}
        kwargs["label2id"] = {str(name): int(i) for name, i in label2id.items()}
    if task == FEATURE_EXTRACTION and config.get("model_type") == "bert":
        kwargs["add_pooling_layer"] = False  # the pooler is not part of sentence embeddings
    try:
        model = auto.from_pretrained(str(checkpoint), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"transformers could not load {checkpoint} for {task}: {exc}") from exc
    model.eval()

    tok_cfg = tokenizer_conversion.read_tokenizer_config(checkpoint)
    tokenizer_check = None
    if (checkpoint / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    else:
        log.info("no tokenizer.json: converting vocab.txt to a fast tokenizer and checking it")
        tok = tokenizer_conversion.wordpiece_from_vocab(checkpoint)
        slow = tokenizer_conversion.slow_bert_tokenizer(checkpoint)
        tokenizer_check = tokenizer_conversion.check_against_slow(tok, slow, [t for _, t in samples.parity_texts()])

    labels = None
    score_function = None
    embedding = None
    if task in (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION):
        labels = {int(k): str(v) for k, v in model.config.id2label.items()}
        if sorted(labels) != list(range(model.config.num_labels)):
            raise SourceError(
                f"{checkpoint / 'config.json'}: id2label has ids {sorted(labels)}, but the classifier's "
                f"{model.config.num_labels} outputs are numbered 0 to {model.config.num_labels - 1}: "
                "name each output once (id2label, or label2id)"
            )
        multi = model.config.problem_type == "multi_label_classification" or model.config.num_labels == 1
        score_function = "sigmoid" if task == TEXT_CLASSIFICATION and multi else "softmax"
    else:
        embedding = _embedding_spec(checkpoint, int(model.config.hidden_size))

    provenance: dict[str, Any] = {
        "kind": "huggingface",
        "name_or_path": name or str(checkpoint),
        "architecture": (config.get("architectures") or [type(model).__name__])[0],
        "model_type": config.get("model_type"),
        "weights_sha256": digest,
        "hidden_size": int(model.config.hidden_size),
        "num_hidden_layers": int(model.config.num_hidden_layers),
        "vocab_size": int(model.config.vocab_size),
    }
    lineage = read_lineage(checkpoint)  # a checkpoint written by `mbert-edge distill` (or a trim)
    if lineage is not None:
        provenance["lineage"] = lineage
    return LoadedSource(
        model=model,
        tokenizer=tok,
        task=task,
        max_length=_max_length(config, checkpoint, tok_cfg),
        labels=labels,
        score_function=score_function,
        embedding=embedding,
        provenance=provenance,
        tokenizer_check=tokenizer_check,
    )
