"""Choose the pieces a trimmed vocabulary keeps: mined pieces up to a coverage target, plus forced pieces.

Some pieces are always kept, whatever the caps: the special and added tokens; every single-character
piece of the kept languages' scripts (with and without the word-start marker, ``▁x`` / ``##x``), so that
any text in those languages still tokenizes, into smaller pieces if need be, never into unknown tokens;
every single-character piece outside any script (digits, punctuation, symbols, emoji); and the pieces of
the model's prompts (``query: ``, ``passage: ``). Two more groups are forced unless ``--max-vocab`` binds,
when they compete by frequency with the mined pieces: every piece of an unspaced script (Chinese, Japanese,
Thai: word lists cannot tell which of those running text needs) and longer digit and punctuation pieces.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from mbert_edge_export.errors import ExportError
from mbert_edge_export.languages import script_of
from mbert_edge_export.trim.tokenizer_rewrite import pieces, special_ids


@dataclass
class Selection:
    """The kept ids (sorted) and why each group was kept."""

    kept: list[int]
    forced: dict[str, int]  # category -> pieces forced in
    mined: int  # pieces kept from mining that were not forced anyway
    dropped_by_cap: int


def bare(piece: str) -> str:
    """A piece without its word-start (``▁``) or continuation (``##``) marker."""
    if piece.startswith("##"):
        return piece[2:]
    return piece[1:] if piece.startswith("▁") else piece


def forced_ids(
    tok: Tokenizer, scripts: set[str], prompts: Iterable[str] = (), whole_scripts: set[str] = frozenset()
) -> dict[str, set[int]]:
    """Forced pieces by category: ``special``, ``script_chars``, ``common_chars`` (single digits, punctuation,
    symbols), ``digits_and_punctuation`` (longer pieces of those only), ``prompts``, and ``unspaced_scripts``:
    every piece written in one of ``whole_scripts``. Those are the scripts of languages without spaces between
    words (Chinese, Japanese, Thai), where a piece can span two words, so word lists cannot tell which pieces
    running text needs."""
    out: dict[str, set[int]] = {
        "special": special_ids(tok),
        "script_chars": set(),
        "common_chars": set(),
        "digits_and_punctuation": set(),
        "unspaced_scripts": set(),
    }
    for i, p in enumerate(pieces(tok)):
        b = bare(p)
        if not b:  # the bare word-start marker
            out["common_chars"].add(i)
        elif len(b) == 1:
            script = script_of(b)
            if script is None:
                out["common_chars"].add(i)
            elif script in scripts:
                out["script_chars"].add(i)
        else:
            letters = {script_of(c) for c in b} - {None}
            if not letters:  # numbers, "),", "...": not in word lists, used by every language
                out["digits_and_punctuation"].add(i)
            elif letters <= whole_scripts:
                out["unspaced_scripts"].add(i)
    out["prompts"] = {i for text in prompts if text for i in tok.encode(text, add_special_tokens=False).ids}
    return out


def top_by_coverage(counts: Counter[int], coverage: float) -> set[int]:
    """The smallest set of most frequent pieces holding ``coverage`` of the total mass."""
    total = sum(counts.values())
    if total <= 0:
        return set()
    kept: set[int] = set()
    acc = 0.0
    for i, mass in counts.most_common():
        if acc >= coverage * total:
            break
        kept.add(i)
        acc += mass
    return kept


ALWAYS_KEPT = frozenset({"special", "script_chars", "common_chars", "prompts"})  # whatever --max-vocab says


def check_cap(forced: dict[str, set[int]], max_vocab: int | None) -> set[int]:
    """The pieces every trim keeps (:data:`ALWAYS_KEPT`); an :class:`ExportError` when ``max_vocab`` cannot
    hold them (known before any mining)."""
    always = set().union(*(v for k, v in forced.items() if k in ALWAYS_KEPT))
    if max_vocab is not None and len(always) > max_vocab:
        raise ExportError(
            f"--max-vocab {max_vocab} is below the {len(always)} pieces every trim keeps (special tokens, "
            "the single characters of the kept scripts, digits and punctuation); raise it or keep fewer scripts"
        )
    return always


def select(
    counts: dict[tuple[str, str], Counter[int]],
    forced: dict[str, set[int]],
    coverage: float,
    max_vocab: int | None = None,
    full_sources: Sequence[str] = (),
) -> Selection:
    """Union over languages and sources of each one's top pieces up to ``coverage`` (sources named in
    ``full_sources`` keep every piece they saw), plus ``forced``; then at most ``max_vocab`` pieces, dropping
    the pieces with the smallest share of any one language's mass first.

    Under a cap, only the pieces any text needs stay forced (:data:`ALWAYS_KEPT`: special tokens, single
    characters, prompts); the multi-character pieces of unspaced scripts and the longer digit and punctuation
    pieces compete with the mined ones by frequency (a Chinese word piece that no mined text uses goes before
    a German one that text does use; the characters it is made of stay)."""
    all_forced = set().union(*forced.values())
    mined: set[int] = set()
    for (_lang, source), c in counts.items():
        mined |= set(c) if source in full_sources else top_by_coverage(c, coverage)
    extra = mined - all_forced
    dropped = 0
    if max_vocab is not None and len(all_forced) + len(extra) > max_vocab:
        always = check_cap(forced, max_vocab)
        extra = (extra | all_forced) - always
        all_forced = always
        share: dict[int, float] = {}
        for c in counts.values():
            total = sum(c.values()) or 1.0
            for i in extra:
                if i in c:
                    share[i] = max(share.get(i, 0.0), c[i] / total)
        ranked = sorted(extra, key=lambda i: (-share.get(i, 0.0), i))
        keep_n = max_vocab - len(all_forced)
        dropped = len(ranked) - keep_n
        extra = set(ranked[:keep_n])
    kept = all_forced | extra
    every_forced = set().union(*forced.values())
    return Selection(
        kept=sorted(kept),
        forced={k: len(v & kept) for k, v in forced.items()},
        mined=len(kept - every_forced),
        dropped_by_cap=dropped,
    )
