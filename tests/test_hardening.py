"""Issue 11: no input is an outage, no stored value reaches the logs, no control character is stored.

Against the real emulator, through create_app's test client (and the store
itself where a request can no longer reach the failure).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from functions_framework import create_app
from starlette.testclient import TestClient

from session import errors, guard, logs, tokens, verify
from session.config import load_settings
from session.store import FirestoreStore, StoreError, StoreUnavailable
from tests.conftest import ROOT, AppFactory, bearer, login, main_module, register

PASSWORD = "correct horse battery"
RESERVED = ["__x__", "__name__", "__X__", "__.__", "____", "__" + "a" * 60 + "__"]
SECRET = "A" * 43


def forged(username: str) -> str:
    """A well-shaped token whose user part names ``username`` (no such session exists)."""
    return base64.urlsafe_b64encode(username.encode()).rstrip(b"=").decode() + "." + SECRET


@pytest.fixture
def log_lines(client: TestClient) -> Iterator[io.StringIO]:
    """The `session` loggers' structured lines, as the deployed service writes them."""
    stream = io.StringIO()
    settings = main_module().api_instance.settings
    logs.configure(settings, stream=stream)
    yield stream
    logs.configure(settings, stream=sys.stdout)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


# --- reserved document ids ----------------------------------------------------------------------


@pytest.mark.parametrize("name", RESERVED)
@pytest.mark.parametrize("path", ["/register", "/login"])
def test_reserved_usernames_are_refused_at_validation(client: TestClient, path: str, name: str) -> None:
    response = client.post(path, json={"username": name, "password": PASSWORD})
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert problem["errors"][0]["loc"] == ["username"]
    assert "reserved" in problem["errors"][0]["msg"]
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("name", ["__x__", "__name__", "____"])
def test_a_token_naming_a_reserved_id_is_401(static_client: TestClient, name: str) -> None:
    client = static_client
    token = forged(name)
    assert tokens.parse(token) is None
    for method, path in [("GET", "/profile"), ("GET", "/sessions"), ("DELETE", "/sessions"), ("PATCH", "/profile")]:
        response = client.request(method, path, headers=bearer(token), json={} if method == "PATCH" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["code"] == "unauthenticated"
    assert client.post("/logout", headers=bearer(token)).status_code == 204
    # Through the cookie too.
    client.cookies.set("__session", token)
    assert client.get("/profile").status_code == 401


def test_verify_and_the_decorator_refuse_a_reserved_id_with_401(static_client: TestClient) -> None:
    guard.reset()
    try:
        with pytest.raises(errors.Unauthenticated):
            verify(forged("__x__"))
        app = create_app("aio_orders", str(ROOT / "tests" / "guard_functions.py"))
        with TestClient(app, raise_server_exceptions=False) as guarded:
            reply = guarded.get("/", headers=bearer(forged("__name__")))
        assert reply.status_code == 401, reply.text
        assert reply.json()["code"] == "unauthenticated"
    finally:
        guard.reset()


# --- what Firestore refuses is not an outage -------------------------------------------------------


def test_the_store_calls_a_refusal_rejected_not_unavailable(project: str) -> None:
    """The reserved id, straight to the store: Firestore answers InvalidArgument, a real refusal."""
    store = FirestoreStore(load_settings())

    async def read() -> None:
        try:
            await store.read_user("__x__")
        finally:
            await store.close()

    with pytest.raises(StoreError) as caught:
        asyncio.run(read())
    assert not isinstance(caught.value, StoreUnavailable)  # never an outage: no 503, no Retry-After
    assert type(caught.value).__name__ == "StoreRejected"
    assert getattr(caught.value, "error", None) == "InvalidArgument"
    assert "reserved" in str(caught.value)


def test_a_request_firestore_refuses_is_500_with_an_error_line(client: TestClient, log_lines: io.StringIO) -> None:
    # A deployment bug the settings now refuse (a reserved collection id), forced past them into the running
    # store: every request reaches Firestore, which answers InvalidArgument.
    store = main_module().api_instance.service.store
    store._settings = store._settings.model_copy(update={"users_collection": "__users__"})
    response = client.post("/register", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "internal_error"
    assert response.json()["detail"] == "internal error"
    assert "retry-after" not in response.headers
    lines = _lines(log_lines)
    (refused,) = [line for line in lines if line.get("event") == "store_rejected"]
    assert refused["severity"] == "ERROR"
    assert "InvalidArgument" in refused["message"]
    (request,) = [line for line in lines if "entry_point" in line]
    assert (request["severity"], request["code"]) == ("ERROR", "internal_error")


# --- a corrupt stored document: named, never quoted ------------------------------------------------------


def _patch_document(emulator_host: str, project: str, path: str, fields: dict[str, Any]) -> None:
    mask = "&".join(f"updateMask.fieldPaths={name}" for name in fields)
    request = urllib.request.Request(
        f"http://{emulator_host}/v1/projects/{project}/databases/(default)/documents/{path}?{mask}",
        data=json.dumps({"fields": fields}).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json", "Authorization": "Bearer owner"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def _read_document(emulator_host: str, project: str, path: str) -> dict[str, Any]:
    url = f"http://{emulator_host}/v1/projects/{project}/databases/(default)/documents/{path}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        return dict(json.loads(reply.read()))


def test_a_corrupt_document_is_logged_by_collection_and_id_only(
    client: TestClient, log_lines: io.StringIO, emulator_host: str, project: str
) -> None:
    register(client)
    token = login(client)
    stored_hash = _read_document(emulator_host, project, "users/alice")["fields"]["password_hash"]["stringValue"]
    marker = "display-name-marker-7f3a"
    # The hash moved into a list (the wrong type, so pydantic quotes it), and a display name that is no string.
    _patch_document(
        emulator_host,
        project,
        "users/alice",
        {
            "password_hash": {"arrayValue": {"values": [{"stringValue": stored_hash}]}},
            "display_name": {"arrayValue": {"values": [{"stringValue": marker}]}},
        },
    )
    response = client.get("/profile", headers=bearer(token))
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "internal_error"
    text = log_lines.getvalue()
    assert stored_hash not in text
    assert stored_hash.rsplit("$", 1)[1] not in text  # not even the digest alone
    assert marker not in text
    (corrupt,) = [line for line in _lines(log_lines) if line.get("event") == "store_corrupt"]
    assert corrupt["severity"] == "ERROR"
    assert (corrupt["collection"], corrupt["document_id"], corrupt["model"]) == ("users", "alice", "UserRecord")
    assert sorted(corrupt["problems"]) == ["display_name: string_type", "password_hash: string_type"]


# --- JSON bodies: one reading only --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"username":"alice","password":"correct horse battery","username":"admin"}', "invalid_json"),
        ('{"username":"alice","username":"alice","password":"correct horse battery"}', "invalid_json"),
        ('{"username":"alice","password":"correct horse battery","display_name":{"a":1,"a":2}}', "invalid_json"),
        ('{"username":"alice","password":NaN}', "invalid_json"),
        ('{"username":"alice","password":Infinity}', "invalid_json"),
        ('{"username":"alice","password":"\\ud800 lone surrogate"}', "invalid_json"),
        ('\ufeff{"username":"alice","password":"correct horse battery"}', "invalid_json"),
        ('{"username":"alice","password":' + "1" * 5000 + "}", "invalid_json"),
        ("[" * 5000 + "]" * 5000, "invalid_json"),
        ('{"username":"alice","password":1e400}', "invalid_request"),
        ('"just a string"', "invalid_request"),
    ],
    ids=[
        "duplicate-username-last",
        "duplicate-username-first",
        "duplicate-nested",
        "nan",
        "infinity",
        "lone-surrogate",
        "bom",
        "huge-integer",
        "deep-nesting",
        "huge-float",
        "not-an-object",
    ],
)
def test_json_bodies_that_parsers_read_differently_are_refused(client: TestClient, body: str, code: str) -> None:
    response = client.post("/register", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert client.post("/login", json={"username": "admin", "password": PASSWORD}).status_code == 401


def test_escaped_non_ascii_text_is_still_accepted(client: TestClient) -> None:
    body = '{"username":"alice","password":"p\\u00e4ss \\ud83d\\ude00 word","display_name":"Zo\\u00eb"}'
    response = client.post("/register", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["display_name"] == "Zoë"
    assert login(client, password="päss 😀 word")


# --- stored user agents carry no control characters ------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (b"ua\x1b]0;pwned\x07\x1b[2J", "ua ]0;pwned  [2J"),
        (b"curl/8.0\r", "curl/8.0"),
        (b"a\tb\x7fc\x00d", "a b c d"),
        (b"\x1b\x1b", None),
        (b"Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)"),
    ],
)
def test_control_characters_are_stripped_from_stored_user_agents(
    client: TestClient, sent: bytes, stored: str | None
) -> None:
    register(client)
    reply = client.post("/login", json={"username": "alice", "password": PASSWORD}, headers={"User-Agent": sent})
    assert reply.status_code == 200, reply.text
    sessions = client.get("/sessions", headers=bearer(reply.json()["token"])).json()["sessions"]
    assert [s["user_agent"] for s in sessions] == [stored]


def test_a_user_agent_is_capped_after_cleaning(make_client: AppFactory) -> None:
    client = make_client()
    register(client)
    reply = client.post(
        "/login", json={"username": "alice", "password": PASSWORD}, headers={"User-Agent": "\x01" * 100 + "u" * 600}
    )
    sessions = client.get("/sessions", headers=bearer(reply.json()["token"])).json()["sessions"]
    assert sessions[0]["user_agent"] == "u" * 512


# --- the page talks to its own origin, or the one the deployment names ---------------------------------------


def test_the_page_may_connect_only_to_itself_by_default(static_client: TestClient) -> None:
    client = static_client
    from session.public import PAGE_API_META

    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert csp == "default-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    assert PAGE_API_META.format("") in page.text
    assert client.get("/static/app.js").headers["content-security-policy"] == csp


def test_the_page_names_the_configured_api_origin(make_static_client: AppFactory) -> None:
    from session.public import PAGE_API_META, PAGE_CSP_META, page_csp

    client = make_static_client(SESSION_PAGE_API_ORIGIN="https://API.example.com:8443")
    page = client.get("/", params={"api": "https://evil.example"})
    origin = "https://api.example.com:8443"
    assert page.headers["content-security-policy"].startswith(f"default-src 'self'; connect-src 'self' {origin};")
    assert PAGE_API_META.format(origin) in page.text
    assert PAGE_CSP_META.format(page_csp(origin, meta=True)) in page.text
    assert "evil" not in page.text


def test_the_page_source_holds_the_tags_the_server_fills_in() -> None:
    from session.public import PAGE_API_META, PAGE_CSP_META, page_csp

    html = (ROOT / "session" / "static" / "index.html").read_text()
    assert html.count(PAGE_API_META.format("")) == 1
    assert html.count(PAGE_CSP_META.format(page_csp(None, meta=True))) == 1
    assert "location.search" not in (ROOT / "session" / "static" / "app.js").read_text()
