"""``tokenizer.json`` (Unigram) as a SentencePiece model, and the check that both give the same ids.

The runtime loads a SentencePiece model faster and in less memory than ``tokenizers`` loads the same vocabulary
(:mod:`mbert_edge.tokenizer_sentencepiece`). A Unigram ``tokenizer.json`` of the XLM-R / e5 shape maps onto one:

* normalizer: ``Precompiled`` (SentencePiece's own compiled character map), then ``Replace(" {2,}", " ")`` and
  ``Strip``: SentencePiece's ``remove_extra_whitespaces``;
* pre-tokenizer: ``Metaspace("▁", prepend_scheme="always")``: SentencePiece's ``add_dummy_prefix`` and
  ``escape_whitespaces`` (no piece may hold an inner "▁", so splitting at it changes nothing);
* model: ``Unigram`` without byte fallback: the same pieces and scores, in order; SentencePiece's unknown piece is
  one more piece at the end, and the vocabulary's own ``<unk>`` stays a normal piece (``tokenizers`` matches
  ``<unk>`` written in a text; SentencePiece never matches its unknown piece);
* post-processor: ``TemplateProcessing`` with one special token before and one after the text, type id 0: its
  ids go into the manifest's ``special_ids``;
* no added tokens (``tokenizers`` would match them in text before the model runs).

Anything else is not converted, and the bundle keeps ``tokenizer.json`` only. What is converted is then checked
on every text of the check (the paragraphs and sentences of every language the corpus has, and strings made to hit
the edges: whitespace runs, control and zero-width characters, literal special tokens). It passes when every text
gives the same ids through both, but for *ties*: SentencePiece adds piece scores in float32 along the whole text,
``tokenizers`` in float64 word by word, so where two segmentations of a word score the same to float32's
precision (e.g. "▁Dat" + "i" and "▁Da" + "ti", 2e-5 apart in -17.01) they may pick different ones. A tie is
accepted when both id lists score the same within that precision, at most one per 1,000 texts; any other
difference and the model is not written. The report counts both.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer

log = logging.getLogger(__name__)

WORD_MARK = "\u2581"
STAND_IN_UNK = "<mbert-edge-unk>"  # SentencePiece's unknown piece (it never matches text, whatever its string)

MAX_TIE_RATE = 1e-3  # ties accepted per text checked (e5's 250k vocabulary: 1 in 57,675)
TIE_TOLERANCE = 1e-5  # relative: what float32 sums of ~100 scores can be off by

#: texts made to reach the corners of normalization and of the vocabulary
EDGE_TEXTS = (
    "  leading and trailing spaces  ",
    "tab\there\nnew line\r\nand\u00a0no-break\u3000ideographic space",
    "runs   of     spaces\t\t\tand tabs",
    "zero\u200bwidth\u200dand\ufeffformat\u00adcharacters",
    "control\x00\x01\x1fcharacters\x7f",
    "<s> </s> <pad> <unk> a<unk>b <mask>",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ １２３ and ﬁ ligatures ①②",
    "decomposed e\u0301 and composed é, Å and A\u030a",
    "emoji 😀👍🏽 🇩🇪 and symbols ∑∫√ ♠♣",
    "line\u2028and paragraph\u2029separators",
    "mixed scripts: Ελληνικά, עברית, ქართული, ᚠᚢᚦ, 𝕏𝕪𝕫",
    "x",
    "\u2581 literal word mark \u2581\u2581",
    "next\u0085line",
    # every Unicode White_Space character at both ends and doubled inside (tokenizers' Strip removes them at the
    # ends, SentencePiece only what its character map turns into a space)
    *(
        f"{c}edge{c}{c}case{c}"
        for c in "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
        "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    ),
)


class NotConvertible(ValueError):
    """The tokenizer is not of a shape SentencePiece runs identically (the message says why)."""


@dataclass
class CheckReport:
    """How the SentencePiece model compared with ``tokenizer.json``."""

    texts: int = 0
    identical: int = 0
    #: texts whose two id lists differ but score the same within float32 precision
    ties: int = 0
    languages: int = 0
    #: the first texts that differ, with both id lists and scores (at most five)
    differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.texts > 0 and self.identical + self.ties == self.texts and self.ties <= MAX_TIE_RATE * self.texts

    def to_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "identical": self.identical,
            "ties": self.ties,
            "languages": self.languages,
            "passed": self.passed,
            **({"differences": self.differences} if self.differences else {}),
        }


def _normalizers(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    if spec is None:
        return []
    return spec["normalizers"] if spec.get("type") == "Sequence" else [spec]


def convert(tokenizer: Tokenizer) -> tuple[bytes, dict[str, int]]:
    """The SentencePiece model of ``tokenizer`` (serialized ``ModelProto``) and its ``special_ids``.

    Raises :class:`NotConvertible` naming what does not fit.
    """
    d = json.loads(tokenizer.to_str())
    model = d["model"]
    if model.get("type") != "Unigram":
        raise NotConvertible(f"the model is {model.get('type')}, not Unigram")
    if model.get("byte_fallback"):
        raise NotConvertible("the Unigram model falls back to bytes")
    unk = model.get("unk_id")
    if not isinstance(unk, int):
        raise NotConvertible("the Unigram model has no unknown token")
    if d.get("added_tokens"):
        raise NotConvertible("it has added tokens, which tokenizers matches in text before the model")
    norms = _normalizers(d.get("normalizer"))
    kinds = [n.get("type") for n in norms]
    if kinds != ["Precompiled", "Replace", "Strip"]:
        raise NotConvertible(f"its normalizers are {kinds}, not Precompiled, Replace, Strip")
    replace, strip = norms[1], norms[2]
    if replace.get("pattern") != {"Regex": " {2,}"} or replace.get("content") != " ":
        raise NotConvertible("its Replace normalizer does not collapse runs of spaces")
    if not (strip.get("strip_left") and strip.get("strip_right")):
        raise NotConvertible("its Strip normalizer does not strip both ends")
    pre = d.get("pre_tokenizer") or {}
    if pre.get("type") != "Metaspace" or pre.get("replacement") != WORD_MARK or pre.get("prepend_scheme") != "always":
        raise NotConvertible("its pre-tokenizer is not Metaspace('▁', prepend_scheme='always')")
    vocab = model["vocab"]
    if any(WORD_MARK in piece[1:] for piece, _ in vocab):
        raise NotConvertible("a piece holds '▁' inside it")
    special = _template_ids(d.get("post_processor"))
    pad = next((i for i, (p, _) in enumerate(vocab) if p in ("<pad>", "[PAD]")), None)
    special_ids = {**special, "unk": unk, "pad": pad if pad is not None else 0}

    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    for piece, score in vocab:
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
    stand_in = proto.pieces.add()
    stand_in.piece, stand_in.score, stand_in.type = STAND_IN_UNK, 0.0, pb.ModelProto.SentencePiece.UNKNOWN
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM
    trainer.vocab_size = len(vocab) + 1
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = len(vocab), -1, -1, -1
    trainer.unk_piece = STAND_IN_UNK
    norm = proto.normalizer_spec
    norm.name = "user"
    norm.precompiled_charsmap = base64.b64decode(norms[0]["precompiled_charsmap"])
    norm.add_dummy_prefix = norm.remove_extra_whitespaces = norm.escape_whitespaces = True
    return proto.SerializeToString(), special_ids


def _template_ids(post: dict[str, Any] | None) -> dict[str, int]:
    """``{"bos": id, "eos": id}`` of a template ``<special> $A <special>`` with type id 0 throughout."""
    if not post or post.get("type") != "TemplateProcessing":
        raise NotConvertible("its post-processor is not a TemplateProcessing")
    single = post.get("single") or []
    shape = [next(iter(item)) for item in single]
    if shape != ["SpecialToken", "Sequence", "SpecialToken"] or any(
        next(iter(item.values())).get("type_id", 0) != 0 for item in single
    ):
        raise NotConvertible("its template is not <special> $A <special> with type id 0")
    ids = []
    for item in (single[0], single[2]):
        name = item["SpecialToken"]["id"]
        token_ids = post.get("special_tokens", {}).get(name, {}).get("ids", [])
        if len(token_ids) != 1:
            raise NotConvertible(f"its template token {name!r} is not one id")
        ids.append(token_ids[0])
    return {"bos": ids[0], "eos": ids[1]}


def check(
    tokenizer: Tokenizer, model: bytes, special_ids: dict[str, int], texts: Iterable[tuple[str, str]]
) -> CheckReport:
    """Encode every (language, text) with ``tokenizer`` and with the SentencePiece ``model``; count equal ids."""
    import tempfile
    from pathlib import Path

    from mbert_edge.tokenizer import BundleTokenizer
    from mbert_edge.tokenizer_sentencepiece import SentencePieceTokenizer

    whole = 2**31  # no truncation
    with tempfile.TemporaryDirectory() as tmp:  # the runtime's own classes, on the files as a bundle holds them
        (Path(tmp) / "tokenizer.model").write_bytes(model)
        tokenizer.save(str(Path(tmp) / "tokenizer.json"))
        plain = BundleTokenizer(Path(tmp) / "tokenizer.json", whole)
        sp = SentencePieceTokenizer(Path(tmp) / "tokenizer.model", whole, special_ids, fallback=lambda: plain)
    scores = [float(s) for _, s in json.loads(tokenizer.to_str())["model"]["vocab"]]
    unk_score = min(scores) - 10.0  # what both give an unknown character

    def total(ids: list[int]) -> float:
        return sum(unk_score if i == special_ids["unk"] else scores[i] for i in ids[1:-1])

    ref = Tokenizer.from_str(tokenizer.to_str())
    ref.no_truncation()
    ref.no_padding()
    report = CheckReport()
    languages: set[str] = set()
    batch: list[tuple[str, str]] = []

    def flush() -> None:
        for (lang, text), enc in zip(batch, ref.encode_batch([t for _, t in batch]), strict=True):
            ours = sp.encode([text])[0].ids
            report.texts += 1
            languages.add(lang)
            if ours == enc.ids:
                report.identical += 1
                continue
            a, b = total(enc.ids), total(ours)
            tie = abs(a - b) <= TIE_TOLERANCE * max(1.0, abs(a))
            report.ties += tie
            if len(report.differences) < 5 or not tie:
                at = next(
                    (k for k, (x, y) in enumerate(zip(enc.ids, ours, strict=False)) if x != y),
                    min(len(ours), len(enc.ids)),
                )
                report.differences.append(
                    {
                        "language": lang,
                        "text": text[:200],
                        "tie": tie,
                        "scores": [a, b],
                        "from_token": at,
                        "tokenizers": enc.ids[at : at + 8],
                        "sentencepiece": ours[at : at + 8],
                    }
                )
        batch.clear()

    for item in texts:
        batch.append(item)
        if len(batch) == 512:
            flush()
    flush()
    report.languages = len(languages - {"edge"})
    return report


def check_texts() -> list[tuple[str, str]]:
    """The texts of the check: every paragraph and sentence of every corpus language, then :data:`EDGE_TEXTS`."""
    from mbert_edge_export import corpus

    texts: list[tuple[str, str]] = []
    for lang in corpus.available_languages():
        for paragraph in corpus.paragraphs(lang):
            texts.append((lang, paragraph.text))
            texts += [(lang, s) for s in corpus.sentences(paragraph.text)]
    return texts + [("edge", t) for t in EDGE_TEXTS]
