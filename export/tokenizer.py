"""Fast tokenizers for the bundle: convert a WordPiece ``vocab.txt`` checkpoint, and prove the ids match.

A bundle always carries ``tokenizer.json`` (Hugging Face ``tokenizers``), because the runtime cannot run
Python tokenizers. When a checkpoint has only ``vocab.txt``, we build the equivalent fast tokenizer (the
same pieces transformers' own converter uses: BERT normalizer, BERT pre-tokenizer, WordPiece, [CLS]/[SEP]
template) and then check it against transformers' slow Python tokenizer on multilingual text; any
difference fails the export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from mbert_edge_export.errors import SourceError, TokenizerMismatchError
from mbert_edge_export.sources.base import read_json

log = logging.getLogger(__name__)


def read_tokenizer_config(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's ``tokenizer_config.json`` (empty when absent)."""
    p = checkpoint / "tokenizer_config.json"
    return read_json(p) if p.is_file() else {}


def _added_tokens(checkpoint: Path, cfg: dict[str, Any]) -> set[str]:
    """Tokens the checkpoint adds to its vocabulary: ``added_tokens.json`` and the config's
    ``added_tokens_decoder`` (which lists the special tokens of vocab.txt too)."""
    out: set[str] = set()
    path = checkpoint / "added_tokens.json"
    if path.is_file():
        out |= {str(t) for t in read_json(path)}
    for entry in (cfg.get("added_tokens_decoder") or {}).values():
        if isinstance(entry, dict) and "content" in entry:
            out.add(str(entry["content"]))
    return out


def wordpiece_from_vocab(checkpoint: Path) -> Tokenizer:
    """Build a fast BERT WordPiece tokenizer from ``vocab.txt`` and ``tokenizer_config.json``."""
    vocab_file = checkpoint / "vocab.txt"
    if not vocab_file.is_file():
        raise SourceError(f"{checkpoint} has neither tokenizer.json nor vocab.txt; add the tokenizer files")
    cfg = read_tokenizer_config(checkpoint)
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i  # a repeated line: the last id, as transformers' slow tokenizer reads it
    added = _added_tokens(checkpoint, cfg)
    missing = sorted(t for t in added if t not in vocab)
    if missing:  # neither the converted tokenizer nor the slow reference below would know them
        raise SourceError(
            f"{checkpoint} declares added tokens that are not in vocab.txt ({', '.join(missing[:5])}); save the "
            "tokenizer with its tokenizer.json (a fast tokenizer's save_pretrained) so that they are kept"
        )
    unk, cls, sep = cfg.get("unk_token", "[UNK]"), cfg.get("cls_token", "[CLS]"), cfg.get("sep_token", "[SEP]")
    for special in (unk, cls, sep):
        if special not in vocab:
            raise SourceError(f"{vocab_file} lacks the special token {special!r}")
    lowercase = bool(cfg.get("do_lower_case", True))
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    # The slow tokenizer NFC-composes text before splitting it (so "e" + U+0301 is "é"); transformers' own
    # fast converter skips that step and disagrees on decomposed accents. We keep the slow behaviour.
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)),
                strip_accents=cfg.get("strip_accents"),
                lowercase=lowercase,
            ),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    named = (cfg.get("pad_token", "[PAD]"), unk, cls, sep, cfg.get("mask_token", "[MASK]"))
    specials = [t for t in named if t in vocab]
    tok.add_special_tokens(specials)
    return tok


def slow_bert_tokenizer(checkpoint: Path) -> Any:
    """transformers' pure-Python BERT tokenizer for the checkpoint (the reference for the id check)."""
    try:
        from transformers import BertTokenizerLegacy as SlowBert  # transformers >= 5
    except ImportError:  # transformers 4.x: BertTokenizer is the slow one
        from transformers import BertTokenizer as SlowBert
    cfg = read_tokenizer_config(checkpoint)
    keys = (
        "do_lower_case",
        "tokenize_chinese_chars",
        "strip_accents",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    )
    return SlowBert(vocab_file=str(checkpoint / "vocab.txt"), **{k: cfg[k] for k in keys if k in cfg})


def check_against_slow(fast: Tokenizer, slow: Any, texts: Sequence[str]) -> dict[str, Any]:
    """Encode ``texts`` with both tokenizers; raise :class:`TokenizerMismatchError` on the first difference."""
    for text in texts:
        want = slow.encode(text, add_special_tokens=True)
        got = fast.encode(text).ids
        want = list(want)
        if want != got:
            at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
            raise TokenizerMismatchError(
                f"the converted tokenizer differs from the checkpoint's slow tokenizer on {text!r} at token {at}: "
                f"{got[at : at + 5]} vs {want[at : at + 5]}; add a tokenizer.json to the checkpoint"
            )
    log.info("tokenizer check: converted tokenizer matches the slow tokenizer on %d texts", len(texts))
    return {"reference": type(slow).__name__, "texts": len(texts), "identical": True}


def prepare_for_bundle(tok: Tokenizer) -> Tokenizer:
    """A copy with padding and truncation turned off: the runtime sets both per call."""
    copy = Tokenizer.from_str(tok.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy
