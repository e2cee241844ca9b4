"""A ten-class topic task in ~37 languages, derived from the ``dataset-build`` corpus.

Every language folder of the corpus has a main file (``<iso3>/<iso3>.txt``) written to the same brief: ten
numbered sections on the same ten topics (science, medicine, ..., emerging fields), each ~3000 words. The
section a paragraph sits in is its label, which gives a real multilingual classification task: train a
classifier on a few languages and measure it zero-shot on the others (cross-lingual transfer, as XNLI does).
English's extra files (``history.txt``, ``jobs.txt``, ...) are not part of the ten sections and are ignored.

The heading formats differ between languages, so :func:`find_sections` parses them:

* a heading is a short line: optional markdown (``#``/``*``), optionally a word or two (``Section``,
  ``Sekcja``, ``Bölüm``, ``Bagian``, ``หัวข้อที่``, ``भाग``, ``বিষয়``, ``第``...), a number 1-10 in any
  script's decimal digits (``1.``, ``১:``, ``१:``), a Chinese numeral (``第一部分``) or an Arabic ordinal
  (``القسم الأول``), a separator and a title: ``1. Title``, ``### **1. Title**``, ``## 1. Title``,
  ``Section 1 : Title``, ``বিষয় ৩: Title``, ``第三部分：Title``, ``### القسم الثالث: Title``;
* a heading's *style* is everything but its number and title (markup, the word before the number, the
  separator), and the ten section headings share one style: the ``#### **1. ...**`` prompts inside
  Slovenian section 9 or the ``**1. ...**`` clauses inside Norwegian section 7 are another style;
* the ten headings appear in increasing order 1..10; a numbered list inside a section that restarts at 1 is
  a sub-list, and an item continuing it (``1, 2, 3`` inside section 2) is never taken as the next section;
* the parse must look like the brief: a short preamble before section 1, no near-empty section, no section
  swallowing most of the file. A file that cannot be parsed that way is reported by :func:`topic_languages`
  as unavailable, with the reason; nothing is guessed.

Labels attach to :class:`~mbert_edge_export.corpus.Paragraph` objects (matched by text), so the corpus's
fixed held-out split applies: :func:`split` trains only on training paragraphs, and :func:`evaluate` scores
any classifier (a PyTorch model, a bundle through :func:`bundle_predict_fn`) on held-out paragraphs only.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mbert_edge_export import corpus
from mbert_edge_export.errors import ExportError
from mbert_edge_export.languages import LANGUAGES

log = logging.getLogger(__name__)

TOPICS: tuple[str, ...] = (
    "science",
    "medicine",
    "mathematics",
    "arts",
    "mythology",
    "hobbies",
    "jargon",
    "abstract",
    "creative",
    "emerging",
)
TOPIC_TITLES: tuple[str, ...] = (
    "Scientific and Technical Disciplines",
    "Medical and Life Sciences",
    "Mathematics and Logic",
    "Arts and Humanities",
    "Fantasy, Mythology, and Folklore",
    "Niche Hobbies and Obscure Knowledge",
    "Jargon and Specialized Professional Language",
    "Abstract and Conceptual Topics",
    "Creative and Imaginative Writing Prompts",
    "Emerging and Interdisciplinary Fields",
)
PREFIX = ""  # none: a classifier bundle gets raw text from predict(), so the teacher is trained and scored on it

MAX_HEADING_CHARS = 160  # longer lines are paragraphs (Thai and Arabic headings with English titles are ~110)
MAX_PREAMBLE_PARAGRAPHS = 3  # before section 1: the "Of course, here are 30,000 words..." line
MIN_SECTION_PARAGRAPHS = 3  # a section with fewer paragraphs means a wrong heading was taken
# Sections are ~3000 words each: by characters of paragraph text, every section of every parsed file holds
# 6.9-15% of its file. A section with less than
# MIN_SECTION_SHARE or more than MAX_SECTION_SHARE means a wrong heading was taken or a real one missed.
MIN_SECTION_SHARE = 0.03
MAX_SECTION_SHARE = 0.3

_CJK_NUMERALS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}
_ARABIC_ORDINALS = {
    "الأول": 1,
    "الاول": 1,
    "الأولى": 1,
    "الثاني": 2,
    "الثانية": 2,
    "الثالث": 3,
    "الثالثة": 3,
    "الرابع": 4,
    "الرابعة": 4,
    "الخامس": 5,
    "الخامسة": 5,
    "السادس": 6,
    "السادسة": 6,
    "السابع": 7,
    "السابعة": 7,
    "الثامن": 8,
    "الثامنة": 8,
    "التاسع": 9,
    "التاسعة": 9,
    "العاشر": 10,
    "العاشرة": 10,
}
_ORDINAL_ALT = "|".join(sorted(_ARABIC_ORDINALS, key=len, reverse=True))
_WORD = r"[^\W\d_][^\s\d#*.:：)）(（]*"  # a word: starts with a letter, no digit or heading punctuation inside
_HEADING = re.compile(
    r"^(?P<pre>[#*_\s]*)"  # markdown: "### **", "**", "## "
    r"(?:"
    rf"(?P<cjk>第)(?P<cjknum>[{''.join(_CJK_NUMERALS)}]+)(?P<cjkunit>部分|章|节|節|部|篇|单元|單元|编|編)?"
    rf"|(?:(?P<word>{_WORD}(?:\s{_WORD})?)\s+)?"  # at most two words before the number: "Section", "หัวข้อที่"
    rf"(?P<num>\d{{1,2}}|{_ORDINAL_ALT})"
    r")"
    r"(?P<sep>\s*[.:：)）．、]|\s*(?=\*\*)|\s+(?=\S))"  # "1.", "1 :", "1)", "第一部分：", "ভাগ ১ Title"
    r"(?!\d)"  # "1.0 Summary", "7.2. Clause": sub-numbering, not a section
    r"(?P<title>.*)$"
)


class TopicParseError(ExportError):
    """The ten topic sections of a language's main file could not be found reliably."""


@dataclass(frozen=True)
class Heading:
    """A line that looks like a numbered heading: its position, number, style and title."""

    line: int  # 0-based line index in the file
    number: int
    style: str  # markup | word before the number | separator | closing markup: "###**||.|**", "|section|:|"
    title: str


@dataclass(frozen=True)
class Sections:
    """The ten top-level section headings of one file, in order (``headings[k]`` starts topic ``k``)."""

    headings: tuple[Heading, ...]

    @property
    def style(self) -> str:
        """The heading style the ten sections share."""
        return self.headings[0].style

    def label_of_line(self, line: int) -> int | None:
        """The topic index of line ``line`` (0-based), or None for the preamble and the heading lines."""
        label = None
        for k, h in enumerate(self.headings):
            if line == h.line:
                return None
            if line > h.line:
                label = k
        return label


@dataclass
class TopicLanguages:
    """Which corpus languages have the ten-topic task (``available``) and why the others do not."""

    available: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)


def _digits_value(s: str) -> int | None:
    try:
        return int("".join(str(unicodedata.decimal(ch)) for ch in s))
    except (TypeError, ValueError):
        return None


def _cjk_value(s: str) -> int | None:
    if s == "十":
        return 10
    if len(s) == 1:
        return _CJK_NUMERALS.get(s)
    return None  # 十一 and beyond: more than ten sections


def parse_heading(text: str, line: int = 0) -> Heading | None:
    """``text`` as a numbered heading (number 1..10, a title after it), or None if it does not look like one."""
    s = text.strip()
    if not s or len(s) > MAX_HEADING_CHARS:
        return None
    m = _HEADING.match(s)
    if m is None:
        return None
    if m.group("cjk"):
        number = _cjk_value(m.group("cjknum"))
        word, sep = "第", (m.group("cjkunit") or "") + m.group("sep").strip()
    else:
        raw = m.group("num")
        number = _ARABIC_ORDINALS.get(raw) or _digits_value(raw)
        word, sep = (m.group("word") or "").casefold(), m.group("sep").strip()
    title = m.group("title").strip().strip("*_").strip()
    if number is None or not 1 <= number <= 10 or not title:
        return None
    pre = re.sub(r"\s+", "", m.group("pre"))
    post = "**" if s.endswith("**") else ""
    return Heading(line=line, number=number, style=f"{pre}|{word}|{sep}|{post}", title=title)


def _follow(headings: Sequence[Heading], start: int) -> list[Heading] | None:
    """Headings 1..10 of one style from ``headings[start]`` (number 1) on, skipping restarted sub-lists."""
    chosen = [headings[start]]
    run: int | None = None  # the last number of a sub-list that restarted at 1 inside the current section
    for h in headings[start + 1 :]:
        want = chosen[-1].number + 1
        if h.number == want and run != want - 1:
            chosen.append(h)
            run = None
            if want == 10:
                return chosen
        elif h.number == 1:
            run = 1
        elif run is not None and h.number == run + 1:
            run = h.number
        else:
            run = None
    return None


def _check(sections: Sections, lines: Sequence[str], heading_lines: set[int]) -> str | None:
    """Why this parse does not look like ten ~3000-word sections, or None when it does."""
    starts = [h.line for h in sections.headings] + [len(lines)]
    para = [(i, len(t)) for i, t in enumerate(line.strip() for line in lines) if len(t) >= corpus.MIN_CHARS]
    preamble = sum(1 for i, _ in para if i < starts[0] and i not in heading_lines)  # a table of contents is fine
    if preamble > MAX_PREAMBLE_PARAGRAPHS:
        return f"{preamble} paragraphs before section 1"
    counts = [0] * 10
    chars = [0] * 10
    for i, n in para:
        k = next((k for k in range(10) if starts[k] < i < starts[k + 1]), None)
        if k is not None:
            counts[k] += 1
            chars[k] += n
    small = [k + 1 for k, c in enumerate(counts) if c < MIN_SECTION_PARAGRAPHS]
    if small:
        return f"section(s) {small} have fewer than {MIN_SECTION_PARAGRAPHS} paragraphs"
    total = sum(chars)
    off = [
        f"{k + 1} ({c / total:.0%})"
        for k, c in enumerate(chars)
        if not MIN_SECTION_SHARE <= c / total <= MAX_SECTION_SHARE
    ]
    if off:
        return (
            f"section(s) {', '.join(off)} hold a share of the text outside "
            f"{MIN_SECTION_SHARE:.0%}-{MAX_SECTION_SHARE:.0%} (ten ~equal sections expected)"
        )
    return None


def find_sections(lines: Sequence[str]) -> Sections:
    """The ten top-level section headings of a file's ``lines``; raises :class:`TopicParseError` with the reason.

    Tries every heading style present and every heading numbered 1 as the start; keeps parses that pass the
    shape checks and, of those, the one that starts earliest (a later parse lies inside a section).
    """
    headings = [h for i, line in enumerate(lines) if (h := parse_heading(line, i)) is not None]
    heading_lines = {h.line for h in headings}
    by_style: dict[str, list[Heading]] = {}
    for h in headings:
        by_style.setdefault(h.style, []).append(h)
    good: list[Sections] = []
    rejected: list[str] = []
    for style, hs in by_style.items():
        for start, h in enumerate(hs):
            if h.number != 1:
                continue
            chosen = _follow(hs, start)
            if chosen is None:
                continue
            sections = Sections(tuple(chosen))
            problem = _check(sections, lines, heading_lines)
            if problem is None:
                good.append(sections)
            else:
                rejected.append(f"style {style!r} from line {h.line + 1}: {problem}")
    if good:
        return min(good, key=lambda s: s.headings[0].line)
    found = Counter(h.style for h in headings if h.number == 1)
    if rejected:
        raise TopicParseError("no heading sequence 1..10 passes the checks: " + "; ".join(rejected[:3]))
    if not found:
        raise TopicParseError("no heading numbered 1 (no recognised heading format)")
    best = max(
        by_style.items(),
        key=lambda kv: len({h.number for h in kv[1]}),
    )
    numbers = sorted({h.number for h in best[1]})
    raise TopicParseError(f"no heading sequence 1..10 in one style; best style {best[0]!r} has numbers {numbers}")


def main_file(lang: str) -> Path:
    """The language's main corpus file, ``<iso3>/<iso3>.txt``, which holds the ten sections."""
    folder = LANGUAGES[lang].corpus if lang in LANGUAGES else None
    if folder is None:
        raise TopicParseError(f"{lang!r} has no folder in the dataset-build corpus")
    path = corpus.root() / folder / f"{folder}.txt"
    if not path.is_file():
        raise TopicParseError(f"{path} is missing")
    return path


@lru_cache(maxsize=64)
def sections_of(lang: str) -> Sections:
    """The ten sections of language ``lang``'s main file; raises :class:`TopicParseError` when not found."""
    lines = main_file(lang).read_text(encoding="utf-8").splitlines()
    try:
        return find_sections(lines)
    except TopicParseError as e:
        raise TopicParseError(f"{lang}: {e}") from None


@lru_cache(maxsize=64)
def _labeled(lang: str) -> tuple[tuple[corpus.Paragraph, int], ...]:
    sections = sections_of(lang)
    by_text = {p.text: p for p in corpus.paragraphs(lang)}
    labels: dict[str, set[int]] = {}
    order: list[str] = []
    for i, line in enumerate(main_file(lang).read_text(encoding="utf-8").splitlines()):
        text = line.strip()
        label = sections.label_of_line(i)
        if label is None or text not in by_text:
            continue
        if text not in labels:
            labels[text] = set()
            order.append(text)
        labels[text].add(label)
    out = [(by_text[t], next(iter(labels[t]))) for t in order if len(labels[t]) == 1]
    dropped = len(order) - len(out)
    if dropped:
        log.debug("%s: %d paragraph(s) appear in two sections; left unlabeled", lang, dropped)
    return tuple(sorted(out, key=lambda pl: pl[0].index))


def labeled_paragraphs(lang: str) -> list[tuple[corpus.Paragraph, int]]:
    """Every paragraph of ``lang``'s main file with its topic index (into :data:`TOPICS`), in corpus order.

    The preamble and the section heading lines themselves are left out (a heading names its topic). A text
    that occurs in two sections is left out too. Raises :class:`TopicParseError` for a language whose
    sections cannot be found (see :func:`topic_languages`).
    """
    return list(_labeled(lang))


def split(lang: str) -> tuple[list[tuple[corpus.Paragraph, int]], list[tuple[corpus.Paragraph, int]]]:
    """``lang``'s labeled paragraphs as ``(train, held_out)`` by the corpus's fixed held-out flag."""
    items = labeled_paragraphs(lang)
    return [x for x in items if not x[0].held_out], [x for x in items if x[0].held_out]


@lru_cache(maxsize=1)
def topic_languages() -> TopicLanguages:
    """The corpus languages (one ISO 639-1 code per corpus folder) split into those whose ten sections
    parse and those that do not, with the reason for each."""
    out = TopicLanguages()
    for lang in corpus.available_languages():
        if corpus.split_code(lang) != lang:  # one code per corpus folder ("no" reads "nb"'s): no text in two
            continue
        try:
            sections_of(lang)
        except TopicParseError as e:
            out.unavailable[lang] = str(e).removeprefix(f"{lang}: ")
        else:
            out.available.append(lang)
    return out


def label_counts(lang: str) -> dict[str, int]:
    """Paragraphs per topic name for ``lang`` (training and held-out together)."""
    c = Counter(label for _, label in labeled_paragraphs(lang))
    return {TOPICS[k]: c.get(k, 0) for k in range(len(TOPICS))}


PredictFn = Callable[[list[str]], Sequence[int]]


def evaluate(
    predict_fn: PredictFn,
    langs: Iterable[str] | None = None,
    trained: Iterable[str] = (),
    prefix: str = PREFIX,
) -> dict[str, Any]:
    """Accuracy of ``predict_fn`` on the held-out labeled paragraphs of each language in ``langs``.

    ``predict_fn`` maps a list of texts (each a paragraph with ``prefix`` put in front) to topic indices;
    ``langs`` defaults to every available topic language; languages in ``trained`` are marked
    ``"trained"``, the others ``"zero-shot"``. Returns ``{"languages": {lang: {"accuracy", "n", "correct",
    "split"}}, "mean", "worst": {"lang", "accuracy"}, "mean_trained", "mean_zero_shot", "confusion"}``
    (``confusion[gold][predicted]`` summed over languages, rows and columns in :data:`TOPICS` order).
    """
    langs = list(topic_languages().available if langs is None else langs)
    trained_set = set(trained)
    per_lang: dict[str, dict[str, Any]] = {}
    confusion = [[0] * len(TOPICS) for _ in TOPICS]
    for lang in langs:
        _, held = split(lang)
        if not held:
            log.warning("%s: no held-out labeled paragraphs; skipped", lang)
            continue
        preds = [int(p) for p in predict_fn([prefix + p.text for p, _ in held])]
        if len(preds) != len(held):
            raise ValueError(f"predict_fn returned {len(preds)} labels for {len(held)} texts")
        correct = 0
        for (_, gold), pred in zip(held, preds, strict=True):
            correct += gold == pred
            if 0 <= pred < len(TOPICS):
                confusion[gold][pred] += 1
        per_lang[lang] = {
            "accuracy": round(correct / len(held), 4),
            "correct": correct,
            "n": len(held),
            "split": "trained" if lang in trained_set else "zero-shot",
        }
        log.info(
            "%s (%s): %.3f on %d held-out paragraphs", lang, per_lang[lang]["split"], correct / len(held), len(held)
        )

    def _mean(keys: list[str]) -> float | None:
        return round(sum(per_lang[k]["accuracy"] for k in keys) / len(keys), 4) if keys else None

    worst = min(per_lang, key=lambda k: per_lang[k]["accuracy"]) if per_lang else None
    return {
        "languages": per_lang,
        "mean": _mean(list(per_lang)),
        "mean_trained": _mean([k for k in per_lang if k in trained_set]),
        "mean_zero_shot": _mean([k for k in per_lang if k not in trained_set]),
        "worst": {"lang": worst, "accuracy": per_lang[worst]["accuracy"]} if worst else None,
        "labels": list(TOPICS),
        "confusion": confusion,
        "text_prefix": prefix,
    }


def bundle_predict_fn(bundle: str | Path, **load_kwargs: Any) -> PredictFn:
    """A ``predict_fn`` for :func:`evaluate` that runs a classifier bundle through the runtime.

    The bundle's labels must be the names in :data:`TOPICS` (as the topic teacher's ``id2label`` sets them).
    """
    import mbert_edge

    model = mbert_edge.load(bundle, **load_kwargs)
    index = {name: k for k, name in enumerate(TOPICS)}

    def predict(texts: list[str]) -> list[int]:
        return [index.get(r["label"], -1) for r in model.predict(texts)]

    return predict
