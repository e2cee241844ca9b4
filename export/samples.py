"""Multilingual sample sentences shipped with the export stage (parity checks, tokenizer checks)."""

from __future__ import annotations

from importlib import resources


def parity_texts() -> list[tuple[str, str]]:
    """(language code, sentence) pairs in about 20 languages and 12 scripts, plus hard cases."""
    text = resources.files("mbert_edge_export").joinpath("data/parity_texts.txt").read_text(encoding="utf-8")
    pairs = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lang, _, sentence = line.partition("\t")
        pairs.append((lang, sentence))
    return pairs
