"""Optional dependencies of batch scoring, imported only when a job runs."""

from __future__ import annotations

from types import ModuleType

from mbert_edge.batch.errors import BatchDependencyError


def pyarrow() -> ModuleType:
    """``pyarrow``, or a :class:`BatchDependencyError` that says how to install it."""
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise BatchDependencyError(
            "batch scoring needs pyarrow, which is not installed: pip install 'mbert-edge[batch]'"
        ) from exc
    return pa
