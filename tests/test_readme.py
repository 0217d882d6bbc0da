"""The README's shell blocks run as written, with bash, against a `make run` server.

A block is tested when the line before its fence is `<!-- readme-test: NAME -->`: the
endpoint walk-through in README.md, the admin CLI example in docs/operations.md.
The endpoint walk-through documents each request's status after `→` in the
comment above it; a stand-in `curl` first on PATH runs the real one with
`--write-out` to report every status on stderr, so the block itself runs
unchanged. The CLI block must exit 0 (bash -e stops at the first failure).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

MARKER_RE = re.compile(r"^<!-- readme-test: ([\w-]+) -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
STATUS_MARK = "README-TEST-STATUS"
MARKED_PAGES = ("README.md", "docs/operations.md")
CURL_RE = re.compile(r"(?<![\w./-])curl\s")


def readme_blocks(text: str) -> dict[str, str]:
    """NAME → shell text of every marked block."""
    blocks: dict[str, str] = {}
    for name, body in MARKER_RE.findall(text):
        assert name not in blocks, f"two README blocks are marked {name!r}"
        blocks[name] = body
    return blocks


def documented_statuses(block: str) -> list[int]:
    """The status each curl call of ``block`` must get: the first `→ NNN` of the comment above it."""
    expected: list[int] = []
    current: int | None = None
    logical = re.sub(r"\\\n", " ", block)  # join continued lines
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            found = re.search(r"→ (\d{3})\b", stripped)
            if found:
                current = int(found.group(1))
            continue
        for _ in CURL_RE.finditer(stripped):
            assert current is not None, f"no `→ status` documented above: {stripped}"
            expected.append(current)
    return expected


def run_block(block: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    real_curl = shutil.which("curl")
    assert real_curl, "curl is needed"
    (shim / "curl").write_text(
        f"#!/bin/sh\nexec {real_curl} --write-out '%{{stderr}}{STATUS_MARK} %{{http_code}}\\n' \"$@\"\n"
    )
    (shim / "curl").chmod(0o755)
    full_env = {**env, "PATH": f"{shim}:{env['PATH']}"}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    blocks: dict[str, str] = {}
    for page in MARKED_PAGES:
        found = readme_blocks((ROOT / page).read_text())
        assert not set(found) & set(blocks), f"{page} marks a block name twice: {set(found) & set(blocks)}"
        blocks.update(found)
    return blocks


def test_the_walkthrough_and_cli_examples_are_marked(blocks: dict[str, str]) -> None:
    assert {"endpoints", "cli"} <= set(blocks)
    assert "endpoints" in readme_blocks((ROOT / "README.md").read_text()), "the walk-through stays in the README"
    assert len(documented_statuses(blocks["endpoints"])) >= 10


def test_endpoint_walkthrough_gets_every_documented_status(
    blocks: dict[str, str], live_server: str, tmp_path: Path
) -> None:
    port = live_server.rsplit(":", 1)[1]
    result = run_block(blocks["endpoints"], dict(os.environ, PORT=port), tmp_path)
    got = [int(code) for code in re.findall(rf"{STATUS_MARK} (\d{{3}})", result.stderr)]
    expected = documented_statuses(blocks["endpoints"])
    pairs = list(zip(got, expected, strict=False))
    # First the statuses, so a disagreement reads as one (a later step may also fail because of it).
    assert got == expected[: len(got)], f"(got, documented) status per curl call: {pairs}\n{result.stdout}"
    assert result.returncode == 0, result.stderr[-3000:]
    assert got == expected, f"(got, documented) status per curl call: {pairs}\n{result.stdout}"


def test_cli_examples_run(blocks: dict[str, str], live_server: str, tmp_path: Path) -> None:
    # The CLI talks to the same emulator and project as the server, as `make run`'s export line sets up.
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    result = run_block(blocks["cli"], env, tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert "created carol" in result.stdout
    assert "carol: disabled" in result.stdout
    assert "configuration OK" in result.stdout


def test_documented_statuses_reader() -> None:
    block = "# one → 201 x\ncurl a \\\n  b\n# two\n# and → 204\nX=$(curl -s b | python3 -c 'print(1)')\ncurl d\n"
    assert documented_statuses(block) == [201, 204, 204]


def test_every_test_the_guarantees_table_names_exists() -> None:
    """Each ``tests/FILE.py::name`` (or ``::name`` after one) in docs/security.md's guarantees table is a test there."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("## What this service guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| 7\.\d\.\d", line)]
    assert len(rows) >= 15, "the table of ASVS V7 requirements is missing or cut short"
    named = 0
    for row in rows:
        path: str | None = None
        for file, name in re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?(?:\[[^\]]*\])?`", row):
            path = file or path
            assert path is not None, row
            source = (ROOT / path).read_text()
            if name:
                assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{path}::{name} is not a test"
                named += 1
    assert named >= 20
