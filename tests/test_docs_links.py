"""Every relative link of README.md and docs/*.md points at a file of the repository, and every ``#anchor`` into a
Markdown file at one of its headings (GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens,
``-1``, ``-2`` for repeats)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            s = slug(heading.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            found.add(s if n == 0 else f"{s}-{n}")
    return found


def test_slugs_as_github_makes_them():
    assert slug("On a CPU without VNNI: the default, its peers and a student (2026-12-04)") == (
        "on-a-cpu-without-vnni-the-default-its-peers-and-a-student-2026-12-04"
    )
    assert slug("The 4-layer student with `--preset long` (2026-12-04, 03:13-05:22 UTC)") == (
        "the-4-layer-student-with---preset-long-2026-12-04-0313-0522-utc"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for match in LINK.finditer(page.read_text(encoding="utf-8")):
        target = match.group(1)
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path) if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no such heading")
    assert not broken, broken
