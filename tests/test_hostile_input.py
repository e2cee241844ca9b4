"""Hostile and odd input through every public entry point: only typed errors that name the item, or a documented
result; long texts and long lists in bounded work; one predictor shared by 16 threads."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tokenizers import Tokenizer

import mbert_edge
from mbert_edge import predictor as predictor_module
from mbert_edge.cli import main
from mbert_edge.errors import InvalidInputError, MbertEdgeError

TASKS = ("text-classification", "token-classification", "feature-extraction")
LONE = json.loads('"\\ud800"')  # what json.loads gives for an escaped half of a surrogate pair


@pytest.fixture(scope="module")
def models(bundles):
    return {task: mbert_edge.load(bundles[task], threads=1) for task in TASKS}


def run(model, texts, **kwargs):
    if model.task == "feature-extraction":
        return model.embed(texts, **kwargs)
    return model.predict(texts, **kwargs)


def assert_close(model, a, b, atol=1e-5):
    """Same answer: embeddings and scores within ``atol``, labels and entity spans identical."""
    if model.task == "feature-extraction":
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)
        return
    if isinstance(a, dict) or (a and isinstance(a[0], dict) and "label" in a[0]) or a == []:
        a, b = [a], [b]
    for x, y in zip(a, b, strict=True):
        x, y = (x if isinstance(x, list) else [x]), (y if isinstance(y, list) else [y])
        key = ("entity_group", "start", "end", "word") if model.task == "token-classification" else ("label",)
        assert [tuple(r[k] for k in key) for r in x] == [tuple(r[k] for k in key) for r in y]
        np.testing.assert_allclose([r["score"] for r in x], [r["score"] for r in y], atol=atol, rtol=0)


# ------------------------------------------------------------------ texts


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (LONE, r"the text holds a lone surrogate \(U\+D800\) at character 0"),
        (["ok", "Zürich " + LONE + "x"], r"texts\[1\] holds a lone surrogate \(U\+D800\) at character 7"),
        (["ok", "\udcff"], r"texts\[1\] holds a lone surrogate \(U\+DCFF\)"),  # errors="surrogateescape"
        (["ok", b"bytes"], r"texts\[1\] is bytes, not str"),
        (["ok", 1.5], r"texts\[1\] is float"),
        (("ok", ["nested"]), r"texts\[1\] is list"),
        ({"ok"}, "not set"),
        (iter(["ok"]), "not list_iterator"),
        (["ok", "\u200b\u200c\u2060\ufeff"], r"texts\[1\] has nothing the tokenizer keeps"),  # zero-width only
        (["ok", "\x00\x01\x7f\x1b"], r"texts\[1\] has nothing the tokenizer keeps"),  # control only
        ("\u00ad\u200b", r"the text has nothing the tokenizer keeps"),
        (["ok", "\u3000\u2028 \t\n"], r"texts\[1\] is empty or only whitespace"),
    ],
)
def test_bad_texts_name_the_item(models, task, texts, message):
    with pytest.raises(InvalidInputError, match=message):
        run(models[task], texts)


def test_bad_item_in_a_later_chunk_is_named_by_its_index(models):
    texts = ["ok"] * (predictor_module.STREAM_TEXTS + 10)
    texts[predictor_module.STREAM_TEXTS + 5] = "\u200b"
    with pytest.raises(InvalidInputError, match=rf"texts\[{predictor_module.STREAM_TEXTS + 5}\] has nothing"):
        models["feature-extraction"].embed(texts)


def test_zero_width_text_with_a_prefix_is_still_refused(models):
    with pytest.raises(InvalidInputError, match="has nothing the tokenizer keeps"):
        models["feature-extraction"].embed("\u200b", prefix="query: ")


@pytest.mark.parametrize("task", TASKS)
def test_control_characters_are_dropped_as_the_tokenizer_does(models, bundles, task):
    """NUL and other control/format characters inside a text are accepted; the bundled tokenizer (BERT's
    normalizer, like transformers' BertTokenizer) drops them, so the answer is that of the text without them."""
    model = models[task]
    tok = Tokenizer.from_file(str(bundles[task] / "tokenizer.json"))  # the reference: the file, run directly
    for text, clean in [("Paris\x00 ist schön", "Paris ist schön"), ("Rom\u200b und\x07 Wien", "Rom und Wien")]:
        assert model.tokenizer.encode([text])[0].ids == tok.encode(text).ids == tok.encode(clean).ids
        if task == "token-classification":  # offsets index the original text, so compare labels and scores only
            a, b = run(model, [text])[0], run(model, [clean])[0]
            assert [(e["entity_group"], e["word"]) for e in a] == [(e["entity_group"], e["word"]) for e in b]
            np.testing.assert_allclose([e["score"] for e in a], [e["score"] for e in b], atol=1e-6, rtol=0)
        else:
            assert_close(model, run(model, [text]), run(model, [clean]), atol=1e-6)


# ------------------------------------------------------------- long texts


def _long_texts() -> dict[str, str]:
    return {
        "sentences": "Zürich und Genf sind Städte. " * 8000,
        "one long word": "a" * 200_000,
        "cjk": "東京は日本の首都です。" * 20_000,
        "words after a run of NULs": "\x00" * 150_000 + " Berlin liegt an der Spree." * 100,
        "whitespace runs": ("wort" + " " * 5000) * 40,
        "thai without spaces": "ภาษาไทยเป็นภาษาที่สวยงาม" * 8000,
    }


@pytest.mark.parametrize("kind", list(_long_texts()))
def test_long_text_tokenized_exactly_as_the_whole_text(bundles, kind):
    """The head-first tokenization gives the ids of the whole text cut at max_length (tokenizers, run directly on
    the whole text, is the reference), and says that it was cut."""
    from mbert_edge.tokenizer import BundleTokenizer

    text = _long_texts()[kind]
    ours = BundleTokenizer(bundles["token-classification"] / "tokenizer.json", 128)
    ref = Tokenizer.from_file(str(bundles["token-classification"] / "tokenizer.json"))
    ref.enable_truncation(128)
    want = ref.encode(text)
    got = ours.encode([text])[0]
    assert got.ids == want.ids and got.offsets == want.offsets
    assert bool(got.overflowing) == bool(want.overflowing)


class _CountingTokenizer:
    """Stands in for the Rust tokenizer and records how many characters it was given."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner, self.chars = inner, []

    def encode(self, text, *args, **kwargs):
        self.chars.append(len(text))
        return self.inner.encode(text, *args, **kwargs)

    def encode_batch(self, texts, *args, **kwargs):
        self.chars.extend(len(t) for t in texts)
        return self.inner.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("task", TASKS)
def test_ten_megabyte_text_is_cut_without_tokenizing_it_whole(bundles, task, caplog):
    model = mbert_edge.load(bundles[task], threads=1)
    counting = model.tokenizer._tok = _CountingTokenizer(model.tokenizer._tok)
    huge = "Zürich und Genf sind Städte. Angela Merkel besuchte Paris. " * 170_000
    assert len(huge.encode()) > 10_000_000
    with caplog.at_level("WARNING", logger="mbert_edge.predictor"):
        result = run(model, [huge, "kurz"])
    assert "1 of 2 texts were cut at max_length=128" in caplog.text
    assert max(counting.chars) <= model.tokenizer.head_chars * 4  # a few KB, not 10 MB
    assert_close(model, result[:1], run(model, [huge[:50_000]]), atol=1e-6)  # as its head, which holds 128 tokens


def test_ten_megabyte_text_with_truncation_off_is_refused(bundles):
    strict = mbert_edge.load(bundles["text-classification"], truncation=False, threads=1)
    with pytest.raises(mbert_edge.TextTooLongError, match=r"texts\[1\] is longer than the model's 128 tokens"):
        strict.predict(["kurz", "Wort " * 2_000_000])


# ------------------------------------------------------------- long lists


def test_long_list_is_tokenized_one_chunk_at_a_time(bundles, monkeypatch):
    """A list longer than a chunk: the tokenizer never gets more than one chunk (4096 texts) at a time, and every
    text's result is its own. (A million texts, measured outside the suite: 55 s and +161 MB of which 128 MB is the
    output, against 229 s and 2.9 GB to tokenize them at once as before.)"""
    model = mbert_edge.load(bundles["feature-extraction"], threads=1)
    calls: list[int] = []
    encode = model.tokenizer.encode

    def spy(texts, where=None):
        calls.append(len(texts))
        return encode(texts, where=where)

    monkeypatch.setattr(model.tokenizer, "encode", spy)
    n = 3 * predictor_module.STREAM_TEXTS + 123
    texts = [f"Satz {i} über Städte" if i % 3 else f"{i}" for i in range(n)]
    vectors = model.embed(texts, batch_size=256)
    assert vectors.shape == (n, 32)
    assert sum(calls) == len(texts) and max(calls) <= predictor_module.STREAM_TEXTS
    assert len(calls) == -(-len(texts) // predictor_module.STREAM_TEXTS)
    monkeypatch.undo()
    picks = [0, 1, 4095, 4096, 8193, n - 1]
    np.testing.assert_allclose(vectors[picks], model.embed([texts[i] for i in picks]), atol=1e-5, rtol=0)


# -------------------------------------------------------------- arguments


@pytest.mark.parametrize("top_k", [0, -1, True, 1.5, "3", [1]])
def test_bad_top_k(models, top_k):
    with pytest.raises(InvalidInputError, match="top_k must be a positive int"):
        models["text-classification"].predict("text", top_k=top_k)


def test_numpy_ints_are_ints(models):
    clf = models["text-classification"]
    assert len(clf.predict("text", top_k=np.int64(2), batch_size=np.int32(4))) == 2


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("batch_size", [0, -3, True, 2.5, "8", None])
def test_bad_batch_size(models, task, batch_size):
    with pytest.raises(InvalidInputError, match="batch_size must be a positive int"):
        run(models[task], ["text"], batch_size=batch_size)
    with pytest.raises(InvalidInputError, match="batch_size"):
        run(models[task], [], batch_size=batch_size)  # refused even when there is nothing to run


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": 3}, "prefix must be a str"),
        ({"prefix": b"query: "}, "prefix must be a str"),
        ({"prefix": "query" + LONE}, "prefix holds a lone surrogate"),
        ({"normalize": "no"}, "normalize must be True, False or None"),
    ],
)
def test_bad_embed_arguments(models, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        models["feature-extraction"].embed("text", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "threads must be a positive int"),
        ({"threads": -2}, "threads must be a positive int"),
        ({"threads": "2"}, "threads must be a positive int"),
        ({"threads": 2.5}, "threads must be a positive int"),
        ({"threads": True}, "threads must be a positive int"),
        ({"backend": None}, "backend must be a str"),
        ({"backend": ["cpu"]}, "backend must be a str"),
        ({"precision": 8}, "precision must be a str"),
        ({"truncation": "yes"}, "truncation must be True or False"),
        ({"verify": 1}, "verify must be True or False"),
    ],
)
def test_bad_load_arguments(bundles, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        mbert_edge.load(bundles["text-classification"], **kwargs)


@pytest.mark.parametrize("path", [None, 3, ["a"], b"/tmp"])
def test_bad_load_path(path):
    with pytest.raises(InvalidInputError, match=r"path must be a str or os\.PathLike"):
        mbert_edge.load(path)


def test_path_with_a_nul_byte_is_not_found(tmp_path):
    with pytest.raises(mbert_edge.BundleNotFoundError):
        mbert_edge.load(str(tmp_path) + "/bun\x00dle")


# ------------------------------------------------------------ command line


def _cli(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threads", "0"], "threads must be a positive int"),
        (["--top-k", "-1"], "top_k must be a positive int"),
        (["--batch-size", "0"], "batch_size must be a positive int"),
    ],
)
def test_cli_bad_options(bundles, capsys, extra, message):
    code, out = _cli(capsys, "predict", str(bundles["text-classification"]), "Hallo", *extra)
    assert code == 1 and out.err.startswith("error: ") and message in out.err


def test_cli_bad_input_files(bundles, capsys, tmp_path):
    b = str(bundles["text-classification"])
    f = tmp_path / "texts.jsonl"
    f.write_text('{"text": "gut"}\n{"text": "\\ud800"}\n', encoding="utf-8")
    code, out = _cli(capsys, "predict", b, "--input", str(f))
    assert code == 1 and "texts[1] holds a lone surrogate" in out.err
    f.write_text('{"text": "gut"}\n{"text": 5}\n', encoding="utf-8")
    code, out = _cli(capsys, "predict", b, "--input", str(f))
    assert code == 1 and f"{f}:2: 'text' is int" in out.err
    f.write_text('{"text": "\\u200b"}\n', encoding="utf-8")
    code, out = _cli(capsys, "predict", b, "--input", str(f))
    assert code == 1 and "texts[0] has nothing the tokenizer keeps" in out.err
    t = tmp_path / "latin1.txt"
    t.write_bytes("Grüße\n".encode("latin-1"))
    code, out = _cli(capsys, "predict", b, "--input", str(t))
    assert code == 1 and "is not UTF-8 text (byte 2)" in out.err


def test_cli_stdin_that_is_not_utf8(bundles):
    proc = subprocess.run(
        [sys.executable, "-m", "mbert_edge.cli", "predict", str(bundles["text-classification"])],
        input="Grüße\n".encode("latin-1"),
        capture_output=True,
        env={"PYTHONIOENCODING": "utf-8:strict", "PATH": ""},  # (under surrogateescape: the lone-surrogate error)
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "error: standard input is not UTF-8" in err and "Traceback" not in err


def test_cli_info_on_a_file_instead_of_a_bundle(tmp_path, capsys):
    f = tmp_path / "not-a-bundle"
    f.write_text("x")
    code, out = _cli(capsys, "info", str(f))
    assert code == 1 and "no bundle directory" in out.err


# ------------------------------------------------------------- threads


@pytest.mark.parametrize("task", TASKS)
def test_sixteen_threads_give_the_sequential_results(models, task):
    """One predictor, 16 threads, each with its own texts (singles and lists of different lengths)."""
    model = models[task]
    words = ["Zürich", "東京", "Москва", "القاهرة", "मुंबई", "Kraków", "😀", "Ha Noi", "שלום", "Αθήνα"]
    jobs = [
        [f"{words[i % 10]} {words[(i * 7) % 10]} " * (1 + i % 13) for i in range(j, j + 1 + j % 5)] for j in range(64)
    ]
    sequential = [run(model, job, batch_size=1 + k % 4) for k, job in enumerate(jobs)]
    with ThreadPoolExecutor(16) as pool:
        threaded = list(pool.map(lambda kj: run(model, kj[1], batch_size=1 + kj[0] % 4), enumerate(jobs)))
    for want, got in zip(sequential, threaded, strict=True):
        assert_close(model, want, got)


def test_only_typed_errors_escape(models):
    """A sweep of odd values through predict/embed: each raises an MbertEdgeError or returns normally."""
    odd = [None, 0, "", " ", LONE, "\x00", "\u200b", "\U0010ffff", "a" * 10_000, "😀" * 500, ["\ud83d\ude00"], [None]]
    for model in models.values():
        for value in odd:
            with contextlib.suppress(MbertEdgeError):
                run(model, value)
