"""Length-sorted batching covers every text once, respects its limits and sorts by length."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mbert_edge.batching import length_sorted_batches


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
