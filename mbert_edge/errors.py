"""Typed errors of mbert-edge. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class MbertEdgeError(Exception):
    """Base class of every error mbert-edge raises on purpose."""


class BundleError(MbertEdgeError):
    """A bundle cannot be used as it is."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """The bundle directory, or its manifest, does not exist."""


class BundleFormatError(BundleError):
    """The manifest is not valid JSON or does not follow the bundle schema."""


class UnsupportedFormatVersionError(BundleFormatError):
    """The bundle was written by a newer mbert-edge than this one."""


class BundleIntegrityError(BundleError):
    """A file listed in the manifest is missing, truncated or altered (checksum mismatch)."""


class BackendUnavailableError(MbertEdgeError):
    """The requested backend is unknown, not installed, or has no model file in this bundle."""


class WrongTaskError(MbertEdgeError):
    """A method was called that the bundle's task does not support (e.g. embed() on a classifier)."""


class InvalidInputError(MbertEdgeError, ValueError):
    """The texts passed in are not a str or a list of valid str (empty, blank, a lone surrogate, nothing the
    tokenizer keeps), or an argument (``top_k``, ``batch_size``, ``prefix``, ``threads``, ...) has a wrong type
    or value. The message names the item (``texts[i]``) or the argument."""


class TextTooLongError(InvalidInputError):
    """A text is longer than the model's max sequence length and truncation was turned off."""


class BundleSignatureError(BundleIntegrityError):
    """A bundle was required to be signed and is not: no ``manifest.sig``, a malformed one, a signature by
    another key, a manifest changed after signing, or a release older than the minimum accepted."""


class SigningError(MbertEdgeError, ValueError):
    """A key or a signing request cannot be used: an unreadable or non-Ed25519 key, a wrong or missing
    passphrase, a key file that already exists, or options that cannot go together."""


class SigningUnavailableError(MbertEdgeError, ImportError):
    """Signing or verifying needs the optional ``cryptography`` package: ``pip install 'mbert-edge[sign]'``."""


class ShapeOutOfProfileError(InvalidInputError):
    """A batch's shape (texts x tokens) lies outside every optimization profile of a TensorRT engine: the
    engine was built for smaller batches or shorter texts. The message gives the shape and the profiles; build
    an engine with larger limits (``mbert-edge build-engine --max-batch/--max-length``) or pass smaller batches."""


class EngineBuildError(BackendUnavailableError):
    """TensorRT could not build (or load) an engine from the bundle's TensorRT file on this device."""
