"""The bundled tokenizer: texts to padded id arrays, with truncation at the bundle's ``max_length``.

Two engines read a bundle's tokenizer: :class:`BundleTokenizer` runs ``tokenizer.json`` with Hugging Face
``tokenizers`` (every bundle has one); :class:`~mbert_edge.tokenizer_sentencepiece.SentencePieceTokenizer` runs
``tokenizer.model``, the same Unigram tokenizer as a SentencePiece model, which export writes beside it when it
gives the same ids on the texts it was checked on, ties apart (it loads in about half the time and a third of the
memory). :func:`tokenizer_file` picks one for a bundle. Both share what this module's base class does:

Truncation happens at the bundle's ``max_length`` (special tokens included), at the end of the text.
Padding is done per batch, to the longest sequence of that batch, never to ``max_length``.

A long text is tokenized only as far as its first ``max_length`` tokens need: its head (``head_chars``
characters, 16 per token of ``max_length``) is tokenized first and kept when the tokens kept all come from
complete words before the cut (the tokenizer's own word ids say so); otherwise a 4x longer head is tried, up to
the whole text. The result is the tokenization of the whole text truncated at ``max_length``, exactly, but a
10 MB text costs a few KB of tokenizer work instead of gigabytes of offsets and overflow.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mbert_edge.errors import BundleFormatError, TextTooLongError
from mbert_edge.manifest import TOKEN_CLASSIFICATION, FileEntry, Manifest

if TYPE_CHECKING:
    from tokenizers import Encoding

    from mbert_edge.bundle import Bundle

log = logging.getLogger(__name__)

_PAD_CANDIDATES = ("[PAD]", "<pad>", "<PAD>")
_HEAD_CHARS_PER_TOKEN = 16  # first guess of the characters max_length tokens need (text runs ~2-8 per token)


class TokenEncoding(Protocol):
    """One encoded text, as the predictor reads it (``tokenizers.Encoding`` is one)."""

    @property
    def ids(self) -> list[int]: ...
    @property
    def type_ids(self) -> list[int]: ...
    @property
    def special_tokens_mask(self) -> list[int]: ...
    @property
    def overflowing(self) -> Sequence[object]:
        """Non-empty when the text was cut at ``max_length``."""
        ...


class TextTokenizer:
    """What every tokenizer engine shares: long texts tokenized by their head, the truncation policy, padding.

    An engine implements ``_encode_batch``, ``_encode_one`` (truncated at ``max_length``, special tokens added),
    ``_decided_by_head``, ``has_content``, ``decode_tokens`` and ``id_to_token``, and sets ``pad_id`` and ``unk_id``.
    """

    #: the engine's name, for logs and ``Predictor`` users: "tokenizers" or "sentencepiece"
    engine = ""
    pad_id: int
    unk_id: int | None

    def __init__(self, max_length: int, truncation: bool = True) -> None:
        self.max_length = max_length
        self.truncation = truncation
        #: characters of a long text tokenized at first (see the module docstring)
        self.head_chars = max(1024, _HEAD_CHARS_PER_TOKEN * max_length)

    def _encode_batch(self, texts: list[str]) -> list[Any]:
        raise NotImplementedError

    def _encode_one(self, text: str) -> Any:
        raise NotImplementedError

    def _decided_by_head(self, head: Any) -> bool:
        raise NotImplementedError

    def has_content(self, encoding: Any, skip_chars: int = 0) -> bool:
        """Whether ``encoding`` holds a token (not a special one) from the text after its first ``skip_chars``
        characters (a prefix put before the text): False for text the tokenizer drops entirely, such as
        control, format or zero-width characters."""
        raise NotImplementedError

    def decode_tokens(self, tokens: Sequence[str]) -> str:
        """Join tokens back into text the way the tokenizer's decoder does (e.g. WordPiece's ``##``)."""
        raise NotImplementedError

    def id_to_token(self, token_id: int) -> str:
        """The token string of an id."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str], where: Callable[[int], str] | None = None) -> list[Any]:
        """Encode texts (with special tokens), truncated to ``max_length``; ``enc.overflowing`` is non-empty
        for a text that was cut.

        Raises :class:`~mbert_edge.errors.TextTooLongError` when truncation is off and a text is too long,
        naming it by ``where(index)`` (default ``"text {index}"``).
        """
        texts = list(texts)
        limit = self.head_chars
        long = [i for i, t in enumerate(texts) if len(t) > limit]
        encodings = self._encode_batch([t[:limit] for t in texts] if long else texts)
        for i in long:
            encodings[i] = self._encode_long(texts[i], encodings[i], limit)
        if not self.truncation:
            for i, enc in enumerate(encodings):
                if enc.overflowing:
                    name = where(i) if where is not None else f"text {i}"
                    raise TextTooLongError(
                        f"{name} is longer than the model's {self.max_length} tokens; shorten or split it, or "
                        "load the bundle with truncation=True to cut it at max_length"
                    )
        return encodings

    def _encode_long(self, text: str, head: Any, size: int) -> Any:
        """The encoding of ``text`` truncated at ``max_length``, from its shortest head that decides it."""
        while size < len(text):
            if self._decided_by_head(head):
                return head
            size *= 4
            head = self._encode_one(text[:size])
        return head  # the whole text, when no shorter head decided it

    def padded_width(self, length: int, multiple_of: int = 1) -> int:
        """``length`` rounded up to a multiple of ``multiple_of``, never past ``max_length`` (nor below
        ``length``): for runtimes that prepare kernels per input shape and so profit from few distinct lengths."""
        return max(length, min(-(-length // multiple_of) * multiple_of, self.max_length))

    def pad(self, encodings: Sequence[TokenEncoding], multiple_of: int = 1) -> dict[str, np.ndarray]:
        """Stack encodings into int64 arrays padded to the longest one of the batch, rounded up by
        :meth:`padded_width`."""
        n = len(encodings)
        width = self.padded_width(max(len(e.ids) for e in encodings), multiple_of)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            ids[row, :k] = enc.ids
            mask[row, :k] = 1
            types[row, :k] = enc.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class BundleTokenizer(TextTokenizer):
    """The bundle's ``tokenizer.json`` run by Hugging Face ``tokenizers``: every bundle can use it."""

    engine = "tokenizers"

    def __init__(self, path: str | Path, max_length: int, truncation: bool = True) -> None:
        from tokenizers import Tokenizer

        super().__init__(max_length, truncation)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise BundleFormatError(f"cannot read the bundled tokenizer {path}: {exc}; re-export the bundle") from exc
        self._tok.no_padding()
        # Truncation is always on in the tokenizer (so a 1 MB text never becomes a 1 MB tensor); with
        # truncation=False we report texts that needed it instead of returning their shortened form.
        self._tok.enable_truncation(max_length)
        self.pad_id = next((i for t in _PAD_CANDIDATES if (i := self._tok.token_to_id(t)) is not None), 0)
        self.unk_id = self._unk_id()

    def _unk_id(self) -> int | None:
        model = self._tok.model
        unk = getattr(model, "unk_token", None)
        if isinstance(unk, str):
            return self._tok.token_to_id(unk)
        unk_id = getattr(model, "unk_id", None)
        if isinstance(unk_id, int):
            return unk_id
        # a Unigram model says neither: ask it for a character no vocabulary holds (private use plane 16)
        try:
            tokens = model.tokenize("\U0010fffd")
        except Exception:  # a model without an unknown token raises
            return None
        unknown = len(tokens) == 1 and model.id_to_token(tokens[0].id) != "\U0010fffd"
        return tokens[0].id if unknown else None

    def _encode_batch(self, texts: list[str]) -> list[Encoding]:
        return self._tok.encode_batch(texts)

    def _encode_one(self, text: str) -> Encoding:
        return self._tok.encode(text)

    def _decided_by_head(self, head: Encoding) -> bool:
        """Whether the tokens kept from a head are those of the whole text: the head was cut (it overflows) and
        every kept token belongs to a word before the last one, the only word the cut can have changed."""
        if not head.overflowing:
            return False  # the rest of the text may still add tokens within max_length
        kept = [w for w in head.word_ids if w is not None]
        last = [w for w in head.overflowing[-1].word_ids if w is not None]
        return bool(kept) and bool(last) and max(kept) < last[-1]

    def has_content(self, encoding: Encoding, skip_chars: int = 0) -> bool:
        """Whether ``encoding`` holds a token (not a special one) covering a character at or after ``skip_chars``
        (the length of a prefix put before the text): False for text the tokenizer drops entirely, such as
        control, format or zero-width characters under BERT's normalizer."""
        return any(
            not special and end > skip_chars
            for special, (_, end) in zip(encoding.special_tokens_mask, encoding.offsets, strict=True)
        )

    def decode_tokens(self, tokens: Sequence[str]) -> str:
        """Join tokens back into text the way the tokenizer's decoder does (e.g. WordPiece's ``##``)."""
        decoder = self._tok.decoder
        if decoder is None:
            return "".join(tokens)
        return decoder.decode(list(tokens))

    def id_to_token(self, token_id: int) -> str:
        """The token string of an id."""
        return self._tok.id_to_token(token_id) or ""


def tokenizer_file(manifest: Manifest) -> FileEntry:
    """The tokenizer file a predictor of this bundle reads.

    ``tokenizer.model`` (SentencePiece) when the bundle has one, the task needs no character offsets (token
    classification reads them from ``tokenizers``' encodings) and ``sentencepiece`` is installed;
    ``tokenizer.json`` otherwise. Both give the same ids, ties apart (see :mod:`mbert_edge.tokenizer_sentencepiece`).
    """
    entry = manifest.sentencepiece_file()
    if entry is not None and manifest.task != TOKEN_CLASSIFICATION:
        if importlib.util.find_spec("sentencepiece") is not None:
            return entry
        log.info("sentencepiece is not installed: reading tokenizer.json instead of %s (slower to load)", entry.path)
    return manifest.tokenizer_file()


def open_tokenizer(bundle: Bundle, entry: FileEntry, truncation: bool = True, verify: bool = True) -> TextTokenizer:
    """The tokenizer of ``entry`` (from :func:`tokenizer_file`; the caller hashes it first when ``verify``).

    A SentencePiece tokenizer opens ``tokenizer.json`` too, the first time a text needs it, hashed first when
    ``verify`` (a damaged one then raises from that call).
    """
    if entry.role != "tokenizer-sentencepiece":
        return BundleTokenizer(bundle.file_path(entry), bundle.manifest.max_length, truncation=truncation)
    from mbert_edge.tokenizer_sentencepiece import SentencePieceTokenizer

    json_entry = bundle.manifest.tokenizer_file()  # listed (and present: Bundle.open checks) before it is needed

    def fallback() -> BundleTokenizer:  # tokenizer.json, for the rare text SentencePiece reads otherwise
        if verify:
            bundle.verify([json_entry])
        return BundleTokenizer(bundle.file_path(json_entry), bundle.manifest.max_length, truncation=truncation)

    return SentencePieceTokenizer(
        bundle.file_path(entry),
        bundle.manifest.max_length,
        entry.special_ids or {},
        fallback=fallback,
        truncation=truncation,
        fallback_pattern=entry.fallback_pattern,
    )
