"""Length-sorted batching: group texts of similar length so padding stays small, then restore input order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> Iterator[np.ndarray]:
    """Yield arrays of indices into ``lengths``, longest texts first.

    Each batch holds at most ``batch_size`` texts and at most ``max_tokens`` padded tokens (batch rows times
    the longest length in it), which bounds memory for long inputs. A single text longer than
    ``max_tokens`` still gets a batch of its own.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        rows = max(1, min(batch_size, max_tokens // max(longest, 1)))
        yield order[start : start + rows]
        start += rows
