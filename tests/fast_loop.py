"""`make check`'s selection, as a pytest plugin (``-p tests.fast_loop``): the fast loop, not the suite.

Keeps the tests that need no Firestore emulator (no ``emulator_host`` among their
fixtures, no emulator, server or browser of their own, not marked ``slow``) and the
store contract (``tests/test_store_contract.py``, against the emulator). Everything
else is deselected, never skipped: ``make test``, which CI runs, does not load this
plugin and runs every test.
"""

from __future__ import annotations

import pytest

# Always in the fast loop, emulator or not: the contract every store backend keeps.
ALWAYS = frozenset({"test_store_contract.py"})
# Files that start an emulator, a server, a browser or a fresh venv themselves, without the emulator_host fixture.
OWN_PROCESSES = frozenset(
    {
        "test_browser.py",
        "test_clients.py",
        "test_dbsc_browser.py",
        "test_deploy.py",
        "test_dev.py",
        "test_faults.py",
        "test_live_server.py",
        "test_package.py",
        "test_publish.py",
        "test_tls_proxy.py",
    }
)


def in_fast_loop(item: pytest.Item) -> bool:
    name = item.path.name
    if name in ALWAYS:
        return True
    return (
        name not in OWN_PROCESSES
        and "emulator_host" not in getattr(item, "fixturenames", ())
        and item.get_closest_marker("slow") is None
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if in_fast_loop(item)]
    dropped = [item for item in items if not in_fast_loop(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
