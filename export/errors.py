"""Typed errors of the export stage."""

from __future__ import annotations

from mbert_edge.errors import MbertEdgeError


class ExportError(MbertEdgeError):
    """Export could not produce a bundle; nothing was written to the output directory."""


class SourceError(ExportError):
    """The model source cannot be found or read (missing files, unknown architecture, not in the cache)."""


class TokenizerMismatchError(ExportError):
    """The converted fast tokenizer does not give the same ids as the checkpoint's own tokenizer."""


class ParityError(ExportError):
    """The ONNX model's outputs differ from PyTorch's by more than the tolerance."""


class DistillError(ExportError):
    """``mbert-edge distill`` could not make a student (bad settings, no data, or the retention gate failed).

    When the retention gate fails, :attr:`distill_report` holds the evaluation report.
    """

    def __init__(self, message: str, distill_report: dict | None = None) -> None:
        super().__init__(message)
        self.distill_report = distill_report
