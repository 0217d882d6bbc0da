"""``@require_session`` and ``verify``: the profile rules for the project's own functions, on a real emulator.

Each guarded target is built by functions-framework's ``create_app``: Flask ones
driven by Flask's test client, async ones (and a sync function under
``aio.http``) by Starlette's ``TestClient``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from functions_framework import create_app
from starlette.testclient import TestClient

from devtools.launch import free_port
from session import Principal, errors, guard, tokens, verify
from tests.conftest import AppFactory, bearer, login, register

ROOT = Path(__file__).resolve().parent.parent
SOURCE = str(ROOT / "tests" / "guard_functions.py")
EXAMPLE = str(ROOT / "examples" / "orders" / "main.py")
ALLOWED = "https://app.example.com"
PASSWORD = "correct horse battery"
KINDS = ["flask", "aio", "aiosync"]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class Target:
    """One guarded function behind the test client of its framework."""

    def __init__(self, name: str, source: str = SOURCE) -> None:
        app = create_app(name, source)
        self._flask = None
        self._starlette: TestClient | None = None
        if hasattr(app, "test_client"):
            # use_cookies=False: send exactly the Cookie header a test gives.
            self._flask = app.test_client(use_cookies=False)
        else:
            self._starlette = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)
            self._starlette.__enter__()

    def call(
        self,
        method: str = "GET",
        *,
        token: str | None = None,
        cookie: str | None = None,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent.update(bearer(token))
        if cookie is not None:
            sent["Cookie"] = f"__session={cookie}"
        if origin is not None:
            sent["Origin"] = origin
        if self._flask is not None:
            response = self._flask.open("/", method=method, headers=sent, json=json)
            body = response.get_json(silent=True)
            return Reply(response.status_code, body, response.headers)
        assert self._starlette is not None
        reply = self._starlette.request(method, "/", headers=sent, json=json)
        body = reply.json() if reply.content else None
        return Reply(reply.status_code, body, reply.headers)

    def close(self) -> None:
        if self._starlette is not None:
            self._starlette.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _fresh_guard() -> Iterator[None]:
    """The guard reads settings once per process: make each test's environment count."""
    guard.reset()
    yield
    guard.reset()


@pytest.fixture
def targets() -> Iterator[Any]:
    made: list[Target] = []

    def factory(name: str, source: str = SOURCE) -> Target:
        target = Target(name, source)
        made.append(target)
        return target

    yield factory
    for target in made:
        target.close()


@pytest.fixture
def api(make_client: AppFactory) -> TestClient:
    return make_client(SESSION_DEFAULT_PERMISSIONS="read,orders:write", SESSION_ALLOWED_ORIGINS=ALLOWED)


def _problem(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.body["code"] == code
    assert reply.body["status"] == status
    assert reply.body["title"]
    assert reply.body["detail"]
    assert reply.headers["Cache-Control"] == "no-store"


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_function_gets_the_principal(kind: str, api: TestClient, targets: Any) -> None:
    user = register(api)
    token = login(api)
    reply = targets(f"{kind}_orders").call(token=token)
    assert reply.status == 200, reply.body
    profile = api.get("/profile", headers=bearer(token)).json()
    current = [s for s in api.get("/sessions", headers=bearer(token)).json()["sessions"] if s["current"]]
    assert reply.body["user_id"] == user["user_id"]
    assert reply.body["username"] == "alice"
    assert reply.body["permissions"] == ["orders:write", "read"]
    assert reply.body["session_id"] == current[0]["id"]
    assert datetime.fromisoformat(reply.body["expires_at"]) == datetime.fromisoformat(profile["session"]["expires_at"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("method", "origin"),
    [("GET", None), ("GET", "https://evil.example"), ("POST", ALLOWED), ("DELETE", ALLOWED)],
)
def test_the_cookie_works_where_csrf_allows(
    kind: str, method: str, origin: str | None, api: TestClient, targets: Any
) -> None:
    register(api)
    reply = targets(f"{kind}_orders").call(method, cookie=login(api), origin=origin)
    assert reply.status == 200, reply.body
    assert reply.body["method"] == method


@pytest.mark.parametrize("kind", KINDS)
def test_a_cookie_request_that_extends_its_session_gets_the_cookie_again(
    kind: str, make_client: AppFactory, targets: Any
) -> None:
    """One touch-and-cookie rule: like the session endpoints, the guard re-sends the cookie with its new lifetime."""
    api = make_client(
        SESSION_TOUCH_SECONDS="0", SESSION_IDLE_SECONDS="600", SESSION_DEFAULT_PERMISSIONS="read,orders:write"
    )
    register(api)
    token = login(api)
    by_cookie = targets(f"{kind}_orders").call(cookie=token)
    assert by_cookie.status == 200, by_cookie.body
    cookie = by_cookie.headers["set-cookie"]
    assert cookie.startswith(f"__session={token};")
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    # Werkzeug adds Expires beside Max-Age; Max-Age wins where both are present (RFC 6265).
    assert set(attributes) - {"expires"} == {"httponly", "secure", "samesite", "path", "max-age"}
    assert 590 <= int(attributes["max-age"].split("=")[1]) <= 600
    by_bearer = targets(f"{kind}_orders").call(token=token)  # Bearer clients keep no cookie
    assert by_bearer.status == 200 and "set-cookie" not in by_bearer.headers


@pytest.mark.parametrize("kind", KINDS)
def test_a_function_that_sets_the_cookie_itself_keeps_its_own(kind: str, make_client: AppFactory, targets: Any) -> None:
    """The session endpoints' rule: the extended session's cookie is re-sent only when no Set-Cookie is there yet.

    A function that clears the cookie (a sign-out page) must not get a second ``Set-Cookie``
    after its own: the browser applies both in order, and the guard's would bring the cookie back.
    """
    api = make_client(
        SESSION_TOUCH_SECONDS="0", SESSION_IDLE_SECONDS="600", SESSION_DEFAULT_PERMISSIONS="read,orders:write"
    )
    register(api)
    reply = targets(f"{kind}_signs_out").call(cookie=login(api))
    assert reply.status == 200, reply.body
    headers: Any = reply.headers  # Werkzeug's Headers or httpx's: each has its own name for all values
    sent = headers.getlist("set-cookie") if kind == "flask" else headers.get_list("set-cookie")
    assert len(sent) == 1, sent
    assert sent[0].startswith("__session=;") or sent[0].startswith('__session="";'), sent


@pytest.mark.parametrize("kind", KINDS)
def test_bearer_requests_are_exempt_from_csrf(kind: str, api: TestClient, targets: Any) -> None:
    register(api)
    reply = targets(f"{kind}_orders").call("POST", token=login(api), origin="https://evil.example")
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("kind", ["flask", "aio"])
def test_one_firestore_round_trip_like_profile(kind: str, api: TestClient, targets: Any) -> None:
    register(api)
    reply = targets(f"{kind}_counted").call(token=login(api))
    assert reply.status == 200, reply.body
    assert reply.headers["X-Round-Trips"] == "1"


# --- refusals ---------------------------------------------------------------------------------


UNAUTHENTICATED = [
    pytest.param({}, None, id="no-credentials"),
    pytest.param({"Authorization": "Basic YWxpY2U6eA=="}, None, id="not-bearer"),
    pytest.param({"Authorization": "Bearer "}, None, id="empty-bearer"),
    pytest.param({"Authorization": "Bearer not-a-token"}, None, id="malformed-bearer"),
    pytest.param({"Authorization": f"Bearer {tokens.mint('alice')}"}, None, id="unknown-bearer"),
    pytest.param({}, "not-a-token", id="malformed-cookie"),
    pytest.param({}, "", id="empty-cookie"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("headers", "cookie"), UNAUTHENTICATED)
def test_unauthenticated(kind: str, headers: dict[str, str], cookie: str | None, api: TestClient, targets: Any) -> None:
    register(api)
    reply = targets(f"{kind}_orders").call(headers=headers, cookie=cookie)
    _problem(reply, 401, "unauthenticated")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kind", KINDS)
def test_a_logged_out_session_is_refused(kind: str, api: TestClient, targets: Any) -> None:
    register(api)
    token = login(api)
    target = targets(f"{kind}_orders")
    assert target.call(token=token).status == 200
    assert api.post("/logout", headers=bearer(token)).status_code == 204
    _problem(target.call(token=token), 401, "unauthenticated")
    _problem(target.call(cookie=token), 401, "unauthenticated")


@pytest.mark.parametrize("kind", KINDS)
def test_a_disabled_user_is_refused(kind: str, api: TestClient, targets: Any) -> None:
    register(api)
    token = login(api)
    target = targets(f"{kind}_orders")
    assert target.call(token=token).status == 200
    cli = subprocess.run(
        [sys.executable, "-m", "session", "users", "disable", "alice"],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    reply = target.call(token=token)
    _problem(reply, 401, "unauthenticated")
    assert reply.body["reason"] in ("unknown", "revoked")  # deleted by the disable, or voided by its epoch bump


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_permission_is_forbidden(kind: str, api: TestClient, targets: Any) -> None:
    register(api)
    reply = targets(f"{kind}_admin").call(token=login(api))
    _problem(reply, 403, "forbidden")
    assert reply.body["detail"] == "missing permission: admin"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("POST", {}, id="post-no-origin"),
        pytest.param("POST", {"Origin": "https://evil.example"}, id="post-foreign-origin"),
        pytest.param("PATCH", {"Origin": "null"}, id="patch-null-origin"),
        pytest.param("DELETE", {"Referer": "https://evil.example/page"}, id="delete-foreign-referer"),
        pytest.param("PUT", {"Origin": "http://app.example.com"}, id="put-wrong-scheme"),
    ],
)
def test_cookie_state_changes_from_elsewhere_are_rejected(
    kind: str, method: str, headers: dict[str, str], api: TestClient, targets: Any
) -> None:
    register(api)
    reply = targets(f"{kind}_orders").call(method, cookie=login(api), headers=headers)
    _problem(reply, 403, "csrf_rejected")


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreachable_store_is_503(kind: str, project: str, targets: Any) -> None:
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"
    os.environ["SESSION_FIRESTORE_TIMEOUT_SECONDS"] = "1"
    reply = targets(f"{kind}_orders").call(token=tokens.mint("alice"))
    _problem(reply, 503, "service_unavailable")
    assert reply.headers["Retry-After"] == "1"


# --- verify() -----------------------------------------------------------------------------------


def test_verify_returns_the_principal(api: TestClient) -> None:
    user = register(api)
    token = login(api)
    principal = verify(token)
    assert isinstance(principal, Principal)
    assert principal.user_id == user["user_id"]
    assert principal.username == "alice"
    assert principal.permissions == frozenset({"read", "orders:write"})
    assert principal.session_id == tokens.public_id(tokens.hash_token(token))
    assert principal.expires_at.tzinfo is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.username = "mallory"  # type: ignore[misc]


@pytest.mark.parametrize("token", ["", "not-a-token", tokens.mint("alice")])
def test_verify_refuses_a_bad_token(token: str, api: TestClient) -> None:
    register(api)
    with pytest.raises(errors.Unauthenticated):
        verify(token)


def test_verify_refuses_a_revoked_session(api: TestClient) -> None:
    register(api)
    token = login(api)
    verify(token)
    api.post("/logout", headers=bearer(token))
    with pytest.raises(errors.Unauthenticated) as refused:
        verify(token)
    assert refused.value.reason is errors.UnauthenticatedReason.UNKNOWN  # logged out: the document is gone


def test_verify_with_the_store_down_raises_service_unavailable(project: str) -> None:
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"
    os.environ["SESSION_FIRESTORE_TIMEOUT_SECONDS"] = "1"
    with pytest.raises(errors.ServiceUnavailable) as caught:
        verify(tokens.mint("alice"))
    assert caught.value.retry_after == 1


def test_importing_session_stays_light() -> None:
    code = (
        "import sys, session; from session import require_session, verify, Principal; "
        "heavy = [m for m in sys.modules if m.startswith(('google.cloud.firestore', 'google.api_core', 'grpc'))]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# --- the example ---------------------------------------------------------------------------------


def test_the_example_orders_function(api: TestClient, targets: Any) -> None:
    register(api)
    token = login(api)
    create_order = targets("create_order", EXAMPLE)
    placed = create_order.call("POST", token=token, json={"item": "tea", "quantity": 2})
    assert placed.status == 201, placed.body
    assert placed.body["username"] == "alice"
    assert placed.body["item"] == "tea"
    from_browser = create_order.call("POST", cookie=token, origin=ALLOWED, json={"item": "tea"})
    assert from_browser.status == 201, from_browser.body
    _problem(create_order.call("POST", cookie=token, json={"item": "tea"}), 403, "csrf_rejected")
    _problem(create_order.call("POST", json={"item": "tea"}), 401, "unauthenticated")
    assert create_order.call("POST", token=token, json={}).status == 400
    whoami = targets("whoami", EXAMPLE).call(token=token)
    assert whoami.status == 200
    assert whoami.body["username"] == "alice"


def test_the_example_without_the_permission_is_forbidden(make_client: AppFactory, targets: Any) -> None:
    api = make_client(SESSION_DEFAULT_PERMISSIONS="read")
    register(api)
    token = login(api)
    _problem(targets("create_order", EXAMPLE).call("POST", token=token, json={"item": "tea"}), 403, "forbidden")
    assert targets("whoami", EXAMPLE).call(token=token).status == 200
