"""mbert-edge runtime: load an exported bundle and predict with low latency.

    >>> import mbert_edge
    >>> model = mbert_edge.load("bundles/e5-small")
    >>> model.embed(["Hello world", "Hallo Welt"]).shape
    (2, 384)

The runtime needs only numpy, onnxruntime, tokenizers and sentencepiece; it never imports torch or transformers.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from mbert_edge import backends
from mbert_edge.backends import int8_kernels
from mbert_edge.bundle import Bundle
from mbert_edge.errors import (
    BackendUnavailableError,
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleNotFoundError,
    BundleSignatureError,
    InvalidInputError,
    MbertEdgeError,
    SigningError,
    SigningUnavailableError,
    TextTooLongError,
    UnsupportedFormatVersionError,
    WrongTaskError,
)
from mbert_edge.manifest import FORMAT_VERSION, Manifest
from mbert_edge.predictor import Predictor
from mbert_edge.tokenizer import open_tokenizer, tokenizer_file

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mbert_edge.backends.base import Backend
    from mbert_edge.signing import PublicKeys

__version__ = "0.1.0"


def load(
    path: str | Path,
    backend: str = "auto",
    threads: int | None = None,
    *,
    precision: str | None = None,
    truncation: bool = True,
    verify: bool = True,
    public_key: PublicKeys | None = None,
) -> Predictor:
    """Open the bundle at ``path`` and return a ready :class:`Predictor`.

    Args:
        path: a bundle directory written by ``mbert-edge export``.
        backend: ``"auto"`` (the best installed backend with a file in the bundle) or a backend name
            (``"onnxruntime"``, alias ``"cpu"``).
        threads: CPU threads for one call (default: the runtime's choice, the physical cores).
        precision: run the model file of this precision (``"fp32"``, ...) instead of the backend's favourite.
        truncation: cut texts longer than the bundle's ``max_length`` tokens (default); with ``False`` such
            a text raises :class:`TextTooLongError`.
        verify: check the SHA-256 of the files it loads (the chosen model file, its weights and the tokenizer)
            against the manifest, each before it is read (default); every listed file's presence and size is
            always checked.
        public_key: require a valid ``manifest.sig`` by this Ed25519 public key (a key file path, PEM, raw
            32 bytes or their base64 text; a list/tuple accepts any of several keys). It is checked first,
            before any other file is read, and the files loaded are then hashed (needs ``verify=True``).
            Raises :class:`BundleSignatureError` for an unsigned bundle, another key, or a changed
            manifest or file; needs ``pip install 'mbert-edge[sign]'``. See ``docs/signing.md``.

    Arguments of the wrong type or value raise :class:`InvalidInputError` before anything is read.
    """
    _check_load_arguments(path, backend, threads, precision, truncation, verify)
    signature = None
    if public_key is not None:
        if not verify:
            raise SigningError("public_key needs verify=True: the signature covers the files only through checksums")
        from mbert_edge.signing import verify_signature

        signature = verify_signature(path, public_key)  # manifest.json and manifest.sig only, before anything else
    bundle = Bundle.open(path, verify=False)  # schema, version, presence and sizes of every file
    if signature is not None:
        signature.check_manifest(bundle.manifest)  # the manifest parsed is the one whose signature was checked
    backend_cls, entry = backends.choose(backend, bundle.manifest.model_files(), precision)
    tokenizer_entry = tokenizer_file(bundle.manifest)  # tokenizer.model (SentencePiece) or tokenizer.json
    if verify:  # hash what this predictor reads, each file before it is read; `mbert-edge info` hashes every file
        bundle.verify([tokenizer_entry])

    def open_backend() -> Backend:
        if verify:
            bundle.verify(bundle.manifest.files_of(entry))
        bundle.check_model_references(entry)  # the graph reads no tensor data that the manifest does not pin
        model = backend_cls(bundle.file_path(entry), threads=threads, precision=entry.precision)
        if entry.precision == "int8" and backend_cls.file_backend == "onnxruntime":
            note = int8_kernels.unsmoothed_file_note(bundle.manifest.fidelity.get("int8") or {})
            if note:
                log.warning("%s: %s", path, note)
        return model

    # The model files are hashed and the backend's session built on a second thread while this one reads the
    # tokenizer. Building a 72k-piece Unigram vocabulary holds the GIL (tokenizer.json: ~0.11 s; tokenizer.model:
    # ~0.06 s); hashing and much of ONNX Runtime's setup run without it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mbert-edge-load") as pool:
        backend_future = pool.submit(open_backend)
        tokenizer = open_tokenizer(bundle, tokenizer_entry, truncation=truncation, verify=verify)
        backend_obj = backend_future.result()
    return Predictor(bundle, backend_obj, entry, tokenizer)


def _check_load_arguments(
    path: object, backend: object, threads: object, precision: object, truncation: object, verify: object
) -> None:
    """Refuse arguments of the wrong type or value with :class:`InvalidInputError`, naming the argument."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"path must be a str or os.PathLike bundle directory, not {type(path).__name__}")
    if not isinstance(backend, str):
        raise InvalidInputError(f"backend must be a str such as 'auto' or 'onnxruntime', not {type(backend).__name__}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(
            f"threads must be a positive int, or None for the runtime's default (the physical cores); got {threads!r}"
        )
    if precision is not None and not isinstance(precision, str):
        raise InvalidInputError(f"precision must be a str such as 'fp32' or 'int8', or None; got {precision!r}")
    for name, value in (("truncation", truncation), ("verify", verify)):
        if not isinstance(value, bool):
            raise InvalidInputError(f"{name} must be True or False, not {value!r}")


__all__ = [
    "FORMAT_VERSION",
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BundleNotFoundError",
    "BundleSignatureError",
    "InvalidInputError",
    "Manifest",
    "MbertEdgeError",
    "Predictor",
    "SigningError",
    "SigningUnavailableError",
    "TextTooLongError",
    "UnsupportedFormatVersionError",
    "WrongTaskError",
    "__version__",
    "load",
]
