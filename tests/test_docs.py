"""The docs a newcomer reads: a short README, every link resolving, and the configuration page generated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts import docs
from session.config import VARIABLES
from tests.conftest import ROOT

PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
LINK_RE = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE_RE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchors(text: str) -> set[str]:
    """The ids GitHub gives the headings of a Markdown page: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE_RE.sub("", text), re.MULTILINE):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK_RE.findall(FENCE_RE.sub("", page.read_text())) if not re.match(r"\w+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file.read_text())):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_link_reader_sees_a_broken_link_and_a_missing_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A `code` heading, too\n[a](#title) [b](missing.md) [c](#nowhere) [d](https://x.y)\n")
    assert relative_links(page) == ["#title", "missing.md", "#nowhere"]
    assert anchors(page.read_text()) == {"title", "a-code-heading-too"}


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == docs.render(), "out of date: run make docs"


def test_every_variable_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(name for name in VARIABLES if f"`{name}`" not in text)
    assert not missing, missing


def test_every_setting_has_exactly_one_meaning() -> None:
    from session.config import Settings
    from session.config_descriptions import DESCRIPTIONS

    assert set(DESCRIPTIONS) == set(Settings.model_fields)
    assert all(text.strip() for text in DESCRIPTIONS.values())
