"""Every relative link and image in README.md, CHANGELOG.md, benchmarks/README.md and docs/*.md points at a file
that exists, and every #anchor at a heading of its page (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted({ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
                *(ROOT / "docs").glob("*.md")})
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, every character but letters, digits, '-', '_' and spaces
    dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", text, re.M)}


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(FENCE.sub("", page.read_text()))]


def broken(page: Path) -> list[str]:
    bad = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):        # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            bad.append(f"{target}: no heading #{anchor} in {file.name}")
    return bad


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "there.md").write_text("# A `code` heading, with: punctuation\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a-code-heading-with-punctuation) ![img](gone.png) [x](there.md#nope)\n"
                    "```\n[in a fence](ignored.md)\n```\n[web](https://example.com)\n")
    assert links(page) == ["there.md#a-code-heading-with-punctuation", "gone.png", "there.md#nope",
                           "https://example.com"]
    found = broken(page)
    assert len(found) == 2 and found[0].startswith("gone.png") and found[1].startswith("there.md#nope")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert page.is_file()
    assert broken(page) == []


def test_the_readme_stays_a_guide():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
