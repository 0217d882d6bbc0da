"""Session lifecycle (issue 3): idle expiry and lazy touch, listing and revoking, password change,
versioned profile updates, lockout, disabled users, CSRF and CORS. All against the real emulator."""

from __future__ import annotations

import concurrent.futures
import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.error import HTTPError

import pytest
from starlette.testclient import TestClient

from session import tokens
from session.models import UserChange
from tests.conftest import AppFactory, bearer, emulator_get, login, main_module, register
from tests.support import FakeClock, admin, use_clock

PASSWORD = "correct horse battery"
ORIGIN = "https://app.example.com"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def session_doc(host: str, project: str, token: str) -> dict[str, Any] | None:
    try:
        return emulator_get(host, project, f"sessions/{tokens.hash_token(token)}")
    except HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def ts(doc: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(doc["fields"][field]["timestampValue"])


# --- idle expiry and touch ---------------------------------------------------------------------


def test_reads_inside_touch_window_write_nothing(
    make_client: AppFactory, clock: FakeClock, project: str, emulator_host: str
) -> None:
    client = make_client()
    use_clock(clock)
    register(client)
    token = login(client)
    before = session_doc(emulator_host, project, token)
    assert before is not None
    for _ in range(3):
        clock.advance(15)  # 45 s in all: inside the 60 s touch window
        assert client.get("/profile", headers=bearer(token)).status_code == 200
    after = session_doc(emulator_host, project, token)
    assert after is not None
    assert after["updateTime"] == before["updateTime"]


def test_touch_extends_idle_deadline_once_per_window(
    make_client: AppFactory, clock: FakeClock, project: str, emulator_host: str
) -> None:
    client = make_client(SESSION_IDLE_SECONDS="600", SESSION_TOUCH_SECONDS="60")
    use_clock(clock)
    register(client)
    token = login(client)
    created = clock()
    clock.advance(61)
    response = client.get("/profile", headers=bearer(token))
    assert response.status_code == 200
    doc = session_doc(emulator_host, project, token)
    assert doc is not None
    assert ts(doc, "last_seen_at") == clock()
    assert ts(doc, "expires_at") == clock() + timedelta(seconds=600)
    assert ts(doc, "created_at") == created
    touched = doc["updateTime"]
    clock.advance(30)  # inside the window after the touch: no write
    assert client.get("/profile", headers=bearer(token)).status_code == 200
    doc = session_doc(emulator_host, project, token)
    assert doc is not None and doc["updateTime"] == touched


def test_idle_session_expires(make_client: AppFactory, clock: FakeClock) -> None:
    client = make_client(SESSION_IDLE_SECONDS="600")
    use_clock(clock)
    register(client)
    token = login(client)
    clock.advance(599)
    assert client.get("/profile", headers=bearer(token)).status_code == 200  # touches: idle restarts
    clock.advance(599)
    assert client.get("/profile", headers=bearer(token)).status_code == 200
    clock.advance(601)
    response = client.get("/profile", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_absolute_lifetime_caps_touches(
    make_client: AppFactory, clock: FakeClock, project: str, emulator_host: str
) -> None:
    client = make_client(SESSION_TTL_SECONDS="1000", SESSION_IDLE_SECONDS="600")
    use_clock(clock)
    register(client)
    token = login(client)
    created = clock()
    for _ in range(3):  # keep it busy: idle never runs out
        clock.advance(300)
        assert client.get("/profile", headers=bearer(token)).status_code == 200
    doc = session_doc(emulator_host, project, token)
    assert doc is not None
    # expires_at = min(last_seen + idle, created + absolute)
    assert ts(doc, "expires_at") == created + timedelta(seconds=1000)
    clock.advance(101)
    assert client.get("/profile", headers=bearer(token)).status_code == 401


def test_touch_never_resurrects_a_logged_out_session(make_client: AppFactory, project: str, emulator_host: str) -> None:
    """Real threads: profile reads that touch on every request race a logout."""
    client = make_client(SESSION_TOUCH_SECONDS="0")
    register(client)
    for _ in range(5):
        token = login(client)
        start = threading.Barrier(9)

        def read(start: threading.Barrier = start, token: str = token) -> list[int]:
            start.wait()
            return [client.get("/profile", headers=bearer(token)).status_code for _ in range(4)]

        def logout(start: threading.Barrier = start, token: str = token) -> int:
            start.wait()
            return client.post("/logout", headers=bearer(token)).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=9) as pool:
            reads = [pool.submit(read) for _ in range(8)]
            out = pool.submit(logout)
            assert out.result() == 204
            statuses = [s for f in reads for s in f.result()]
        assert set(statuses) <= {200, 401}
        assert session_doc(emulator_host, project, token) is None  # not recreated by a late touch
        assert client.get("/profile", headers=bearer(token)).status_code == 401


# --- listing and revoking ---------------------------------------------------------------------------


def test_list_sessions_newest_first_only_mine(client: TestClient) -> None:
    register(client)
    register(client, "bob")
    login(client, "bob")
    first = login(client)
    second = login(client)
    response = client.get("/sessions", headers=bearer(second))
    assert response.status_code == 200
    sessions = response.json()["sessions"]
    assert len(sessions) == 2
    assert [s["current"] for s in sessions] == [True, False]
    assert sessions[0]["created_at"] > sessions[1]["created_at"]
    assert set(sessions[0]) == {
        "id",
        "created_at",
        "last_seen_at",
        "expires_at",
        "user_agent",
        "device",
        "network",
        "place",
        "current",
    }
    # Each id is the public handle of one of alice's sessions, newest first: never the token or its hash.
    assert [s["id"] for s in sessions] == [tokens.public_id(tokens.hash_token(t)) for t in (second, first)]
    assert all(tokens.is_public_id(s["id"]) for s in sessions)
    secrets = [*(first, second), *(tokens.hash_token(t) for t in (first, second))]
    assert not any(s["id"] in secret for s in sessions for secret in secrets)  # no part of a token or hash
    assert all(s["user_agent"] == "testclient" for s in sessions)


def test_list_hides_expired_sessions(make_client: AppFactory, clock: FakeClock) -> None:
    client = make_client(SESSION_IDLE_SECONDS="600")
    use_clock(clock)
    register(client)
    login(client)
    clock.advance(500)
    fresh = login(client)
    clock.advance(200)  # the first is now idle-expired, the second is not
    sessions = client.get("/sessions", headers=bearer(fresh)).json()["sessions"]
    assert len(sessions) == 1 and sessions[0]["current"]


def test_revoke_one_session(client: TestClient) -> None:
    register(client)
    other = login(client)
    current = login(client)
    listing = client.get("/sessions", headers=bearer(current)).json()["sessions"]
    other_id = next(s["id"] for s in listing if not s["current"])
    assert client.delete(f"/sessions/{other_id}", headers=bearer(current)).status_code == 204
    assert client.get("/profile", headers=bearer(other)).status_code == 401
    assert client.get("/profile", headers=bearer(current)).status_code == 200
    again = client.delete(f"/sessions/{other_id}", headers=bearer(current))
    assert again.status_code == 404 and again.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("raw_path", "session_id"),
    [
        ("/sessions/AAAAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAAA"),  # the shape of an id, of no session
        ("/sessions/short", "short"),
        ("/sessions/" + "x" * 300, "x" * 300),
        # Dot segments pre-encoded: the client would otherwise resolve them away before sending.
        ("/sessions/%2E%2E", ".."),
        ("/sessions/%2E%2E%5C%2E%2E%5Cusers%5Calice", "..\\..\\users\\alice"),
        ("/sessions/%2E%2E/%2E%2E/users/alice", None),  # more segments: no route, not an id
        ("/sessions/%2E%2E%2F%2E%2E%2Fusers%2Falice", None),  # an encoded slash separates segments too
    ],
    ids=["id-shaped", "short", "long", "dot-dot", "backslashes", "dot-dot-segments", "encoded-slashes"],
)
def test_revoke_unknown_session_is_404(
    client: TestClient, project: str, emulator_host: str, raw_path: str, session_id: str | None
) -> None:
    register(client)
    token = login(client)
    service = main_module().api_instance.service
    seen: list[str] = []
    revoke = service.revoke_session

    async def spy(ctx: Any, sid: str, **kwargs: Any) -> bool:
        seen.append(sid)
        return bool(await revoke(ctx, sid, **kwargs))

    service.revoke_session = spy
    try:
        response = client.delete(raw_path, headers=bearer(token))
    finally:
        service.revoke_session = revoke
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"
    # The path reached the service as sent: one segment is the id, as is; a longer path is no id at all.
    assert seen == ([] if session_id is None else [session_id])
    assert client.get("/profile", headers=bearer(token)).status_code == 200
    assert emulator_get(emulator_host, project, "users/alice")["fields"]["username"]["stringValue"] == "alice"


def test_cannot_revoke_another_users_session(client: TestClient) -> None:
    register(client)
    register(client, "bob")
    alice = login(client)
    bob = login(client, "bob")
    bob_id = client.get("/sessions", headers=bearer(bob)).json()["sessions"][0]["id"]
    response = client.delete(f"/sessions/{bob_id}", headers=bearer(alice))
    assert response.status_code == 404
    assert client.get("/profile", headers=bearer(bob)).status_code == 200


def test_revoke_all_but_current(client: TestClient) -> None:
    register(client)
    register(client, "bob")
    bob = login(client, "bob")
    others = [login(client) for _ in range(3)]
    current = login(client)
    assert client.delete("/sessions", headers=bearer(current)).status_code == 204
    assert all(client.get("/profile", headers=bearer(t)).status_code == 401 for t in others)
    assert client.get("/profile", headers=bearer(current)).status_code == 200
    assert client.get("/profile", headers=bearer(bob)).status_code == 200
    assert len(client.get("/sessions", headers=bearer(current)).json()["sessions"]) == 1


def test_revoke_all_including_current(client: TestClient) -> None:
    register(client)
    other, current = login(client), login(client)
    response = client.delete("/sessions?include_current=true", headers=bearer(current))
    assert response.status_code == 204
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/profile", headers=bearer(current)).status_code == 401
    assert client.get("/profile", headers=bearer(other)).status_code == 401


# --- password change ------------------------------------------------------------------------------


def test_password_change_rotates_everything(client: TestClient) -> None:
    register(client)
    other = login(client)
    old = login(client)
    response = client.post(
        "/profile/password",
        headers=bearer(old),
        json={"current_password": PASSWORD, "new_password": "a brand new secret"},
    )
    assert response.status_code == 200
    new = response.json()["token"]
    assert new not in (old, other)
    assert response.headers["set-cookie"].startswith(f"__session={new};")
    assert client.get("/profile", headers=bearer(old)).status_code == 401
    assert client.get("/profile", headers=bearer(other)).status_code == 401
    assert client.get("/profile", headers=bearer(new)).status_code == 200
    assert client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 401
    assert login(client, password="a brand new secret")


def test_password_change_with_wrong_current_password(client: TestClient) -> None:
    register(client)
    token = login(client)
    response = client.post(
        "/profile/password",
        headers=bearer(token),
        json={"current_password": "wrong one", "new_password": "whatever123"},
    )
    assert response.status_code == 403
    assert response.json()["code"] == "wrong_current_password"
    assert client.get("/profile", headers=bearer(token)).status_code == 200
    assert login(client)  # the old password still works


# --- versioned profile -------------------------------------------------------------------------------


def test_profile_version_and_etag(client: TestClient) -> None:
    register(client)
    token = login(client)
    first = client.get("/profile", headers=bearer(token))
    assert first.json()["version"] == 1
    assert first.headers["etag"] == '"1"'
    patched = client.patch("/profile", headers={**bearer(token), "If-Match": '"1"'}, json={"display_name": "Al"})
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Al"
    assert patched.json()["version"] == 2
    assert patched.headers["etag"] == '"2"'
    no_precondition = client.patch("/profile", headers=bearer(token), json={"email": "al@example.com"})
    assert no_precondition.status_code == 200 and no_precondition.json()["version"] == 3
    cleared = client.patch("/profile", headers=bearer(token), json={"display_name": None})
    assert cleared.json()["display_name"] is None and cleared.json()["email"] == "al@example.com"


def test_stale_if_match_writes_nothing(client: TestClient, project: str, emulator_host: str) -> None:
    register(client)
    token = login(client)
    client.patch("/profile", headers=bearer(token), json={"display_name": "One"})
    before = emulator_get(emulator_host, project, "users/alice")
    response = client.patch("/profile", headers={**bearer(token), "If-Match": '"1"'}, json={"display_name": "Two"})
    assert response.status_code == 412
    assert response.json()["code"] == "version_conflict"
    after = emulator_get(emulator_host, project, "users/alice")
    assert after["updateTime"] == before["updateTime"]
    assert client.get("/profile", headers=bearer(token)).json()["display_name"] == "One"


def test_eight_concurrent_patches_with_one_version(client: TestClient) -> None:
    register(client)
    token = login(client)
    start = threading.Barrier(8)

    def patch(i: int) -> int:
        start.wait()
        headers = {**bearer(token), "If-Match": '"1"'}
        return client.patch("/profile", headers=headers, json={"display_name": f"writer {i}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(patch, range(8)))
    assert sorted(statuses) == [200] + [412] * 7
    assert client.get("/profile", headers=bearer(token)).json()["version"] == 2


@pytest.mark.parametrize("if_match", ["abc", '"x"', '"-1"'])
def test_malformed_if_match_is_400(client: TestClient, if_match: str) -> None:
    register(client)
    token = login(client)
    response = client.patch("/profile", headers={**bearer(token), "If-Match": if_match}, json={"display_name": "x"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


# --- lockout ------------------------------------------------------------------------------------------


def _attempt(client: TestClient, username: str, password: str) -> Any:
    return client.post("/login", json={"username": username, "password": password})


def test_lockout_after_max_failures(client: TestClient) -> None:
    register(client)
    register(client, "bob")
    for _ in range(5):
        assert _attempt(client, "alice", "wrong password").status_code == 401
    locked = _attempt(client, "alice", PASSWORD)  # even the right password
    assert locked.status_code == 429
    assert locked.json()["code"] == "too_many_attempts"
    assert 1 <= int(locked.headers["retry-after"]) <= 900
    assert login(client, "bob")  # other users are unaffected


def test_unknown_usernames_lock_out_the_same_way(client: TestClient) -> None:
    register(client)
    known = [_attempt(client, "alice", "wrong password") for _ in range(6)]
    unknown = [_attempt(client, "nobody", "wrong password") for _ in range(6)]
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [401] * 5 + [429]
    # The same answer, but for the seconds left in each counter's own window.
    assert {k: v for k, v in known[-1].json().items() if k != "detail"} == {
        k: v for k, v in unknown[-1].json().items() if k != "detail"
    }


def test_lockout_window_passes(make_client: AppFactory, clock: FakeClock) -> None:
    client = make_client(SESSION_LOGIN_WINDOW_SECONDS="900")
    use_clock(clock)
    register(client)
    for _ in range(5):
        _attempt(client, "alice", "wrong password")
    assert _attempt(client, "alice", PASSWORD).status_code == 429
    clock.advance(901)
    assert _attempt(client, "alice", PASSWORD).status_code == 200


def test_success_clears_the_counter(client: TestClient, project: str, emulator_host: str) -> None:
    register(client)
    for _ in range(4):
        _attempt(client, "alice", "wrong password")
    assert login(client)
    with pytest.raises(HTTPError) as gone:
        emulator_get(emulator_host, project, f"login_attempts/{tokens.counter_key('alice')}")
    assert gone.value.code == 404
    gone.value.close()  # its response's socket: left to the collector, it is closed whenever a collection runs
    for _ in range(4):  # a fresh budget
        assert _attempt(client, "alice", "wrong password").status_code == 401
    assert login(client)


def test_parallel_failures_all_count(make_client: AppFactory, project: str, emulator_host: str) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="50")
    register(client)
    start = threading.Barrier(10)

    def fail(_: int) -> int:
        start.wait()
        return _attempt(client, "alice", "wrong password").status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        assert list(pool.map(fail, range(10))) == [401] * 10
    doc = emulator_get(emulator_host, project, f"login_attempts/{tokens.counter_key('alice')}")
    assert doc["fields"]["count"]["integerValue"] == "10"
    assert "timestampValue" in doc["fields"]["expires_at"]  # its own TTL field


# --- disabled users and permissions ---------------------------------------------------------------------


def test_disabled_user_loses_sessions_and_login(client: TestClient) -> None:
    register(client)
    token = login(client)
    client.portal.call(admin().set_disabled, "alice", True)  # type: ignore[union-attr]
    assert client.get("/profile", headers=bearer(token)).status_code == 401
    refused = _attempt(client, "alice", PASSWORD)
    assert refused.status_code == 403 and refused.json()["code"] == "account_disabled"
    assert _attempt(client, "alice", "wrong password").json()["code"] == "invalid_credentials"
    client.portal.call(admin().set_disabled, "alice", False)  # type: ignore[union-attr]
    assert login(client)


def test_permission_change_applies_on_next_request(client: TestClient) -> None:
    register(client)
    token = login(client)
    assert client.get("/profile", headers=bearer(token)).json()["permissions"] == ["read"]
    change = UserChange(permissions=["read", "admin"])
    client.portal.call(admin().update, "alice", change)  # type: ignore[union-attr]
    assert client.get("/profile", headers=bearer(token)).json()["permissions"] == ["read", "admin"]


# --- CSRF and CORS ------------------------------------------------------------------------------------


@pytest.fixture
def csrf_client(make_client: AppFactory) -> TestClient:
    client = make_client(SESSION_ALLOWED_ORIGINS=f"{ORIGIN},http://localhost:3000")
    register(client)
    assert client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    return client  # its cookie jar holds __session


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Referer": "https://evil.example/page"}, 403),
        ({"Origin": ORIGIN}, 204),
        ({"Referer": f"{ORIGIN}/settings"}, 204),
    ],
    ids=["no-origin", "evil-origin", "null-origin", "evil-referer", "allowed-origin", "allowed-referer"],
)
def test_cookie_state_change_needs_allowed_origin(
    csrf_client: TestClient, headers: dict[str, str], status: int
) -> None:
    response = csrf_client.delete("/sessions", headers=headers)
    assert response.status_code == status
    if status == 403:
        assert response.json()["code"] == "csrf_rejected"


def test_csrf_rejection_changes_nothing(csrf_client: TestClient) -> None:
    rejected = csrf_client.post("/logout", headers={"Origin": "https://evil.example"})
    assert rejected.status_code == 403
    assert csrf_client.get("/profile").status_code == 200  # GET needs no origin, and the session lives
    patched = csrf_client.patch("/profile", json={"display_name": "pwned"})
    assert patched.status_code == 403
    assert csrf_client.get("/profile").json()["display_name"] is None


def test_bearer_requests_are_not_subject_to_csrf(csrf_client: TestClient) -> None:
    token = login(csrf_client)
    csrf_client.cookies.clear()
    response = csrf_client.patch(
        "/profile", headers={**bearer(token), "Origin": "https://evil.example"}, json={"display_name": "ok"}
    )
    assert response.status_code == 200


def test_cors_preflight_for_allowed_origin(csrf_client: TestClient) -> None:
    response = csrf_client.options("/profile", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PATCH"})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "PATCH" in response.headers["access-control-allow-methods"]
    assert "If-Match" in response.headers["access-control-allow-headers"]
    assert "Origin" in response.headers["vary"]
    actual = csrf_client.get("/profile", headers={"Origin": ORIGIN})
    assert actual.headers["access-control-allow-origin"] == ORIGIN
    assert "ETag" in actual.headers["access-control-expose-headers"]


def test_no_cors_grant_for_other_origins(csrf_client: TestClient) -> None:
    response = csrf_client.options(
        "/profile", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"}
    )
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers
    actual = csrf_client.get("/profile", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in actual.headers


def test_touch_refreshes_the_cookie_lifetime(make_client: AppFactory, clock: FakeClock) -> None:
    """A browser keeps the cookie as long as the session lives: a touch re-sends it with the new Max-Age."""
    client = make_client(SESSION_IDLE_SECONDS="600", SESSION_TOUCH_SECONDS="60")
    use_clock(clock)
    register(client)
    token = client.post("/login", json={"username": "alice", "password": PASSWORD}).json()["token"]
    clock.advance(30)
    inside = client.get("/profile")  # by cookie, inside the touch window: nothing to refresh
    assert inside.status_code == 200
    assert "set-cookie" not in inside.headers
    clock.advance(300)
    touched = client.get("/profile")
    assert touched.status_code == 200
    assert touched.headers["set-cookie"].startswith(f"__session={token};")
    assert "Max-Age=600" in touched.headers["set-cookie"]
    clock.advance(300)
    by_bearer = client.get("/profile", headers=bearer(token))  # Bearer clients hold no cookie
    assert by_bearer.status_code == 200
    assert "set-cookie" not in by_bearer.headers
