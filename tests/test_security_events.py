"""Issue 22: the security activity of an account, device names on sessions, trusted devices, all against the emulator.

Every event is written in the commit of the change it records: these tests drive each change through
the real HTTP edge (or the admin CLI) and read back what ``GET /security-events`` and the stored
documents say.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from session import cli, tokens
from tests.conftest import AppFactory, bearer, emulator_get, register
from tests.support import FakeClock, assert_problem, use_clock

PASSWORD = "correct horse battery"
NEW_PASSWORD = "another horse battery"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:146.0) Gecko/20100101 Firefox/146.0"
DEVICE = "__Host-session-device"
# The client address comes from X-Forwarded-For (one trusted proxy), the place from a load balancer's header.
WHERE = {"SESSION_CLIENT_IP_HEADER": "X-Forwarded-For", "SESSION_CLIENT_GEO_HEADER": "X-Client-Geo-Location"}
FROM_BERLIN = {"User-Agent": CHROME, "X-Forwarded-For": "203.0.113.7", "X-Client-Geo-Location": "DE,Berlin"}


def _login(client: TestClient, username: str = "alice", password: str = PASSWORD, **headers: str) -> Any:
    return client.post("/login", json={"username": username, "password": password}, headers=headers)


def _token(client: TestClient, username: str = "alice", **headers: str) -> str:
    response = _login(client, username, **headers)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _events(client: TestClient, token: str, **params: str) -> list[dict[str, Any]]:
    response = client.get("/security-events", params={"limit": "100", **params}, headers=bearer(token))
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def _types(client: TestClient, token: str) -> list[str]:
    return [e["type"] for e in _events(client, token)]


def _device_cookie(response: Any) -> str:
    (cookie,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{DEVICE}=")]
    return str(cookie.split(";")[0].partition("=")[2])


def _stored_events(emulator_host: str, project: str, username: str) -> list[dict[str, Any]]:
    found = emulator_get(emulator_host, project, f"users/{username}/events?pageSize=300")
    return list(found.get("documents", []))


# --- what each change records ---------------------------------------------------------------------------


def test_every_change_of_a_user_records_its_event_newest_first(
    make_client: AppFactory, emulator_host: str, project: str
) -> None:
    browser = make_client(**WHERE)
    register(browser)
    first = _login(browser, **FROM_BERLIN)  # no device cookie yet: a new device
    assert first.status_code == 200
    token = _token(browser, **FROM_BERLIN)  # the browser now presents its device cookie
    phone = make_client(**WHERE)
    other = _token(phone, "alice", **{"User-Agent": FIREFOX})  # another browser: a new device again
    me = bearer(token)

    assert browser.patch("/profile", json={"email": "alice@example.com"}, headers=me).status_code == 200
    assert browser.patch("/profile", json={"display_name": "Alice"}, headers=me).status_code == 200  # no event
    reauth = browser.post("/reauthenticate", json={"password": PASSWORD}, headers=me)
    assert reauth.status_code == 200, reauth.text
    token = reauth.json()["token"]
    listed = browser.get("/sessions", headers=bearer(token)).json()["sessions"]
    phone_session = next(s["id"] for s in listed if not s["current"])
    assert browser.delete(f"/sessions/{phone_session}", headers=bearer(token)).status_code == 204
    assert phone.get("/profile", headers=bearer(other)).status_code == 401
    assert browser.delete("/sessions", headers=bearer(token)).status_code == 204
    changed = browser.post(
        "/profile/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer(token)
    )
    assert changed.status_code == 200, changed.text
    token = changed.json()["token"]

    events = _events(browser, token)
    assert [e["type"] for e in events] == [
        "password_changed",
        "sessions_revoked",
        "session_revoked",
        "reauthenticated",
        "email_changed",
        "login_new_device",  # the phone
        "login",  # the browser, with its device cookie
        "login_new_device",  # the browser's first login
    ]
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    assert len({e["id"] for e in events}) == len(events)
    by_type = {e["type"]: e for e in reversed(events)}  # the newest of each type
    assert by_type["login"]["device"] == "Chrome 156 on Linux"
    assert by_type["login"]["network"] == "203.0.113.0/24"
    assert by_type["login"]["detail"] == {"place": "DE,Berlin"}
    assert events[-1]["device"] == "Chrome 156 on Linux"
    assert by_type["login_new_device"]["device"] == "Firefox 146 on Windows"
    assert by_type["session_revoked"]["session_id"] == phone_session
    # The place is the request's own: these requests came without the geo header.
    assert by_type["sessions_revoked"]["detail"] == {"include_current": False}
    assert by_type["email_changed"]["detail"] == {}
    assert by_type["password_changed"]["session_id"] == tokens.public_id(tokens.hash_token(token))
    assert by_type["reauthenticated"]["session_id"] == tokens.public_id(tokens.hash_token(reauth.json()["token"]))

    # The stored events are exactly these, with their expiry (TTL) and not published (no topic: null).
    stored = _stored_events(emulator_host, project, "alice")
    assert sorted(d["name"].rsplit("/", 1)[1] for d in stored) == sorted(e["id"] for e in events)
    for doc in stored:
        assert "timestampValue" in doc["fields"]["expires_at"]
        assert doc["fields"]["published"] == {"nullValue": None}


def test_no_event_holds_a_secret(make_client: AppFactory, emulator_host: str, project: str) -> None:
    client = make_client()
    register(client)
    first = _login(client)
    device = _device_cookie(first)
    token = _token(client)
    changed = client.post(
        "/profile/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer(token)
    )
    assert changed.status_code == 200
    user = emulator_get(emulator_host, project, "users/alice")["fields"]
    password_hash = user["password_hash"]["stringValue"]
    secrets = [PASSWORD, NEW_PASSWORD, password_hash, device, tokens.device_hash(device)]
    for t in (first.json()["token"], token, changed.json()["token"]):
        secrets += [t, tokens.hash_token(t)]
    stored = json.dumps(_stored_events(emulator_host, project, "alice"))
    shown = json.dumps(_events(client, changed.json()["token"]))
    assert len(json.loads(shown)) == 3
    for secret in secrets:
        assert secret not in stored and secret not in shown


def test_a_lockout_event_once_per_window(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="3", SESSION_LOGIN_WINDOW_SECONDS="60")
    clock = use_clock(FakeClock())
    register(client)
    owner = {"Cookie": f"{DEVICE}={_device_cookie(_login(client))}"}  # the owner's browser: its own counter
    client.cookies.clear()  # the attacker has no device cookie
    statuses = [_login(client, password=f"guess {i}").status_code for i in range(6)]
    assert statuses == [401, 401, 401, 429, 429, 429]
    token = _token(client, **owner)
    lockouts = [e for e in _events(client, token) if e["type"] == "lockout"]
    assert len(lockouts) == 1
    assert lockouts[0]["detail"]["failures"] == 3
    assert 0 < lockouts[0]["detail"]["retry_after"] <= 60
    assert lockouts[0]["session_id"] is None
    clock.advance(61)  # a new window: three more wrong guesses lock it again, and record it again
    client.cookies.clear()
    assert [_login(client, password=f"again {i}").status_code for i in range(4)] == [401, 401, 401, 429]
    token = _token(client, **owner)
    assert _types(client, token).count("lockout") == 2


def test_a_wrong_password_and_a_refused_revoke_record_nothing(make_client: AppFactory) -> None:
    client = make_client()
    register(client)
    token = _token(client)
    assert _login(client, password="wrong!").status_code == 401
    assert _login(client, "nobody", password="wrong!").status_code == 401
    assert client.delete("/sessions/" + "A" * 24, headers=bearer(token)).status_code == 404
    assert _types(client, token) == ["login_new_device"]


def test_the_admin_commands_record_their_events(make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()
    register(client)
    register(client, "bob")
    _login(client)
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW_PASSWORD + "\n"))
    assert cli.main(["users", "set-password", "alice", "--password-stdin"]) == 0
    assert cli.main(["users", "disable", "alice"]) == 0
    assert cli.main(["users", "enable", "alice"]) == 0
    assert cli.main(["sessions", "revoke-all", "alice"]) == 0
    assert cli.main(["sessions", "revoke-everyone", "--yes"]) == 0
    client.cookies.clear()
    token = _token(client, password=NEW_PASSWORD)  # a new device: every trust ended with the credentials
    listed = client.get("/devices", headers=bearer(token)).json()["devices"]
    assert cli.main(["devices", "revoke", "alice", listed[0]["id"]]) == 0
    assert cli.main(["devices", "revoke", "alice", listed[0]["id"]]) == 1  # gone: 404
    events = _events(client, token)
    assert [e["type"] for e in events] == [
        "device_revoked",
        "login_new_device",
        "sessions_revoked_by_admin",  # revoke-everyone
        "sessions_revoked_by_admin",
        "account_enabled",
        "account_disabled",
        "password_set_by_admin",
        "login_new_device",
    ]
    assert events[2]["detail"] == {"scope": "everyone"}
    assert events[3]["detail"] == {}
    assert all(e["device"] is None and e["network"] is None for e in events[2:-1])  # the CLI has no request


# --- the listing ---------------------------------------------------------------------------------------


def test_security_events_page_by_page(make_client: AppFactory) -> None:
    client = make_client()
    register(client)
    for _ in range(4):
        _token(client)
    token = _token(client)
    everything = _events(client, token)
    assert len(everything) == 5
    seen: list[dict[str, Any]] = []
    page_token: str | None = None
    while True:
        params = {"limit": "2", **({"page_token": page_token} if page_token else {})}
        page = client.get("/security-events", params=params, headers=bearer(token)).json()
        seen += page["events"]
        page_token = page["next_page_token"]
        if page_token is None:
            break
    assert seen == everything


@pytest.mark.parametrize(
    ("query", "loc"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("page_token=nope", "page_token")],
)
def test_bad_listing_parameters_are_400(client: TestClient, query: str, loc: str) -> None:
    register(client)
    token = _token(client)
    body = assert_problem(client.get(f"/security-events?{query}", headers=bearer(token)), 400, "invalid_request")
    assert body["errors"][0]["loc"] == ["query", loc]


def test_a_sessions_page_token_is_not_an_events_one(client: TestClient) -> None:
    register(client)
    for _ in range(3):
        token = _token(client)
    sessions_token = client.get("/sessions?limit=1", headers=bearer(token)).json()["next_page_token"]
    assert sessions_token
    response = client.get(f"/security-events?page_token={sessions_token}", headers=bearer(token))
    assert_problem(response, 400, "invalid_request")


def test_the_listing_needs_a_session_and_a_recent_password(make_client: AppFactory) -> None:
    client = make_client(SESSION_REAUTH_SECONDS="300")
    clock = use_clock(FakeClock())
    register(client)
    token = _token(client)
    client.cookies.clear()
    assert_problem(client.get("/security-events"), 401, "unauthenticated")
    clock.advance(301)
    for path in ("/security-events", "/devices"):
        assert_problem(client.get(path, headers=bearer(token)), 403, "reauthentication_required")
    fresh = client.post("/reauthenticate", json={"password": PASSWORD}, headers=bearer(token)).json()["token"]
    assert _types(client, fresh) == ["reauthenticated", "login_new_device"]


def test_users_delete_removes_the_events_and_a_namesake_sees_none(
    make_client: AppFactory, emulator_host: str, project: str
) -> None:
    client = make_client()
    register(client)
    _token(client)
    assert len(_stored_events(emulator_host, project, "alice")) == 1
    assert cli.main(["users", "delete", "alice"]) == 0
    assert _stored_events(emulator_host, project, "alice") == []
    register(client)
    client.cookies.clear()
    assert _types(client, _token(client)) == ["login_new_device"]


# --- device names on sessions ------------------------------------------------------------------------


def test_sessions_show_the_device_and_the_network_never_the_address(make_client: AppFactory) -> None:
    client = make_client(**WHERE)
    register(client)
    token = _token(client, **FROM_BERLIN)
    (session,) = client.get("/sessions", headers=bearer(token)).json()["sessions"]
    assert session["device"] == "Chrome 156 on Linux"
    assert session["network"] == "203.0.113.0/24"
    assert session["place"] == "DE,Berlin"
    assert session["user_agent"] == CHROME
    assert "203.0.113.7" not in json.dumps(session)
    ipv6 = _token(client, **{"X-Forwarded-For": "2001:db8:1:2::7"})
    listed = client.get("/sessions", headers=bearer(ipv6)).json()["sessions"]
    assert next(s for s in listed if s["current"])["network"] == "2001:db8:1::/48"


def test_without_the_settings_no_network_or_place_is_believed(client: TestClient) -> None:
    register(client)
    token = _token(client, **FROM_BERLIN)  # the headers are there, but nothing says a proxy wrote them
    (session,) = client.get("/sessions", headers=bearer(token)).json()["sessions"]
    assert session["device"] == "Chrome 156 on Linux"
    assert session["network"] is None and session["place"] is None


# --- trusted devices ---------------------------------------------------------------------------------


def test_devices_are_listed_and_one_can_be_revoked(make_client: AppFactory) -> None:
    laptop = make_client()
    register(laptop)
    register(laptop, "bob")
    _token(laptop, **{"User-Agent": CHROME})
    token = _token(laptop, **{"User-Agent": CHROME})
    phone = make_client()
    _token(phone, **{"User-Agent": FIREFOX})
    listed = laptop.get("/devices", headers=bearer(token)).json()["devices"]
    assert [(d["device"], d["current"]) for d in listed] == [
        ("Firefox 146 on Windows", False),
        ("Chrome 156 on Linux", True),
    ]
    assert listed[1]["last_used_at"] > listed[1]["created_at"]  # used twice

    bobs = make_client()
    bob = _token(bobs, "bob")
    assert_problem(bobs.delete(f"/devices/{listed[0]['id']}", headers=bearer(bob)), 404, "not_found")
    assert_problem(laptop.delete("/devices/not-an-id", headers=bearer(token)), 404, "not_found")

    assert laptop.delete(f"/devices/{listed[0]['id']}", headers=bearer(token)).status_code == 204
    assert [d["device"] for d in laptop.get("/devices", headers=bearer(token)).json()["devices"]] == [
        "Chrome 156 on Linux"
    ]
    assert_problem(laptop.delete(f"/devices/{listed[0]['id']}", headers=bearer(token)), 404, "not_found")
    # The phone's cookie buys nothing now: its next login is from a new device.
    phone_token = _token(phone, **{"User-Agent": FIREFOX})
    revoked = [e for e in _events(phone, phone_token) if e["type"] == "device_revoked"]
    assert revoked[0]["detail"] == {"device_name": "Firefox 146 on Windows"}
    assert _types(phone, phone_token)[:2] == ["login_new_device", "device_revoked"]
