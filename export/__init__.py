"""mbert-edge export stage (heavy: torch, transformers, onnx): Hugging Face checkpoint -> verified bundle.

Installed as ``mbert_edge_export`` from the repository's top-level ``export/`` folder.

    >>> from mbert_edge_export import export_bundle
    >>> export_bundle("default", "bundles/e5-small")
"""

from __future__ import annotations

from mbert_edge_export.errors import ExportError, ParityError, SourceError, TokenizerMismatchError
from mbert_edge_export.pipeline import export_bundle

__all__ = ["ExportError", "ParityError", "SourceError", "TokenizerMismatchError", "export_bundle"]
