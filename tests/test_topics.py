"""The ten-topic task: the section parser on hand-written snippets of every heading style the corpus uses,
then on the real corpus (ten sections per language, labels, the held-out split, evaluation)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mbert_edge_export import topics
from mbert_edge_export.topics import TOPIC_TITLES, TOPICS, TopicParseError, find_sections, parse_heading

DEVANAGARI = "०१२३४५६७८९"
BENGALI = "০১২৩৪৫৬৭৮৯"
CJK = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十"]
AR_ORDINALS = ["الأول", "الثاني", "الثالث", "الرابع", "الخامس", "السادس", "السابع", "الثامن", "التاسع", "العاشر"]


def native(n: int, digits: str) -> str:
    return "".join(digits[int(d)] for d in str(n))


def para(k: int, j: int) -> str:
    return f"Text of topic {k}, paragraph {j}: " + "some long sentence about the topic at hand. " * 3


def document(
    heading: Callable[[int], str],
    inside: dict[int, list[str]] | None = None,
    preamble: tuple[str, ...] = ("Of course. Here are 30,000 words of text, in ten sections.",),
) -> list[str]:
    """A file in the corpus's shape: a preamble, ten headings, three paragraphs per section (blank lines
    between), and ``inside[k]`` extra lines (sub-lists) after the first paragraph of section ``k``."""
    inside = inside or {}
    lines = [*preamble, ""]
    for k in range(1, 11):
        lines += [heading(k), ""]
        for j in range(3):
            lines += [para(k, j), ""]
            if j == 0:
                for extra in inside.get(k, []):
                    lines += [extra, ""]
    return lines


def section_of_paragraphs(lines: list[str]) -> dict[str, int]:
    """Each generated paragraph's topic number (1..10) as the parse assigns it."""
    sections = find_sections(lines)
    out = {}
    for i, line in enumerate(lines):
        label = sections.label_of_line(i)
        if line.startswith("Text of topic") and label is not None:
            out[line] = label + 1
    return out


def assert_parses(lines: list[str]) -> None:
    got = section_of_paragraphs(lines)
    assert len(got) == 30
    for text, number in got.items():
        assert f"of topic {number}," in text, (text, number)


STYLES: dict[str, Callable[[int], str]] = {
    "plain (en, bg, cs, ja, ko, ...)": lambda k: f"{k}. {TOPIC_TITLES[k - 1]}",
    "plain with word count (fi, sv)": lambda k: f"{k}. {TOPIC_TITLES[k - 1]} (~3000 sanaa)",
    "markdown bold (de, da, el, nl, ro, ru, sl, ...)": lambda k: f"### **{k}. {TOPIC_TITLES[k - 1]}**",
    "markdown h2 (es)": lambda k: f"## {k}. {TOPIC_TITLES[k - 1]}",
    "Section N : (fr)": lambda k: f"### **Section {k} : {TOPIC_TITLES[k - 1]} (Environ 3000 mots)**",
    "Sekcja N: (pl)": lambda k: f"### **Sekcja {k}: Nauki (ok. 3000 słów)**",
    "Bölüm N: (tr)": lambda k: f"### **Bölüm {k}: Bilimsel ve Teknik Disiplinler (Yaklaşık 3000 Kelime)**",
    "Bagian N: (id)": lambda k: f"### **Bagian {k}: Sains dan Disiplin Teknis (Sekitar 3.000 Kata)**",
    "หัวข้อที่ N: (th)": lambda k: f"### **หัวข้อที่ {k}: สาขาวิชาวิทยาศาสตร์และเทคนิค ({TOPIC_TITLES[k - 1]})**",
    "भाग N: Devanagari digits (hi)": lambda k: f"भाग {native(k, DEVANAGARI)}: वैज्ञानिक और तकनीकी विषय",
    "বিষয় N: Bengali digits (bn)": lambda k: f"বিষয় {native(k, BENGALI)}: বিজ্ঞান ও প্রযুক্তি ({TOPIC_TITLES[k - 1]})",
    "第N部分 Chinese numerals (zh)": lambda k: f"第{CJK[k - 1]}部分：科学与技术学科 ({TOPIC_TITLES[k - 1]})",
    "القسم ordinal words (ar)": lambda k: f"### القسم {AR_ORDINALS[k - 1]}: العلوم ({TOPIC_TITLES[k - 1]})",
}


@pytest.mark.parametrize("style", list(STYLES))
def test_heading_styles(style: str) -> None:
    assert_parses(document(STYLES[style]))


def test_parse_heading_details() -> None:
    h = parse_heading("### **Section 10 : Domaines Émergents (Environ 3000 mots)**", line=7)
    assert h is not None and (h.number, h.line) == (10, 7) and h.title.startswith("Domaines")
    assert parse_heading("### **1. Title**").style == parse_heading("### **9. Other title**").style
    assert parse_heading("1. Title").style != parse_heading("### **1. Title**").style
    assert parse_heading("#### **1. Knjižnica**").style != parse_heading("### **1. Znanstvene**").style
    assert parse_heading("Prompt 1: The Last Archivist").style != parse_heading("1. Science").style
    assert parse_heading("第十部分：新兴与跨学科领域").number == 10
    assert parse_heading("भाग १०: उभरते क्षेत्र").number == 10
    for not_heading in (
        "1.0 执行摘要",  # decimal sub-numbering
        "7.2. Konfidentsiaalsuskohustus ei laiene informatsioonile, mis:",
        "1.",  # a number without a title
        "11. Lutte",  # beyond ten
        "2x + 3y = 7",
        "Physics: Probing the Fundamental Nature of Reality",  # sub-heading without a number
        "The universe, in its seemingly infinite complexity, yields its secrets. " * 3,  # a paragraph
    ):
        assert parse_heading(not_heading) is None, not_heading


def plain(k: int) -> str:
    return f"{k}. {TOPIC_TITLES[k - 1]}"


def test_restarting_sub_list_is_not_a_section() -> None:
    """A list 1, 2, 3 in the headings' own style inside section 2 (the "3." is not section 3)."""
    sub = ["1. First step of the procedure", "2. Second step of the procedure", "3. Third step of the procedure"]
    lines = document(plain, inside={2: sub})
    assert_parses(lines)
    assert [h.line for h in find_sections(lines).headings][2] == lines.index(plain(3))


def test_sub_list_running_past_the_next_number() -> None:
    """Numbered prompts 1..7 inside section 9, then section 10 (pt, sv, uk, hu); and 1..5 inside section 4."""
    prompts = [f"{i}. Prompt number {i}: a story" for i in range(1, 8)]
    items = [f"{i}. Item {i} of a list" for i in range(1, 6)]
    assert_parses(document(plain, inside={9: prompts, 4: items}))


def test_sub_list_of_another_style() -> None:
    """sl: ``#### **1. ...**`` .. ``#### **10. ...**`` prompts inside section 9 (a full 1..10 sequence of
    its own, but it starts late and would leave sections 1-8 in a huge preamble); nb: bold clauses."""
    prompts = [f"#### **{i}. Knjižnica, ki se sama prepisuje**" for i in range(1, 11)]
    clauses = [f"**{i}. Bakgrunn og formål**" for i in range(1, 8)]
    bold = STYLES["markdown bold (de, da, el, nl, ro, ru, sl, ...)"]
    assert_parses(document(bold, inside={9: prompts, 7: clauses}))


def test_bold_label_list_items() -> None:
    """de/fr/ru: ``1.  **Keep it simple:** text ...`` list items restart at 1 inside sections."""
    items = [
        f"{i}.  **Rule {i}:** Eine Flagge sollte so einfach sein, dass ein Kind sie zeichnen kann." for i in (1, 2, 3)
    ]
    assert_parses(document(plain, inside={1: items, 2: items, 5: items}))


def test_table_of_contents_in_preamble() -> None:
    toc = tuple(plain(k) for k in range(1, 11))
    assert_parses(document(plain, preamble=("Here is the text, in ten sections:", *toc)))


def test_unnumbered_headings_are_unavailable() -> None:
    with pytest.raises(TopicParseError, match="no heading numbered 1"):
        find_sections(document(lambda k: f"#### {TOPIC_TITLES[k - 1]}"))


def test_missing_section_is_unavailable() -> None:
    lines = [line for line in document(plain) if line != plain(7)]
    with pytest.raises(TopicParseError, match=r"numbers \[1, 2, 3, 4, 5, 6, 8, 9, 10\]"):
        find_sections(lines)


def test_ambiguous_sub_list_is_not_guessed() -> None:
    """A list 1, 2, 3 at the end of section 3, right before "4.": is that section 4 or item 4? Not guessed."""
    sub = ["1. First step of the procedure", "2. Second step of the procedure", "3. Third step of the procedure"]
    lines = document(plain)
    k = lines.index(plain(4))
    lines = lines[:k] + [x for item in sub for x in (item, "")] + lines[k:]
    with pytest.raises(TopicParseError):
        find_sections(lines)


def test_unbalanced_sections_are_unavailable() -> None:
    lines = document(plain)
    k = lines.index(plain(6))
    lines = lines[:k] + [para(5, j) for j in range(3, 40)] + lines[k:]  # section 5: ~half the text
    with pytest.raises(TopicParseError, match="share of the text"):
        find_sections(lines)


# --- the real corpus --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def available() -> list[str]:
    from mbert_edge_export import corpus

    try:
        corpus.root()
    except Exception:
        pytest.skip("the dataset-build package is not installed (make test installs it)")
    return topics.topic_languages().available


def test_most_languages_parse_into_ten_sections(available: list[str]) -> None:
    assert len(available) >= 30, topics.topic_languages().unavailable
    assert "no" not in available  # "no" and "nb" share a corpus folder: one code per folder
    for lang in available:
        headings = topics.sections_of(lang).headings
        assert [h.number for h in headings] == list(range(1, 11)), lang
        assert [h.line for h in headings] == sorted(h.line for h in headings), lang
        counts = topics.label_counts(lang)
        assert list(counts) == list(TOPICS)
        assert min(counts.values()) >= 3, (lang, counts)


def test_english_titles_match_their_section(available: list[str]) -> None:
    """Where a heading quotes an English topic title (ar, hi, ja, ru, zh, ...), it is the title of its section."""
    matched = 0
    for lang in available:
        for k, h in enumerate(topics.sections_of(lang).headings):
            for j, title in enumerate(TOPIC_TITLES):
                if title.lower() in h.title.lower():
                    assert j == k, (lang, k, h.title)
                    matched += 1
    assert matched >= 100


def test_english_section_one(available: list[str]) -> None:
    labeled = topics.labeled_paragraphs("en")
    first, label = labeled[0]
    assert label == 0
    assert first.text.startswith("The universe, in its seemingly infinite complexity, yields its secrets")
    assert labeled[-1][1] == 9
    # only eng.txt holds the ten sections: history.txt, jobs.txt, ... are not labeled
    from mbert_edge_export import corpus

    assert 150 < len(labeled) < len(corpus.paragraphs("en")) / 5
    assert all(p.text not in {f"{k}. {t}" for k, t in enumerate(TOPIC_TITLES, 1)} for p, _ in labeled)


def test_held_out_never_in_train_split(available: list[str]) -> None:
    for lang in available:
        train, held = topics.split(lang)
        assert held, lang
        assert not any(p.held_out for p, _ in train), lang
        assert all(p.held_out for p, _ in held), lang
        assert len(train) + len(held) == len(topics.labeled_paragraphs(lang))
        assert not {p.text for p, _ in train} & {p.text for p, _ in held}


def test_evaluate_sees_only_held_out_text(available: list[str]) -> None:
    langs = ["en", "de", "zh"]
    gold = {topics.PREFIX + p.text: label for lang in langs for p, label in topics.split(lang)[1]}
    seen: list[str] = []

    def oracle(texts: list[str]) -> list[int]:
        seen.extend(texts)
        return [gold[t] for t in texts]

    report = topics.evaluate(oracle, langs, trained=["en"])
    assert set(seen) == set(gold)
    assert report["mean"] == 1.0 and report["worst"]["accuracy"] == 1.0
    assert report["languages"]["en"]["split"] == "trained" and report["languages"]["zh"]["split"] == "zero-shot"
    assert sum(map(sum, report["confusion"])) == len(gold)

    always_science = topics.evaluate(lambda texts: [0] * len(texts), ["en"])
    n_science = sum(1 for _, label in topics.split("en")[1] if label == 0)
    assert always_science["languages"]["en"]["correct"] == n_science


def test_the_benchmarks_training_jsonl_holds_the_training_split_only(capsys):
    """benchmarks/topic_train_jsonl.py (make bench-topic's distillation data and INT8 calibration): every line is a
    training paragraph with its label's name; no held-out paragraph, which the benchmark scores, is among them."""
    import json
    from pathlib import Path

    from tests.conftest import load_script

    script = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "topic_train_jsonl.py", "topic_jsonl")
    assert script.main(["--langs", "en,hi"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    train = {(p.text, TOPICS[label]) for lang in ("en", "hi") for p, label in topics.split(lang)[0]}
    held_out = {p.text for lang in ("en", "hi") for p, _ in topics.split(lang)[1]}
    assert rows and {(r["text"], r["label"]) for r in rows} == train and len(rows) == len(train)
    assert not {r["text"] for r in rows} & held_out
