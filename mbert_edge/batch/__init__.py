"""Offline batch scoring: every row of large JSONL/CSV/Parquet inputs scored exactly once, resumably.

    >>> from mbert_edge.batch import score
    >>> report = score("bundles/e5-small", ["texts.jsonl"], "out/")   # doctest: +SKIP
    >>> report.rows_in, report.errors, report.files                   # doctest: +SKIP

The command line is ``mbert-edge score BUNDLE INPUT... -o OUT_DIR``; see docs/batch-scoring.md. Needs
``pip install 'mbert-edge[batch]'`` (pyarrow); the Ray engine ``mbert-edge[ray]``. ``import mbert_edge``
never imports this package, and this package imports pyarrow and Ray only when a job runs.
"""

from __future__ import annotations

from mbert_edge.batch.api import DEFAULT_SHARD_ROWS, score
from mbert_edge.batch.errors import (
    BatchDependencyError,
    BatchError,
    JobLockedError,
    JobMismatchError,
    TooManyErrorsError,
)
from mbert_edge.batch.report import ScoreReport
from mbert_edge.batch.workers import default_split

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "BatchDependencyError",
    "BatchError",
    "JobLockedError",
    "JobMismatchError",
    "ScoreReport",
    "TooManyErrorsError",
    "default_split",
    "score",
]
