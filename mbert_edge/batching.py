"""Length-sorted batching: group texts of similar length so padding stays small, then restore input order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

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


def bounded_chunks(sizes: Iterable[int], max_items: int, max_total: int) -> Iterator[tuple[int, int]]:
    """Split the indices of ``sizes`` into consecutive ``(start, stop)`` runs of at most ``max_items`` items and at
    most ``max_total`` summed size (a single larger item gets a run of its own).

    The predictor tokenizes and runs one run at a time, so a million texts never exist as a million encodings.
    """
    if max_items < 1 or max_total < 1:
        raise ValueError("max_items and max_total must be at least 1")
    start = total = n = 0
    for n, size in enumerate(sizes, 1):
        i = n - 1
        if i > start and (i - start >= max_items or total + size > max_total):
            yield start, i
            start, total = i, 0
        total += size
    if start < n:
        yield start, n
