"""`make check`'s selection (tests/fast_loop.py): fast, and holding what it promises."""

from __future__ import annotations

import subprocess
import sys

from tests import fast_loop
from tests.conftest import ROOT


def test_every_file_the_selection_names_exists() -> None:
    named = fast_loop.ALWAYS | fast_loop.OWN_PROCESSES
    missing = sorted(name for name in named if not (ROOT / "tests" / name).exists())
    assert not missing, missing


def test_the_fast_loop_keeps_the_contract_and_the_unit_tests_and_leaves_the_emulator_tests_out() -> None:
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.fast_loop", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    files = {line.split("::", 1)[0] for line in collected.splitlines() if "::" in line}
    assert {"tests/test_store_contract.py", "tests/test_tokens.py", "tests/test_docs.py"} <= files
    # These use the emulator through fixtures, or start processes of their own: only `make test` runs them.
    assert not files & {"tests/test_races.py", "tests/test_browser.py"}
    ids = set(collected.splitlines())
    assert "tests/test_auth_flow.py::test_each_login_opens_a_new_session" not in ids
    assert "tests/test_readme.py::test_endpoint_walkthrough_gets_every_documented_status" not in ids
    assert "tests/test_readme.py::test_every_test_the_guarantees_table_names_exists" in ids
    assert "deselected" in collected
