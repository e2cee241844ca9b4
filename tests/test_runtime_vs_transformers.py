"""The runtime's answers equal transformers' own (PyTorch) answers on tiny models and multilingual text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import mbert_edge
from tests.conftest import corpus_lines

TEXTS = [
    "Angela Merkel besuchte gestern Paris und traf Emmanuel Macron.",
    "Barack Obama was born in Honolulu, Hawaii.",
    "Владимир Путин выступил в Москве.",
    "東京で会議が開かれました。",
    "서울에서 회의가 열렸습니다.",
    "محمد يعيش في القاهرة",
    "Tiếng Việt là ngôn ngữ chính thức của Việt Nam.",
    "नरेंद्र मोदी दिल्ली में रहते हैं।",
    "Ok",
    "Ein sehr langer Satz " * 30,  # longer than the tiny model's 128 tokens: truncated on both sides
]


def _reference_tokenizer(checkpoint):
    # transformers' own fast tokenizer built from vocab.txt: independent of our conversion code
    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    assert tok.is_fast and tok.backend_tokenizer.get_vocab_size() > 1000
    return tok


@pytest.fixture(scope="module")
def texts():
    return TEXTS + [line[:300] for _, line in corpus_lines(per_lang=2)]


def test_text_classification_matches_pipeline(checkpoints, bundles, texts):
    ckpt = checkpoints["text-classification"]
    pipe = transformers.pipeline(
        "text-classification",
        model=transformers.AutoModelForSequenceClassification.from_pretrained(ckpt),
        tokenizer=_reference_tokenizer(ckpt),
        truncation=True,
    )
    model = mbert_edge.load(bundles["text-classification"])
    want_all = pipe(texts, top_k=None)
    got_all = model.predict(texts, top_k=None)
    got_top1 = model.predict(texts)
    got_top2 = model.predict(texts, top_k=2)
    for want, got, top1, top2 in zip(want_all, got_all, got_top1, got_top2, strict=True):
        assert [g["label"] for g in got] == [w["label"] for w in want]
        np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-4)
        assert top1 == got[0]
        assert top2 == got[:2]
    assert sum(r["score"] for r in got_all[0]) == pytest.approx(1.0, abs=1e-5)
    assert model.labels == ["negative", "neutral", "positive"]


def test_token_classification_matches_simple_aggregation(checkpoints, bundles, texts):
    ckpt = checkpoints["token-classification"]
    pipe = transformers.pipeline(
        "token-classification",
        model=transformers.AutoModelForTokenClassification.from_pretrained(ckpt),
        tokenizer=_reference_tokenizer(ckpt),
        aggregation_strategy="simple",
    )
    model = mbert_edge.load(bundles["token-classification"])
    short = [t for t in texts if len(t) < 300]  # the pipeline does not truncate; keep within 128 tokens
    want = pipe(short)
    got = model.predict(short)
    n_entities = 0
    for text, w, g in zip(short, want, got, strict=True):
        assert [(e["entity_group"], e["start"], e["end"], e["word"]) for e in g] == [
            (e["entity_group"], e["start"], e["end"], e["word"]) for e in w
        ], text
        np.testing.assert_allclose([e["score"] for e in g], [e["score"] for e in w], atol=1e-4)
        for e in g:
            assert 0 <= e["start"] < e["end"] <= len(text)
        n_entities += len(g)
    assert n_entities > 20  # the random model tags plenty, so grouping is really exercised
    single = model.predict(short[0])
    assert single == got[0]


def test_embeddings_match_pytorch_mean_pooling(checkpoints, bundles, texts):
    ckpt = checkpoints["feature-extraction"]
    ref_tok = _reference_tokenizer(ckpt)
    ref_model = transformers.AutoModel.from_pretrained(ckpt).eval()
    enc = ref_tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = (hidden * mask).sum(1) / mask.sum(1)
    want = torch.nn.functional.normalize(want, dim=-1).numpy()

    model = mbert_edge.load(bundles["feature-extraction"])
    got = model.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 32)
    np.testing.assert_allclose(got, want, atol=1e-4)
    raw = model.embed(texts, normalize=False)
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1) > 0, True)
    one = model.embed(texts[1])
    assert one.shape == (32,)
    np.testing.assert_allclose(one, got[1], atol=1e-5)


def test_results_come_back_in_input_order(bundles, texts):
    """Length-sorted batching must not reorder results: batch_size=3 vs one text at a time."""
    model = mbert_edge.load(bundles["text-classification"])
    batched = model.predict(texts, top_k=None, batch_size=3)
    for text, result in zip(texts, batched, strict=True):
        single = model.predict(text, top_k=None)
        np.testing.assert_allclose([r["score"] for r in result], [r["score"] for r in single], atol=1e-5)
        assert [r["label"] for r in result] == [r["label"] for r in single]
