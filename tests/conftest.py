"""Shared fixtures: a multilingual WordPiece vocabulary, tiny BERT checkpoints per task, and their bundles.

The vocabulary is trained by ``tokenizers`` on text from the ``dataset-build`` package (about 40 languages
under ``data/<iso639-3>/``). That package cannot be imported on Python 3.11, so its files are located with
``importlib.util.find_spec`` and read directly.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

LANGS = (
    "eng",
    "deu",
    "fra",
    "spa",
    "ces",
    "pol",
    "tur",
    "vie",
    "rus",
    "ukr",
    "bul",
    "ell",
    "ara",
    "heb",
    "hin",
    "ben",
    "tha",
    "zho",
    "jpn",
    "kor",
    "swa",
)
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
CLS_LABELS = ("negative", "neutral", "positive")


def dataset_dir() -> Path:
    spec = importlib.util.find_spec("dataset_build")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the dataset-build package is not installed (make test installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_script(path: Path, name: str):
    """Import a script that is not part of a package (``benchmarks/*.py``) by its file path, once per session,
    as module ``name``."""
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def corpus_lines(langs=LANGS, per_lang: int = 200) -> list[tuple[str, str]]:
    """(language, line) pairs: the first ``per_lang`` non-empty lines of each language's files."""
    out = []
    root = dataset_dir()
    for lang in langs:
        lines = []
        for f in sorted((root / lang).glob("*.txt")):
            lines += [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if len(lines) >= per_lang:
                break
        out += [(lang, ln) for ln in lines[:per_lang]]
    return out


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory) -> Path:
    """A cased multilingual WordPiece vocab.txt trained on dataset-build text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=4000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator((line for _, line in corpus_lines()), trainer)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(f"{t}\n" for t, _ in vocab), encoding="utf-8")
    return path


def make_checkpoint(root: Path, vocab_file: Path | None, task: str, seed: int = 0, tokenizer=None) -> Path:
    """A tiny BERT checkpoint (2 layers, hidden 32) with only vocab.txt as tokenizer files, or with ``tokenizer``
    (a ``tokenizers`` tokenizer, saved as tokenizer.json) instead."""
    import torch
    import transformers

    if tokenizer is not None:
        vocab_size = tokenizer.get_vocab_size()
    else:
        vocab_size = sum(1 for _ in vocab_file.open(encoding="utf-8"))
    kwargs = {}
    if task == "text-classification":
        cls, labels = transformers.BertForSequenceClassification, CLS_LABELS
    elif task == "token-classification":
        cls, labels = transformers.BertForTokenClassification, NER_LABELS
    else:
        cls, labels = transformers.BertModel, None
    if labels:
        kwargs = {"id2label": dict(enumerate(labels)), "label2id": {v: k for k, v in enumerate(labels)}}
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
        **kwargs,
    )
    torch.manual_seed(seed)
    model = cls(config).eval()
    path = root / task
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save(str(path / "tokenizer.json"))
        (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
        return path
    (path / "vocab.txt").write_text(vocab_file.read_text(encoding="utf-8"), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "do_lower_case": False,
                "tokenize_chinese_chars": True,
                "strip_accents": None,
                "model_max_length": 128,
                "tokenizer_class": "BertTokenizer",
            }
        )
    )
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, vocab_file) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        t: make_checkpoint(root, vocab_file, t)
        for t in ("text-classification", "token-classification", "feature-extraction")
    }


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, checkpoints) -> dict[str, Path]:
    from mbert_edge_export import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    return {task: export_bundle(str(ckpt), root / task) for task, ckpt in checkpoints.items()}


@pytest.fixture
def copy_bundle(tmp_path, bundles):
    """A private copy of a bundle, for tests that damage it."""
    import shutil

    def _copy(task: str) -> Path:
        dst = tmp_path / task
        shutil.copytree(bundles[task], dst)
        return dst

    return _copy


@pytest.fixture(autouse=True, scope="session")
def _openvino_cache_in_tmp(tmp_path_factory):
    """Keep the OpenVINO backend's compile cache out of the user's home while testing."""
    import os

    old = os.environ.get("MBERT_EDGE_OPENVINO_CACHE")
    os.environ["MBERT_EDGE_OPENVINO_CACHE"] = str(tmp_path_factory.mktemp("openvino-cache"))
    yield
    if old is None:
        os.environ.pop("MBERT_EDGE_OPENVINO_CACHE", None)
    else:
        os.environ["MBERT_EDGE_OPENVINO_CACHE"] = old
