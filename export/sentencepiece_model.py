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
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tokenizers import Tokenizer

log = logging.getLogger(__name__)

WORD_MARK = "\u2581"
STAND_IN_UNK = "<mbert-edge-unk>"  # SentencePiece's unknown piece (it never matches text, whatever its string)

MAX_TIE_RATE = 1e-3  # ties accepted per text checked (e5's 250k vocabulary: 2 in 57,699)
TIE_TOLERANCE = 1e-5  # relative: what float32 sums along a paragraph can be off by
#: grapheme-cluster characters that follow a base (Unicode's Extend and SpacingMark, approximately): combining marks,
#: joiners, variation selectors (Mn), emoji skin tones
_EXTEND_CATEGORIES = ("Mn", "Mc", "Me")
_EXTEND_EXTRA = (0x200C, 0x200D, *range(0x1F3FB, 0x1F400))
#: Unicode's Prepend characters (a grapheme cluster starts with them and goes on with the next character)
_PREPEND = (*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x0D4E, 0x110BD, 0x110CD, 0x111C2,
            0x111C3, 0x1193F, 0x11941, 0x11A3A, *range(0x11A84, 0x11A8A), 0x11D46, 0x11F02)  # fmt: skip

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
    # a character the map rewrites, then a combining mark, in one grapheme: tokenizers drops the mark
    "x \u00aa\u0301 and \u00bd\u0301",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \ufefb\u064e",
    "\u00a0\u0301 accent and x\u3000\u0301y",
    "\u0340\u0340 grave tone marks",
    # runs of one character: the same pieces in another order score the same (ties)
    "wow!!!!!!!! aaaaaaaaaaaa word zzzzz word //////",
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


class SentencePieceForm(NamedTuple):
    """What export writes for SentencePiece: the model file's bytes and its manifest fields."""

    model: bytes  # a serialized ModelProto
    special_ids: dict[str, int]  # {"bos", "eos", "unk", "pad"}
    fallback_pattern: str  # texts matching it are read with tokenizer.json (see fallback_pattern())


@dataclass
class CheckReport:
    """How the SentencePiece model compared with ``tokenizer.json``."""

    texts: int = 0
    identical: int = 0
    #: texts whose two id lists differ but score the same within float32 precision
    ties: int = 0
    languages: int = 0
    #: the first texts that differ, with both id lists and scores (at most five ties and five others)
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


def convert(tokenizer: Tokenizer) -> SentencePieceForm:
    """The SentencePiece model of ``tokenizer`` (serialized ``ModelProto``), its ``special_ids`` and the pattern of
    the texts the runtime must read with ``tokenizer.json``.

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
    return SentencePieceForm(proto.SerializeToString(), special_ids, fallback_pattern(norm.precompiled_charsmap))


def mapped_prefix_chars(charsmap: bytes) -> list[int]:
    """The code points that are a normalization rule of ``charsmap`` or begin one (its keys are UTF-8 strings in a
    darts-clone double array, the layout SentencePiece and tokenizers' ``Precompiled`` read)."""
    size = struct.unpack_from("<I", charsmap)[0]
    units = struct.unpack_from(f"<{size // 4}I", charsmap, 4)

    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    def begins_a_key(key: bytes) -> bool:
        pos = offset(units[0])
        for byte in key:
            pos ^= byte
            if pos >= len(units) or units[pos] & ((1 << 31) | 0xFF) != byte:
                return False
            pos ^= offset(units[pos])
        return True

    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and begins_a_key(chr(c).encode())]


def _char_class(codes: Iterable[int]) -> str:
    """A regular-expression character class of ``codes``, as ranges of escapes (ASCII only)."""
    ranges: list[list[int]] = []
    for c in sorted(codes):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])

    def esc(c: int) -> str:
        return f"\\U{c:08x}" if c > 0xFFFF else f"\\u{c:04x}"

    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) + "]"


def fallback_pattern(charsmap: bytes) -> str:
    """The texts SentencePiece and tokenizers read differently, as a regular expression (Python ``re``).

    * a literal "▁" (SentencePiece's normalizer takes it for whitespace) and NEL, U+0085 (tokenizers' ``Strip``
      removes it at a text's ends; SentencePiece's map keeps it);
    * a grapheme shorter than 6 bytes that starts with a character the map rewrites (or begins a rule with) and goes
      on: ``tokenizers`` (``Precompiled``) then replaces the whole grapheme by the first rule found and drops the
      rest, where SentencePiece goes on after the rule. Matched as such a character followed by a combining
      character with fewer than 6 bytes between them, or as such a Prepend character followed by anything.
    """
    starts = mapped_prefix_chars(charsmap)
    extend = [
        c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) in _EXTEND_CATEGORIES
    ] + list(_EXTEND_EXTRA)
    by_len: dict[int, list[int]] = {1: [], 2: [], 3: [], 4: []}
    for c in starts:
        by_len[len(chr(c).encode())].append(c)
    marks: dict[int, list[int]] = {1: [], 2: [], 3: [], 4: []}
    for c in extend:
        marks[len(chr(c).encode())].append(c)
    alternatives = ["[\\u2581\\u0085]"]
    for n, bases in by_len.items():
        following = [c for m, cs in marks.items() if n + m < 6 for c in cs]
        if bases and following:
            alternatives.append(_char_class(bases) + _char_class(following))
    prepend = sorted(set(_PREPEND) & set(starts))
    if prepend:
        alternatives.append(_char_class(prepend) + ".")
    return "|".join(alternatives)


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


def check(tokenizer: Tokenizer, form: SentencePieceForm, texts: Iterable[tuple[str, str]]) -> CheckReport:
    """Encode every (language, text) with ``tokenizer`` and with the SentencePiece ``form`` as the runtime reads it
    (texts its pattern matches through ``tokenizer.json``); count equal ids and ties."""
    model, special_ids = form.model, form.special_ids
    import tempfile
    from pathlib import Path

    from mbert_edge.tokenizer import BundleTokenizer
    from mbert_edge.tokenizer_sentencepiece import SentencePieceTokenizer

    whole = 2**31  # no truncation
    with tempfile.TemporaryDirectory() as tmp:  # the runtime's own classes, on the files as a bundle holds them
        (Path(tmp) / "tokenizer.model").write_bytes(model)
        tokenizer.save(str(Path(tmp) / "tokenizer.json"))
        plain = BundleTokenizer(Path(tmp) / "tokenizer.json", whole)
        sp = SentencePieceTokenizer(
            Path(tmp) / "tokenizer.model",
            whole,
            special_ids,
            fallback=lambda: plain,
            fallback_pattern=form.fallback_pattern,
        )
    vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
    scores = [float(s) for _, s in vocab]
    unk_score = min(scores) - 10.0  # what both give an unknown character

    def surface(ids: list[int]) -> str:
        return "".join(vocab[i][0] for i in ids[1:-1])

    def total(ids: list[int]) -> float:
        return sum(unk_score if i == special_ids["unk"] else scores[i] for i in ids[1:-1])

    report = CheckReport()
    languages: set[str] = set()
    batch: list[tuple[str, str]] = []

    def flush() -> None:
        batch_texts = [t for _, t in batch]
        for (lang, text), enc, fast in zip(batch, plain.encode(batch_texts), sp.encode(batch_texts), strict=True):
            ours = fast.ids
            report.texts += 1
            languages.add(lang)
            if ours == enc.ids:
                report.identical += 1
                continue
            # a tie: the same pieces' text cut otherwise, at the same score (within float32's precision)
            a, b = total(enc.ids), total(ours)
            tie = surface(enc.ids) == surface(ours) and abs(a - b) <= TIE_TOLERANCE * max(1.0, abs(a))
            report.ties += tie
            if sum(d["tie"] == tie for d in report.differences) < 5:  # the first five of each kind
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
