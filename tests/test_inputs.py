"""Bad inputs get typed errors that say what to do, or a documented result; never an ONNX Runtime crash."""

from __future__ import annotations

import numpy as np
import pytest

import mbert_edge
from mbert_edge.errors import BackendUnavailableError, InvalidInputError, TextTooLongError, WrongTaskError


@pytest.fixture(scope="module")
def classifier(bundles):
    return mbert_edge.load(bundles["text-classification"], threads=1)


@pytest.fixture(scope="module")
def encoder(bundles):
    return mbert_edge.load(bundles["feature-extraction"], threads=1)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (None, "None"),
        (42, "not int|int"),
        (b"bytes", "bytes"),
        (["ok", 3], r"texts\[1\] is int"),
        (["ok", None], r"texts\[1\] is NoneType"),
        ("", "empty"),
        ("   \n\t", "empty"),
        (["fine", ""], r"texts\[1\] is empty"),
    ],
)
def test_bad_texts(classifier, encoder, texts, message):
    with pytest.raises(InvalidInputError, match=message):
        classifier.predict(texts)
    with pytest.raises(InvalidInputError, match=message):
        encoder.embed(texts)


def test_empty_list_gives_empty_result(classifier, encoder):
    assert classifier.predict([]) == []
    out = encoder.embed([])
    assert out.shape == (0, 32) and out.dtype == np.float32


def test_one_megabyte_text_is_truncated(classifier, encoder):
    huge = "Zürich und Genf sind Städte. " * 36_000  # ~1 MB
    assert len(huge.encode()) > 1_000_000
    result = classifier.predict(huge)
    assert set(result) == {"label", "score"}
    assert encoder.embed([huge, "kurz"]).shape == (2, 32)


def test_truncation_off_raises(bundles):
    strict = mbert_edge.load(bundles["text-classification"], truncation=False)
    with pytest.raises(TextTooLongError, match="128 tokens"):
        strict.predict(["short", "word " * 500])
    assert strict.predict("short")["label"]


def test_wrong_task(classifier, encoder):
    with pytest.raises(WrongTaskError, match="predict"):
        classifier.embed("text")
    with pytest.raises(WrongTaskError, match="embed"):
        encoder.predict("text")


def test_bad_arguments(classifier, encoder):
    with pytest.raises(InvalidInputError, match="top_k"):
        classifier.predict("text", top_k=0)
    with pytest.raises(InvalidInputError, match="batch_size"):
        classifier.predict("text", batch_size=0)
    with pytest.raises(InvalidInputError, match="prefix"):
        encoder.embed("text", prefix=3)


def test_backend_choice(bundles):
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tensorrt-x'"):
        mbert_edge.load(bundles["text-classification"], backend="tensorrt-x")
    with pytest.raises(BackendUnavailableError, match="precision int8"):
        mbert_edge.load(bundles["text-classification"], precision="int8")
    model = mbert_edge.load(bundles["text-classification"], backend="cpu")
    assert model.backend.name == "onnxruntime" and "fp32" in repr(model)
    with pytest.raises(ValueError, match="threads"):
        mbert_edge.load(bundles["text-classification"], threads=0)


def test_prefix_is_applied(encoder):
    a = encoder.embed("query: hello world", prefix="")
    b = encoder.embed("hello world", prefix="query: ")
    np.testing.assert_allclose(a, b, atol=1e-6)
