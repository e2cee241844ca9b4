"""Reading a source checkpoint for export: what would make the bundle differ from the model is refused, and
what transformers reads one way is read the same way (the references: transformers' own tokenizer and config
handling, hand-written sentence-transformers files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mbert_edge_export.errors import SourceError  # noqa: E402
from mbert_edge_export.sources import huggingface  # noqa: E402
from mbert_edge_export.tokenizer import wordpiece_from_vocab  # noqa: E402


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _modules(ckpt: Path, *types: str, pooling: dict | None = None) -> None:
    entries = [
        {"idx": i, "name": str(i), "path": f"{i}_{t}" if i else "", "type": f"sentence_transformers.models.{t}"}
        for i, t in enumerate(types)
    ]
    (ckpt / "modules.json").write_text(json.dumps(entries), encoding="utf-8")
    for e in entries:
        if e["type"].endswith("Pooling"):
            (ckpt / e["path"]).mkdir(exist_ok=True)
            (ckpt / e["path"] / "config.json").write_text(json.dumps(pooling or {}), encoding="utf-8")


def test_sentence_transformers_modules_beyond_pooling_are_refused(tmp_path, checkpoints):
    """LaBSE and distiluse end in a Dense layer: without it the vectors are not the model's (and distiluse's
    are 512-wide, not 768), so export refuses instead of writing the bare encoder's pooling."""
    ckpt = _copy(checkpoints["feature-extraction"], tmp_path / "labse-like")
    _modules(ckpt, "Transformer", "Pooling", "Dense", "Normalize", pooling={"pooling_mode_cls_token": True})
    with pytest.raises(SourceError, match=r"models\.Dense are not supported"):
        huggingface.load(ckpt)
    _modules(ckpt, "Transformer", "Pooling", pooling={"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True})
    with pytest.raises(SourceError, match="pooling_mode_cls_token \\+ pooling_mode_max_tokens is not supported"):
        huggingface.load(ckpt)
    _modules(ckpt, "Transformer", "Pooling", pooling={"pooling_mode_mean_tokens": True, "include_prompt": False})
    with pytest.raises(SourceError, match="without the prompt"):
        huggingface.load(ckpt)
    _modules(ckpt, "Transformer", "Pooling", "Normalize", pooling={"pooling_mode_cls_token": True})
    spec = huggingface.load(ckpt).embedding
    assert spec is not None and (spec.pooling, spec.normalize) == ("cls", True)


def test_xlm_roberta_takes_512_tokens_not_its_514_positions(tmp_path):
    """RoBERTa-family position ids start after the padding id: 514 positions hold 512 tokens (a tiny
    XLMRobertaModel fails at 514 tokens and runs at 512)."""
    import torch

    config = {"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    assert huggingface._max_length(config, tmp_path, {}) == 512
    assert huggingface._max_length({"model_type": "bert", "max_position_embeddings": 512}, tmp_path, {}) == 512
    cfg = transformers.XLMRobertaConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=514,
    )
    model = transformers.XLMRobertaModel(cfg).eval()
    with torch.no_grad():
        model(input_ids=torch.full((1, 512), 5))
        with pytest.raises((IndexError, RuntimeError), match="index 514 is out of bounds"):
            model(input_ids=torch.full((1, 514), 5))


def test_label2id_alone_names_the_labels(tmp_path, checkpoints):
    ckpt = _copy(checkpoints["text-classification"], tmp_path / "cls")
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    config.pop("id2label")
    config["label2id"] = {"bad": 0, "so-so": 1, "good": 2}
    (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert huggingface.load(ckpt).labels == {0: "bad", 1: "so-so", 2: "good"}


def test_label_ids_that_skip_an_output_are_refused(tmp_path, checkpoints):
    """A bundle numbers its labels 0..n-1 (the runtime refuses anything else): a config whose ids skip one is
    refused at export, naming the file."""
    ckpt = _copy(checkpoints["text-classification"], tmp_path / "cls")
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    n = len(config["id2label"])
    config["id2label"] = {str(i if i < n - 1 else n + 3): f"L{i}" for i in range(n)}
    config.pop("label2id", None)
    (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(SourceError, match=rf"config\.json: id2label has ids .*numbered 0 to {n - 1}"):
        huggingface.load(ckpt)


def test_vocab_txt_read_as_transformers_reads_it(tmp_path, checkpoints):
    """A line that vocab.txt repeats takes its last id (the slow tokenizer's reading); added tokens that
    vocab.txt lacks are refused rather than tokenized differently from transformers."""
    ckpt = _copy(checkpoints["feature-extraction"], tmp_path / "ckpt")
    lines = (ckpt / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[-2] = lines[200]  # the last token line repeats an earlier one
    (ckpt / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    slow = transformers.BertTokenizer(str(ckpt / "vocab.txt"))
    assert wordpiece_from_vocab(ckpt).token_to_id(lines[200]) == slow.convert_tokens_to_ids(lines[200])
    (ckpt / "added_tokens.json").write_text(json.dumps({"<product>": len(lines)}), encoding="utf-8")
    with pytest.raises(SourceError, match=r"added tokens that are not in vocab\.txt \(<product>\)"):
        wordpiece_from_vocab(ckpt)


def test_broken_json_files_name_the_file(tmp_path, checkpoints):
    ckpt = _copy(checkpoints["feature-extraction"], tmp_path / "ckpt")
    (ckpt / "tokenizer_config.json").write_text('{"do_lower_case": false,}', encoding="utf-8")
    with pytest.raises(SourceError, match=r"tokenizer_config\.json is not valid JSON \(line 1"):
        huggingface.load(ckpt)
    (ckpt / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(SourceError, match=r"config\.json is not valid JSON"):
        huggingface.load(ckpt)
