"""The browser page's source, read as text: what its CSP and its habits promise, checked without a browser.

tests/test_browser.py drives the page in Chromium; these catch the same mistakes in a second, and
say which line: markup built from data, an inline script, an id the script needs that the page
lacks, an event type the page has no words for.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from session.events import EVENT_TYPES

STATIC = Path(__file__).resolve().parent.parent / "session" / "static"
APP = (STATIC / "app.js").read_text()
HTML = (STATIC / "index.html").read_text()


class _Tags(HTMLParser):
    """Every start tag of the page, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags() -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(HTML)
    return parser.tags


@pytest.mark.parametrize(
    "sink", ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setTimeout("]
)
def test_the_script_never_turns_text_into_markup_or_code(sink: str) -> None:
    """Data reaches the page through textContent and DOM nodes only (the CSP forbids eval anyway)."""
    lines = [n for n, line in enumerate(APP.splitlines(), 1) if sink in line]
    assert lines == [], f"app.js uses {sink} on lines {lines}"


def test_the_page_has_no_inline_script_or_style() -> None:
    """Under `default-src 'self'` an inline script, handler or style would be refused: none is written."""
    tags = _tags()
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert scripts == [{"src": "/static/app.js", "defer": None}]
    assert "<style" not in HTML
    handlers = [(tag, name) for tag, attrs in tags for name in attrs if name.startswith("on") or name == "style"]
    assert handlers == []


def test_every_element_the_script_names_is_on_the_page() -> None:
    ids = {attrs["id"] for _tag, attrs in _tags() if attrs.get("id")}
    named = set(re.findall(r'\$\("#([A-Za-z0-9_-]+)', APP))
    assert named, 'no $("#id") found in app.js: has the helper been renamed?'
    assert sorted(named - ids) == []


def test_every_security_event_type_has_words_on_the_page() -> None:
    """A type added to session.events without a label here would show as its raw name."""
    block = re.search(r"const EVENT_LABELS = \{(.*?)\n\};", APP, re.DOTALL)
    assert block is not None
    labelled = re.findall(r"^\s+([a-z_]+): \"", block.group(1), re.MULTILINE)
    assert sorted(labelled) == sorted(EVENT_TYPES)
