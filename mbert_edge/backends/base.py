"""The backend interface: what the predictor needs from anything that runs a bundle's model file.

A backend takes int64 feeds (``input_ids``, ``attention_mask``, ``token_type_ids``) and returns the named
outputs as numpy arrays. Backends declare which model files they can run (by the manifest's ``backend``
and ``format`` fields) and which precisions they prefer, so that ``backend="auto"`` can pick the best
one that is installed *and* has a file in the bundle.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from mbert_edge.manifest import FileEntry


class Backend(abc.ABC):
    """Runs one model file. Subclasses are registered in :mod:`mbert_edge.backends`."""

    #: the name users pass as ``backend=``
    name: ClassVar[str]
    #: the manifest ``backend`` and ``format`` values of the files it can run
    file_backend: ClassVar[str]
    file_format: ClassVar[str]
    #: precisions it prefers, best first; files of other precisions are not chosen automatically
    precisions: ClassVar[tuple[str, ...]]
    #: the pip extra that installs what it needs, for error messages
    extra: ClassVar[str | None] = None
    #: whether ``backend="auto"`` may choose it (optional heavy runtimes are chosen by name only)
    auto: ClassVar[bool] = True
    #: batches are padded to a sequence length that is a multiple of this (1: to the longest text)
    pad_to_multiple_of: ClassVar[int] = 1

    @classmethod
    @abc.abstractmethod
    def is_available(cls) -> bool:
        """Whether the libraries and hardware this backend needs are present."""

    @classmethod
    def pick_file(cls, files: list[FileEntry], precision: str | None = None) -> FileEntry | None:
        """The model file this backend would run: the given precision, or its most preferred one."""
        runnable = [f for f in files if f.backend == cls.file_backend and f.format == cls.file_format]
        # the browser variant (INT8 weights, fp32 activations; slower here) only when no other file of its precision
        runnable.sort(key=lambda f: f.quantization == "weight-only")
        wanted = (precision,) if precision else cls.precisions
        for p in wanted:
            for f in runnable:
                if f.precision == p:
                    return f
        return None

    @abc.abstractmethod
    def __init__(self, model_path: Path, threads: int | None = None, precision: str | None = None) -> None:
        """Load ``model_path`` (a file of the given precision) to run with ``threads`` CPU threads."""

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]:
        """Names of the model's inputs."""

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on one padded batch; ``feeds`` may hold more inputs than the model takes."""
