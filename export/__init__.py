"""mbert-edge export stage (heavy: torch, transformers, onnx): Hugging Face checkpoint -> verified bundle.

Installed as ``mbert_edge_export`` from the repository's top-level ``export/`` folder. Its dependencies come with
the ``export`` extra (``pip install 'mbert-edge[export]'``); without them, importing this package raises a
``ModuleNotFoundError`` that names the missing module and the extra.

    >>> from mbert_edge_export import export_bundle
    >>> export_bundle("default", "bundles/e5-small")
"""

from __future__ import annotations

import importlib.util

EXTRA_HINT = "pip install 'mbert-edge[export]'"
# checked up front: most of them are imported only inside functions, so a missing one would otherwise surface
# mid-export as a bare ModuleNotFoundError
_REQUIRED = ("torch", "transformers", "onnx")


def _missing_extra(*names: str) -> ModuleNotFoundError:
    """The error raised when dependencies of the ``export`` extra are not installed (``name``: the first)."""
    return ModuleNotFoundError(
        f"the export stage (mbert_edge_export) needs {', '.join(names)}, not installed here: {EXTRA_HINT} "
        "(the runtime, mbert_edge, needs only numpy, onnxruntime, tokenizers and sentencepiece)",
        name=names[0],
    )


_absent = [m for m in _REQUIRED if importlib.util.find_spec(m) is None]
if _absent:
    raise _missing_extra(*_absent)

try:
    from mbert_edge_export.errors import ExportError, ParityError, SourceError, TokenizerMismatchError
    from mbert_edge_export.pipeline import export_bundle
except ModuleNotFoundError as exc:  # another dependency of the extra (safetensors, onnx's helpers, ...)
    if exc.name is None or exc.name.partition(".")[0] in ("mbert_edge", "mbert_edge_export"):
        raise  # a broken install of this project, not a missing extra
    raise _missing_extra(exc.name) from exc

__all__ = ["EXTRA_HINT", "ExportError", "ParityError", "SourceError", "TokenizerMismatchError", "export_bundle"]
