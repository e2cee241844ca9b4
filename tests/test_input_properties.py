"""Property tests over generated text (any Unicode, mixed scripts, combining marks, emoji, long runs, lone
surrogates): only typed errors; a text's answer alone equals its answer inside any batch of other texts (within
1e-5, fp32 bundles of all three tasks); the same call twice gives the same bits.

Sized for the normal suite: 3 tasks x 35 examples x 100 texts = 10,500 generated texts, each run alone and in two
batch arrangements, on the tiny models; a fixed, derandomized profile (no deadline, no example database).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mbert_edge
from mbert_edge.errors import InvalidInputError, MbertEdgeError

log = logging.getLogger(__name__)

TASKS = ("text-classification", "token-classification", "feature-extraction")
TEXTS_PER_EXAMPLE = 100
EXAMPLES = 35

settings.register_profile(
    "mbert-edge-input-properties",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=EXAMPLES,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
PROFILE = settings.get_profile("mbert-edge-input-properties")

WORDS = [
    "Zürich", "straße", "Kraków", "İstanbul", "Hà Nội", "Москва", "Київ", "Αθήνα", "القاهرة", "ירושלים", "मुंबई",
    "কলকাতা", "กรุงเทพ", "東京", "北京市", "서울", "Nairobi", "ÆØÅ", "ﬁnance", "Ｔｏｋｙｏ", "123,45", "e-mail@x.org",
]  # fmt: skip
EMOJI = ["😀", "👍🏽", "👩‍👩‍👧", "🇩🇪", "❤️", "🧑🏿‍🚀", "\U0001f9ea", "©", "\u2603\ufe0f"]
COMBINING = st.characters(categories=["Mn", "Me"])

_text = st.one_of(
    st.text(min_size=1, max_size=30),  # any Unicode code point but surrogates
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join),  # mixed scripts
    st.tuples(st.sampled_from(WORDS), st.text(COMBINING, min_size=1, max_size=6)).map("".join),  # stacked marks
    st.lists(st.sampled_from(EMOJI + WORDS), min_size=1, max_size=10).map("".join),  # emoji, ZWJ sequences, flags
    st.tuples(st.characters(), st.integers(50, 3000)).map(lambda cn: cn[0] * cn[1]),  # long runs of one character
    st.tuples(st.sampled_from(WORDS), st.integers(20, 400)).map(lambda wn: (wn[0] + " ") * wn[1]),  # past max_length
    st.tuples(st.text(max_size=5), st.characters(categories=["Cs"])).map("".join),  # a lone surrogate
)
_batch = st.lists(_text, min_size=TEXTS_PER_EXAMPLE, max_size=TEXTS_PER_EXAMPLE)

generated = {"texts": 0, "refused": 0}


@pytest.fixture(scope="module")
def models(bundles):
    return {task: mbert_edge.load(bundles[task], threads=1) for task in TASKS}


@pytest.fixture(scope="module", autouse=True)
def _report_count():
    yield
    log.info("generated %(texts)d texts, %(refused)d refused with InvalidInputError", generated)


def _run(model, texts, **kwargs):
    if model.task == "feature-extraction":
        return model.embed(texts, **kwargs)
    return model.predict(texts, top_k=None, **kwargs)


def _flat(model, result) -> tuple[list, np.ndarray]:
    """(what must be identical: labels or entity spans, scores or vectors as an array)."""
    if model.task == "feature-extraction":
        return [], np.asarray(result, dtype=np.float64)
    if model.task == "text-classification":
        return [[r["label"] for r in x] for x in result], np.array([[r["score"] for r in x] for x in result])
    keys = [[(e["entity_group"], e["start"], e["end"], e["word"]) for e in x] for x in result]
    return keys, np.array([e["score"] for x in result for e in x], dtype=np.float64)


def _assert_same(model, a, b) -> None:
    ka, va = _flat(model, a)
    kb, vb = _flat(model, b)
    assert ka == kb
    np.testing.assert_allclose(va, vb, atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", TASKS)
@PROFILE
@given(texts=_batch)
def test_alone_equals_in_any_batch_and_calls_are_deterministic(models, task, texts):
    model = models[task]
    generated["texts"] += len(texts)
    valid, alone = [], []
    for text in texts:
        try:
            result = _run(model, [text])
        except InvalidInputError:  # blank, nothing the tokenizer keeps, or a lone surrogate: refused, by name
            generated["refused"] += 1
            continue
        except MbertEdgeError as exc:  # any other typed error would be a bug for a str
            pytest.fail(f"{type(exc).__name__} for {text!r}: {exc}")
        valid.append(text)
        alone.append(result[0])
    if not valid:
        return
    together = _run(model, valid)  # length-sorted batches of 32, padded to each batch's longest
    _assert_same(model, alone, together)
    shuffled = valid[::-1]  # other neighbours, other padding widths, batches of 7
    _assert_same(model, alone[::-1], _run(model, shuffled, batch_size=7))
    again = _run(model, valid)
    ka, va = _flat(model, together)
    kb, vb = _flat(model, again)
    assert ka == kb and np.array_equal(va, vb)  # deterministic to the bit


@PROFILE
@given(texts=st.lists(_text, min_size=1, max_size=20), single=st.booleans())
def test_a_list_with_a_bad_text_is_refused_by_its_index(models, texts, single):
    """Any text that is refused alone makes a list that holds it fail with an InvalidInputError naming its index
    (the first bad one), before any model call; nothing else escapes."""
    model = models["text-classification"]
    bad = []
    for i, text in enumerate(texts):
        try:
            model.predict(text)
        except InvalidInputError:
            bad.append(i)
    if not bad:
        assert len(model.predict(texts)) == len(texts)
        return
    with pytest.raises(InvalidInputError) as info:
        model.predict(texts)
    # validation errors (str checks) come first for the whole list; tokenizer-level ones in chunk order
    assert any(f"texts[{i}]" in str(info.value) for i in bad)
