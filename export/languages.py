"""Languages the export stage knows by name: ISO 639-1 codes, their writing systems, their corpus folders.

``--languages en,de,zh`` names languages by ISO 639-1 code. Each code maps to the scripts its text is
written in (so vocabulary trimming can keep every single-character piece of those scripts, and any text in
a kept language still tokenizes) and to its folder in the ``dataset-build`` corpus (ISO 639-3), when it has one.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from mbert_edge_export.errors import ExportError

# Unicode blocks per script (inclusive code point ranges). Enough to classify the single-character pieces
# of BERT-family vocabularies; "Common" (digits, punctuation, symbols) is always kept by the trimmer.
SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": (
        (0x0041, 0x005A),
        (0x0061, 0x007A),
        (0x00AA, 0x00AA),
        (0x00BA, 0x00BA),
        (0x00C0, 0x00D6),
        (0x00D8, 0x00F6),
        (0x00F8, 0x024F),
        (0x0250, 0x02AF),
        (0x1D00, 0x1DBF),
        (0x1E00, 0x1EFF),
        (0x2C60, 0x2C7F),
        (0xA720, 0xA7FF),
        (0xAB30, 0xAB6F),
        (0xFB00, 0xFB06),
        (0xFF21, 0xFF3A),
        (0xFF41, 0xFF5A),
    ),
    "Combining": ((0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F)),
    "Greek": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "Cyrillic": ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)),
    "Armenian": ((0x0530, 0x058F),),
    "Hebrew": ((0x0590, 0x05FF), (0xFB1D, 0xFB4F)),
    "Arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "Devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
    "Bengali": ((0x0980, 0x09FF),),
    "Gurmukhi": ((0x0A00, 0x0A7F),),
    "Gujarati": ((0x0A80, 0x0AFF),),
    "Tamil": ((0x0B80, 0x0BFF),),
    "Telugu": ((0x0C00, 0x0C7F),),
    "Kannada": ((0x0C80, 0x0CFF),),
    "Malayalam": ((0x0D00, 0x0D7F),),
    "Thai": ((0x0E00, 0x0E7F),),
    "Georgian": ((0x10A0, 0x10FF),),
    "Hangul": ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF)),
    "Hiragana": ((0x3040, 0x309F),),
    "Katakana": ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)),
    "Han": (
        (0x2E80, 0x2FDF),
        (0x3005, 0x3007),
        (0x3021, 0x3029),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xF900, 0xFAFF),
        (0x20000, 0x3134F),
    ),
}


@dataclass(frozen=True)
class Language:
    """A language the trimmer and the corpus know: its code, name, scripts and dataset-build folder."""

    code: str  # ISO 639-1
    name: str
    scripts: tuple[str, ...]
    corpus: str | None = None  # dataset-build folder (ISO 639-3), if the corpus has this language
    spaced: bool = True  # False: words are not separated by spaces (Chinese, Japanese, Thai)


_L = Language
LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        _L("ar", "Arabic", ("Arabic",), "ara"),
        _L("bg", "Bulgarian", ("Cyrillic",), "bul"),
        _L("bn", "Bengali", ("Bengali",), "ben"),
        _L("cs", "Czech", ("Latin",), "ces"),
        _L("da", "Danish", ("Latin",), "dan"),
        _L("de", "German", ("Latin",), "deu"),
        _L("el", "Greek", ("Greek",), "ell"),
        _L("en", "English", ("Latin",), "eng"),
        _L("es", "Spanish", ("Latin",), "spa"),
        _L("et", "Estonian", ("Latin",), "est"),
        _L("fa", "Persian", ("Arabic",)),
        _L("fi", "Finnish", ("Latin",), "fin"),
        _L("fr", "French", ("Latin",), "fra"),
        _L("he", "Hebrew", ("Hebrew",), "heb"),
        _L("hi", "Hindi", ("Devanagari",), "hin"),
        _L("hr", "Croatian", ("Latin",), "hrv"),
        _L("hu", "Hungarian", ("Latin",), "hun"),
        _L("hy", "Armenian", ("Armenian",)),
        _L("id", "Indonesian", ("Latin",), "ind"),
        _L("it", "Italian", ("Latin",), "ita"),
        _L("ja", "Japanese", ("Han", "Hiragana", "Katakana"), "jpn", spaced=False),
        _L("ka", "Georgian", ("Georgian",)),
        _L("ko", "Korean", ("Hangul", "Han"), "kor"),
        _L("lt", "Lithuanian", ("Latin",), "lit"),
        _L("lv", "Latvian", ("Latin",), "lav"),
        _L("mr", "Marathi", ("Devanagari",)),
        _L("ms", "Malay", ("Latin",)),
        _L("nb", "Norwegian Bokmål", ("Latin",), "nor"),
        _L("nl", "Dutch", ("Latin",), "nld"),
        _L("no", "Norwegian", ("Latin",), "nor"),
        _L("pl", "Polish", ("Latin",), "pol"),
        _L("pt", "Portuguese", ("Latin",), "por"),
        _L("ro", "Romanian", ("Latin",), "ron"),
        _L("ru", "Russian", ("Cyrillic",), "rus"),
        _L("sk", "Slovak", ("Latin",), "slk"),
        _L("sl", "Slovenian", ("Latin",), "slv"),
        _L("sr", "Serbian", ("Cyrillic", "Latin"), "srp"),
        _L("sv", "Swedish", ("Latin",), "swe"),
        _L("sw", "Swahili", ("Latin",), "swa"),
        _L("ta", "Tamil", ("Tamil",)),
        _L("te", "Telugu", ("Telugu",)),
        _L("th", "Thai", ("Thai",), "tha", spaced=False),
        _L("tr", "Turkish", ("Latin",), "tur"),
        _L("uk", "Ukrainian", ("Cyrillic",), "ukr"),
        _L("ur", "Urdu", ("Arabic",)),
        _L("vi", "Vietnamese", ("Latin",), "vie"),
        _L("zh", "Chinese", ("Han",), "zho", spaced=False),
    )
}


def parse_languages(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Validate ``en,de,fr`` (or a list of codes) into a sorted list of unique known ISO 639-1 codes."""
    raw = spec.split(",") if isinstance(spec, str) else list(spec)
    codes = [c.strip().lower() for c in raw if c.strip()]
    if not codes:
        raise ExportError("--languages needs at least one ISO 639-1 code, e.g. --languages en,de")
    unknown = sorted({c for c in codes if c not in LANGUAGES})
    if unknown:
        raise ExportError(
            f"unknown language code(s) {', '.join(unknown)}: use ISO 639-1 codes, one of {', '.join(sorted(LANGUAGES))}"
        )
    return sorted(set(codes))


def script_of(ch: str) -> str | None:
    """The script of a letter or mark by its Unicode block (``"Other"`` for scripts not in
    :data:`SCRIPT_RANGES`), or None for a character every script shares: digits, punctuation, symbols, spaces."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    cp = ord(ch)
    for script, ranges in SCRIPT_RANGES.items():
        for lo, hi in ranges:
            if lo <= cp <= hi:
                return script
    return "Other"


def scripts_of(codes: list[str]) -> set[str]:
    """Every script the languages ``codes`` are written in, plus combining marks (used by all of them)."""
    return {s for c in codes for s in LANGUAGES[c].scripts} | {"Combining"}


def unspaced_scripts_of(codes: list[str]) -> set[str]:
    """Scripts of the languages among ``codes`` that do not separate words by spaces (zh, ja, th)."""
    return {s for c in codes if not LANGUAGES[c].spaced for s in LANGUAGES[c].scripts}
