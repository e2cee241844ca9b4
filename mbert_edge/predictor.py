"""Predictor: one text's path from the caller to the answer.

texts -> validation -> chunks of at most 4096 texts -> tokenizer (prefix, truncation) -> length-sorted batches
      padded to their longest -> backend.run -> task head (classification scores, entities, pooled embeddings)
      -> input order.

Every text is validated before anything runs; a list is then tokenized and run one chunk at a time, so memory
stays bounded by the chunk, not the list (a million texts are never a million encodings at once).
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mbert_edge.backends.base import Backend
from mbert_edge.batching import bounded_chunks, length_sorted_batches
from mbert_edge.bundle import Bundle
from mbert_edge.errors import BundleFormatError, InvalidInputError, WrongTaskError
from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, FileEntry
from mbert_edge.tasks import classification, embedding, token_classification
from mbert_edge.tokenizer import TextTokenizer, TokenEncoding

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_TOKENS = 1024  # padded tokens per model call: docs/benchmarks.md, "Runtime settings"


STREAM_TEXTS = 4096  # texts tokenized and run together at most (the rest wait as str)
STREAM_CHARS = 1 << 20  # characters handed to the tokenizer at once at most (long texts count by their head)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _where(i: int, single: bool) -> str:
    return "the text" if single else f"texts[{i}]"


def _check_text(t: object, where: str) -> None:
    """Raise :class:`InvalidInputError` for anything but a str the tokenizer can take and that is not blank."""
    if not isinstance(t, str):
        raise InvalidInputError(f"{where} is {type(t).__name__}, not str; convert or drop it")
    if not t or t.isspace():
        raise InvalidInputError(f"{where} is empty or only whitespace; drop it before predicting")
    bad = _SURROGATE.search(t)
    if bad is not None:
        raise InvalidInputError(
            f"{where} holds a lone surrogate (U+{ord(bad.group()):04X}) at character {bad.start()}, which is not "
            "valid Unicode (json.loads of an escaped half of a pair, or bytes decoded with errors='surrogateescape', "
            "make these); decode the text correctly, or replace them: text.encode('utf-8', 'replace').decode()"
        )


def _as_texts(texts: Any) -> tuple[list[str], bool]:
    """Validate the caller's input; return the texts as a list and whether a single str was given."""
    if isinstance(texts, str):
        items, single = [texts], True
    elif isinstance(texts, (list, tuple)):
        items, single = list(texts), False
    elif texts is None:
        raise InvalidInputError("texts is None; pass a str or a list of str")
    else:
        raise InvalidInputError(f"texts must be a str or a list of str, not {type(texts).__name__}")
    for i, t in enumerate(items):
        _check_text(t, _where(i, single))
    return items, single


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int, not {value!r}")
    return int(value)


class Predictor:
    """Runs a bundle: ``predict()`` for classifiers and taggers, ``embed()`` for sentence encoders.

    Create one with :func:`mbert_edge.load`. A predictor is safe to call from several threads.
    """

    def __init__(self, bundle: Bundle, backend: Backend, model_file: FileEntry, tokenizer: TextTokenizer) -> None:
        self.bundle = bundle
        self.backend = backend
        self.model_file = model_file
        self.tokenizer = tokenizer
        self.manifest = bundle.manifest

    # ----------------------------------------------------------------- facts
    @property
    def task(self) -> str:
        """The bundle's task: text-classification, token-classification or feature-extraction."""
        return self.manifest.task

    @property
    def labels(self) -> list[str]:
        """Label names in id order (empty for feature extraction)."""
        labels = self.manifest.labels or {}
        return [labels[i] for i in sorted(labels)]

    def __repr__(self) -> str:
        f = self.model_file
        return (
            f"Predictor(task={self.task!r}, backend={self.backend.name!r}, file={f.path!r}, precision={f.precision!r})"
        )

    # --------------------------------------------------------------- public API
    def predict(self, texts: str | Sequence[str], top_k: int | None = 1, batch_size: int = DEFAULT_BATCH_SIZE) -> Any:
        """Classify texts (text-classification) or find entities in them (token-classification).

        text-classification: per text ``{"label", "score"}`` (``top_k=1``), a list of the ``top_k`` best,
        or every label with its score (``top_k=None``), as transformers' pipelines do.
        token-classification: per text a list of ``{"entity_group", "score", "word", "start", "end"}``,
        word-level groups as transformers' ``aggregation_strategy="simple"``; ``start``/``end`` index the
        original text. A str gives one result; a list gives a list in input order.
        """
        if self.task == FEATURE_EXTRACTION:
            raise WrongTaskError("this bundle makes sentence embeddings: call embed(texts), not predict()")
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
                raise InvalidInputError(f"top_k must be a positive int, or None for every label; got {top_k!r}")
            top_k = int(top_k)
        batch_size = _positive_int(batch_size, "batch_size")
        items, single = _as_texts(texts)
        results: list[Any] = [None] * len(items)
        labels = self.manifest.labels or {}
        for idx, encodings, _feeds, outputs in self._forward(items, batch_size, single=single):
            logits = next(iter(outputs.values()))
            if logits.shape[-1] != len(labels):
                per = "text" if self.task == TEXT_CLASSIFICATION else "token"
                raise BundleFormatError(
                    f"the model gives {logits.shape[-1]} scores per {per} but the manifest names {len(labels)} "
                    "labels: its model file and manifest do not belong together; export the bundle again"
                )
            if self.task == TEXT_CLASSIFICATION:
                scores = classification.scores_from_logits(logits, self.manifest.score_function)
                for row, i in enumerate(idx):
                    results[i] = classification.format_scores(scores[row], labels, top_k)
            else:
                for row, i in enumerate(idx):
                    enc = encodings[row]
                    n = len(enc.ids)
                    scores = classification.softmax(logits[row, :n].astype(np.float32))
                    results[i] = token_classification.aggregate_simple(
                        items[i],
                        scores,
                        enc.ids,
                        enc.tokens,
                        enc.offsets,
                        enc.special_tokens_mask,
                        labels,
                        self.tokenizer.decode_tokens,
                        self.tokenizer.unk_id,
                    )
        return results[0] if single else results

    def embed(
        self,
        texts: str | Sequence[str],
        normalize: bool | None = None,
        prefix: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> np.ndarray:
        """Sentence embeddings as float32: shape (n, dim) for a list, (dim,) for a single str.

        ``normalize`` defaults to the manifest (L2 norm for most sentence encoders). ``prefix`` is put in
        front of every text; by default the model's own (``"query: "`` for e5 models, which e5 recommends
        for symmetric tasks; use ``prefix="passage: "`` for documents in retrieval). ``prefix=""`` disables it.
        """
        spec = self.manifest.embedding
        if self.task != FEATURE_EXTRACTION or spec is None:
            raise WrongTaskError(f"this bundle is a {self.task} model: call predict(texts), not embed()")
        if prefix is None:
            prefix = spec.default_prefix
        elif not isinstance(prefix, str):
            raise InvalidInputError(f"prefix must be a str (use '' for none), not {type(prefix).__name__}")
        elif _SURROGATE.search(prefix):
            raise InvalidInputError("prefix holds a lone surrogate, which is not valid Unicode; fix its decoding")
        if normalize is not None and not isinstance(normalize, (bool, np.bool_)):
            raise InvalidInputError(f"normalize must be True, False or None (the bundle's choice), not {normalize!r}")
        batch_size = _positive_int(batch_size, "batch_size")
        items, single = _as_texts(texts)
        do_norm = spec.normalize if normalize is None else bool(normalize)
        out: np.ndarray | None = None
        for idx, _encodings, feeds, outputs in self._forward(items, batch_size, prefix=prefix, single=single):
            hidden = outputs[self.manifest.outputs[0]]
            vectors = embedding.pool(hidden, feeds["attention_mask"], spec.pooling)
            if do_norm:
                vectors = embedding.l2_normalize(vectors)
            if out is None:
                out = np.empty((len(items), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        if out is None:  # no texts
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return out[0] if single else out

    @property
    def embedding_dim(self) -> int:
        """Width of the sentence embeddings (feature-extraction bundles)."""
        spec = self.manifest.embedding
        if spec is None:
            raise WrongTaskError(f"this bundle is a {self.task} model; it makes no embeddings")
        return spec.dim

    # ----------------------------------------------------------------- internals
    def _forward(
        self, items: list[str], batch_size: int, prefix: str = "", single: bool = False
    ) -> Iterator[tuple[np.ndarray, list[TokenEncoding], dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Tokenize, batch by length, run; yield (input indices, encodings, feeds, outputs) per batch.

        Works through ``items`` one chunk (``STREAM_TEXTS`` texts, ``STREAM_CHARS`` characters) at a time:
        results do not depend on it (each text's result is its own, whatever its batch).
        """
        if not items:
            return
        batch_size = _positive_int(batch_size, "batch_size")
        tok = self.tokenizer
        sizes = (len(prefix) + min(len(t), tok.head_chars) for t in items)
        multiple_of = self.backend.pad_to_multiple_of
        max_tokens = max(DEFAULT_MAX_TOKENS, tok.max_length)
        truncated = 0
        for start, stop in bounded_chunks(sizes, STREAM_TEXTS, STREAM_CHARS):
            chunk = items[start:stop]
            where: Callable[[int], str] = lambda i, start=start: _where(start + i, single)  # noqa: E731
            encodings = tok.encode([prefix + t for t in chunk] if prefix else chunk, where=where)
            for i, enc in enumerate(encodings):
                if not tok.has_content(enc, len(prefix)):
                    raise InvalidInputError(
                        f"{where(i)} has nothing the tokenizer keeps (only control, format or zero-width "
                        "characters, which it drops); drop it before predicting"
                    )
            truncated += sum(1 for e in encodings if e.overflowing)
            # batch by the width each text will be padded to, so that the padded-token cap holds as given
            lengths = [tok.padded_width(len(e.ids), multiple_of) for e in encodings]
            for idx in length_sorted_batches(lengths, batch_size, max_tokens):
                batch = [encodings[i] for i in idx]
                feeds = tok.pad(batch, multiple_of=multiple_of)
                yield idx + start, batch, feeds, self.backend.run(feeds)
        if truncated:
            log.warning("%d of %d texts were cut at max_length=%d tokens", truncated, len(items), tok.max_length)
