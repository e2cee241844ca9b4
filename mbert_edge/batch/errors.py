"""Typed errors of offline batch scoring (``mbert-edge score``, :func:`mbert_edge.batch.score`)."""

from __future__ import annotations

from mbert_edge.errors import MbertEdgeError


class BatchError(MbertEdgeError):
    """A batch scoring job cannot start or go on: bad inputs, bad options, a failed worker."""


class BatchDependencyError(BatchError, ImportError):
    """Batch scoring needs pyarrow (``pip install 'mbert-edge[batch]'``), the Ray engine ``mbert-edge[ray]``."""


class JobLockedError(BatchError):
    """Another run holds the output directory's lock: two runs of one job at the same time are refused."""


class JobMismatchError(BatchError):
    """The output directory holds a job planned with another bundle, other options or other inputs.

    ``differences`` lists what differs, one line each; ``restart=True`` (``--restart``) starts over.
    """

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


class TooManyErrorsError(BatchError):
    """More rows failed than ``max_errors`` allows; the parts committed so far are kept for a resume."""
