"""Every relative link in the README and the guides under docs/ names a file that exists
(a guide renamed or moved leaves no reader at a dead end)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    links = (match.group(1) for match in _LINK.finditer(page.read_text()))
    return [link for link in links if not re.match(r"^[a-z]+:|^#", link)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    dead = [
        link for link in _relative_links(page) if not (page.parent / link.split("#")[0]).exists()
    ]
    assert dead == []


def test_the_limits_page_is_linked_from_the_operators_guide_and_the_bench_page() -> None:
    assert "(performance-limits.md)" in (ROOT / "docs" / "operators.md").read_text()
    assert "(performance-limits.md)" in (ROOT / "bench" / "all.py").read_text()
