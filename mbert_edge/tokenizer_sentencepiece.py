"""``tokenizer.model``: the bundle's Unigram tokenizer run by SentencePiece, for a faster start in less memory.

Export writes it beside ``tokenizer.json`` for Unigram tokenizers (XLM-R, e5) when it gives the same ids on the
texts of its check, ties apart (``mbert_edge_export.sentencepiece_model``). The two differ in how they hold the
vocabulary: ``tokenizers`` builds a trie of hash maps when it loads (72,000 pieces: ~0.11 s and ~55 MB),
SentencePiece a double array (~0.06 s and ~20 MB), and SentencePiece's per-text ``encode`` is faster too.

The model file is the bundle's vocabulary, in order, with one piece more at the end: SentencePiece's unknown piece,
which it never matches in text. The ``<unk>`` piece of the vocabulary stays a normal piece, so that ``<unk>``
written in a text is matched as ``tokenizers`` matches it; an unknown character gets the stand-in's id, which this
module maps to ``<unk>``'s. The template's tokens (``<s>`` ... ``</s>``) come from the manifest's ``special_ids``.

Some texts are read differently by the two: a literal "▁" (SentencePiece takes it for whitespace), NEL, U+0085
(``tokenizers`` strips it at the ends of a text), and a character the normalization map rewrites followed by a
combining mark in a grapheme shorter than 6 bytes (``tokenizers`` replaces the whole grapheme by the character's
mapping, dropping the mark; SentencePiece keeps it). Export writes a regular expression matching such texts into
the manifest (``fallback_pattern``); a text it matches goes to ``tokenizer.json``, opened the first time one
comes. Where two segmentations score the same (the same pieces in another order, as in runs of one character,
or scores equal to float32's precision), the two may pick different ones: export counts those texts.

What SentencePiece does not give: character offsets as ``tokenizers`` computes them (it assigns whitespace to
pieces differently), so token-classification bundles always read ``tokenizer.json``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbert_edge.errors import BundleFormatError
from mbert_edge.tokenizer import BundleTokenizer, TextTokenizer

_WORD_START = "\u2581"  # SentencePiece's whitespace mark: a piece starting with it starts a word
#: texts the two engines read differently, when the manifest gives no pattern: a literal word mark (SentencePiece
#: takes it for whitespace, tokenizers' normalizers do not) and NEL, U+0085 (tokenizers' Strip removes it at the
#: ends, SentencePiece keeps it)
DEFAULT_FALLBACK_PATTERN = "[\u2581\u0085]"
#: prefixes whose piece count is remembered (has_content); the cache starts over when full
PREFIX_CACHE_SIZE = 64


@dataclass
class SentencePieceEncoding:
    """One text's ids with the template's special tokens, truncated at ``max_length``."""

    ids: list[int]
    #: the text that was encoded (``has_content`` looks at it again)
    text: str
    #: the text's ids before truncation, without special tokens (a long text's head decides on them)
    pieces: list[int] = field(repr=False)

    @property
    def overflowing(self) -> list[int]:
        """The text's ids cut off by truncation (empty when it fit)."""
        return self.pieces[len(self.ids) - 2 :]

    @property
    def type_ids(self) -> list[int]:
        return [0] * len(self.ids)

    @property
    def special_tokens_mask(self) -> list[int]:
        return [1, *([0] * (len(self.ids) - 2)), 1]


class SentencePieceTokenizer(TextTokenizer):
    """Runs ``tokenizer.model``; ``special_ids`` maps "bos", "eos", "unk" and "pad" to the vocabulary's ids.

    ``fallback`` opens the bundle's ``tokenizer.json`` (:class:`BundleTokenizer`), called the first time a text
    holds a character the two treat differently (see the module docstring); most processes never call it.
    """

    engine = "sentencepiece"

    def __init__(
        self,
        path: str | Path,
        max_length: int,
        special_ids: Mapping[str, int],
        fallback: Callable[[], BundleTokenizer],
        truncation: bool = True,
        fallback_pattern: str | None = None,
    ) -> None:
        import sentencepiece

        super().__init__(max_length, truncation)
        missing = [k for k in ("bos", "eos", "unk", "pad") if not isinstance(special_ids.get(k), int)]
        if missing:
            raise BundleFormatError(
                f"the manifest entry of {Path(path).name} lacks special_ids {', '.join(missing)}; re-export the bundle"
            )
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.LoadFromFile(str(path))
        except Exception as exc:  # sentencepiece raises OSError or RuntimeError, by version
            raise BundleFormatError(f"cannot read the bundled tokenizer {path}: {exc}; re-export the bundle") from exc
        size = self._sp.get_piece_size()
        self._stand_in = self._sp.unk_id()
        if self._stand_in != size - 1 or any(not 0 <= special_ids[k] < size - 1 for k in ("bos", "eos", "unk", "pad")):
            raise BundleFormatError(f"{path} does not match its manifest entry's special_ids; re-export the bundle")
        self._bos, self._eos = special_ids["bos"], special_ids["eos"]
        self.unk_id = special_ids["unk"]
        self.pad_id = special_ids["pad"]
        self._keep = max_length - 2  # the text's tokens kept beside <s> and </s>
        self._open_fallback = fallback
        self._fallback: BundleTokenizer | None = None
        self._fallback_lock = threading.Lock()
        try:
            self._exact_only = re.compile(fallback_pattern or DEFAULT_FALLBACK_PATTERN)
        except re.error as exc:
            raise BundleFormatError(f"the manifest's fallback_pattern for {path} is not valid: {exc}") from exc
        self._prefix_pieces: dict[str, int] = {}  # pieces of each prefix seen, for has_content

    def _starts_word(self, piece_id: int) -> bool:
        return self._sp.id_to_piece(piece_id).startswith(_WORD_START)

    def _exact(self) -> BundleTokenizer:
        with self._fallback_lock:
            if self._fallback is None:
                self._fallback = self._open_fallback()
            return self._fallback

    def encode(self, texts: Sequence[str], where: Callable[[int], str] | None = None) -> list[Any]:
        """As :meth:`TextTokenizer.encode`; texts SentencePiece would tokenize otherwise go to ``tokenizer.json``."""
        texts = list(texts)
        matched = [self._exact_only.search(t) is not None for t in texts]
        if not any(matched):
            return super().encode(texts, where)
        name = where or (lambda i: f"text {i}")
        exact = [i for i, m in enumerate(matched) if m]
        rest = [i for i, m in enumerate(matched) if not m]
        out: list[Any] = [None] * len(texts)
        for indices, encoder in ((rest, super().encode), (exact, self._exact().encode)):
            if indices:
                encoded = encoder([texts[i] for i in indices], lambda k, idx=indices: name(idx[k]))
                for i, enc in zip(indices, encoded, strict=True):
                    out[i] = enc
        return out

    def _encode_one(self, text: str) -> SentencePieceEncoding:
        pieces = self._sp.encode(text)
        kept = pieces[: self._keep]
        if self._stand_in in kept:
            kept = [self.unk_id if i == self._stand_in else i for i in kept]
        return SentencePieceEncoding([self._bos, *kept, self._eos], text, pieces)

    def _encode_batch(self, texts: list[str]) -> list[SentencePieceEncoding]:
        # one call per text: SentencePiece's batch call starts threads, which costs more than it saves here
        return [self._encode_one(t) for t in texts]

    def _decided_by_head(self, head: SentencePieceEncoding) -> bool:
        """Whether the tokens kept from a head are those of the whole text: the head was cut and its last word
        (the only one the cut can have changed) starts after the kept tokens. Pieces never hold an inner word
        mark (export checks it), so a word starts exactly at a piece that starts with one."""
        if not head.overflowing:
            return False
        pieces = head.pieces
        last = next((i for i in range(len(pieces) - 1, -1, -1) if self._starts_word(pieces[i])), -1)
        return last >= self._keep

    def has_content(self, encoding: Any, skip_chars: int = 0) -> bool:
        """Whether ``encoding`` keeps a token (not a special one) from the text after its first ``skip_chars``
        characters (a prefix put before it): False for text the normalizer drops entirely (control, format or
        zero-width characters), or when the prefix alone fills ``max_length``."""
        if not isinstance(encoding, SentencePieceEncoding):
            return self._exact().has_content(encoding, skip_chars)
        kept = len(encoding.ids) - 2
        if skip_chars == 0:
            return kept > 0
        prefix = encoding.text[:skip_chars]
        if prefix[-1:].isspace():  # the text starts a word: its pieces follow the prefix's own
            n = self._prefix_pieces.get(prefix)
            if n is None:
                n = len(self._sp.encode(prefix))
                if len(self._prefix_pieces) >= PREFIX_CACHE_SIZE:  # a caller with ever new prefixes: stay bounded
                    self._prefix_pieces.clear()
                self._prefix_pieces[prefix] = n
            return kept > n
        # a prefix that runs into the text's first word (rare): does the rest give any piece at all?
        rest = encoding.text[skip_chars:]
        head = rest[: self.head_chars]
        return kept > 0 and (bool(self._sp.encode(head)) or (len(rest) > len(head) and bool(self._sp.encode(rest))))

    def decode_tokens(self, tokens: Sequence[str]) -> str:
        """Join pieces back into text: word marks become spaces, the first one dropped."""
        return "".join(tokens).replace(_WORD_START, " ").removeprefix(" ")

    def id_to_token(self, token_id: int) -> str:
        """The piece of an id."""
        return self._sp.id_to_piece(token_id) if 0 <= token_id < self._stand_in else ""
