"""examples/orders: its own errors are the service's problem+json, and it depends on the package, not a copy.

(tests/test_guard.py covers its session checks; tests/test_package.py installs it and runs it with
its one documented command.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from functions_framework import create_app
from packaging.requirements import Requirement
from starlette.testclient import TestClient

from session import guard
from session.errors import PROBLEM_TYPE
from tests.conftest import ROOT, AppFactory, bearer, login, register

EXAMPLE = ROOT / "examples" / "orders"


@pytest.fixture
def orders(make_client: AppFactory) -> Iterator[tuple[Any, str]]:
    """The example's Flask test client, and a token with `orders:write`."""
    guard.reset()  # the guard reads the settings once per process: this test's project must count
    api: TestClient = make_client(SESSION_DEFAULT_PERMISSIONS="read,orders:write")
    register(api)
    token = login(api)
    yield create_app("create_order", str(EXAMPLE / "main.py")).test_client(), token
    guard.reset()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{}", "application/json", 400, "invalid_request"),
        (b'{"item": ""}', "application/json", 400, "invalid_request"),
        (b'{"item": "tea", "quantity": 0}', "application/json", 400, "invalid_request"),
        (b'{"item": "tea", "price": 1}', "application/json", 400, "invalid_request"),
        (b"{", "application/json", 400, "invalid_json"),
        (b"item=tea", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_the_example_answers_bad_orders_with_problem_json(
    orders: tuple[Any, str], body: bytes, content_type: str, status: int, code: str
) -> None:
    client, token = orders
    response = client.post("/", data=body, headers={**bearer(token), "Content-Type": content_type})
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.get_json(force=True)
    assert problem["code"] == code
    assert problem["type"] == PROBLEM_TYPE + code
    assert problem["status"] == status and problem["title"] and problem["detail"]
    if code == "invalid_request":
        assert problem["errors"] and all({"loc", "msg"} <= set(e) for e in problem["errors"])


def test_the_example_depends_on_the_package_not_a_copy() -> None:
    lines = [line for line in (EXAMPLE / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    requirements = {Requirement(line).name: Requirement(line) for line in lines if line}
    package = requirements["session-service"]
    assert package.url and package.url.startswith("git+https://") and "@v" in package.url  # a tagged release
    assert not (EXAMPLE / "session").exists()
    for text in ((EXAMPLE / "README.md").read_text(), (ROOT / "README.md").read_text()):
        assert "rsync" not in text
    assert ".venv/" in (EXAMPLE / ".gcloudignore").read_text().splitlines()


def test_the_example_is_documented_as_one_command() -> None:
    assert "make -C examples/orders run" in (EXAMPLE / "README.md").read_text()
