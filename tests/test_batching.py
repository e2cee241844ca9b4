"""Length-sorted batching covers every text once, respects its limits and sorts by length."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mbert_edge.batching import bounded_chunks, length_sorted_batches


@settings(deadline=None)  # no timings in tests: a loaded CI machine took 388 ms for an empty list
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=200),
    batch_size=st.integers(min_value=1, max_value=64),
    max_tokens=st.integers(min_value=1, max_value=10_000),
)
def test_batches_partition_and_respect_limits(lengths, batch_size, max_tokens):
    batches = list(length_sorted_batches(lengths, batch_size, max_tokens))
    seen = [int(i) for b in batches for i in b]
    assert sorted(seen) == list(range(len(lengths)))
    previous = None
    for b in batches:
        rows = [lengths[i] for i in b]
        assert 1 <= len(b) <= batch_size
        assert len(b) == 1 or len(b) * max(rows) <= max_tokens
        assert rows == sorted(rows, reverse=True)
        if previous is not None:
            assert max(rows) <= previous
        previous = min(rows)


def test_pad_to_multiple_of_rounds_up_within_max_length(bundles):
    from mbert_edge.tokenizer import BundleTokenizer

    tok = BundleTokenizer(bundles["feature-extraction"] / "tokenizer.json", 40)
    short, longer = tok.encode(["a b", "a b c d e f g h i j k l m n o p q r s t"])
    assert len(short.ids) < 16 < len(longer.ids) < 32  # [CLS] + words + [SEP]
    assert tok.pad([short])["input_ids"].shape == (1, len(short.ids))
    feeds = tok.pad([short, longer], multiple_of=16)
    assert feeds["input_ids"].shape == feeds["attention_mask"].shape == (2, 32)
    assert feeds["attention_mask"].sum(axis=1).tolist() == [len(short.ids), len(longer.ids)]
    assert (feeds["input_ids"][0, len(short.ids) :] == tok.pad_id).all()
    assert tok.pad([longer], multiple_of=64)["input_ids"].shape == (1, 40)  # never past max_length
    assert tok.pad([longer], multiple_of=16)["input_ids"].shape == (1, 32)


@settings(deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5000), max_size=300),
    max_items=st.integers(min_value=1, max_value=50),
    max_total=st.integers(min_value=1, max_value=20_000),
)
def test_bounded_chunks_cover_in_order_within_limits(sizes, max_items, max_total):
    runs = list(bounded_chunks(iter(sizes), max_items, max_total))  # any iterable: the predictor passes a generator
    assert [i for a, b in runs for i in range(a, b)] == list(range(len(sizes)))
    for a, b in runs:
        assert 1 <= b - a <= max_items
        assert b - a == 1 or sum(sizes[a:b]) <= max_total
