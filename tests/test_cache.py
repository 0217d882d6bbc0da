"""SESSION_CACHE_SECONDS (issue 13 §2): bounded staleness for the hot read, strong for everything that changes state.

The cross-instance bound is proven with real processes: `make run` servers sharing
one emulator, the admin CLI as another process. The rest runs in process against
the real emulator; the cache's own clock (monotonic) and the service's clock are
moved instead of sleeping wherever a test can.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from devtools.launch import Server, make_run
from session import tokens
from session.models import SessionRecord, UserRecord
from session.store import Versioned
from tests.conftest import ROOT, AppFactory, bearer, login, main_module, register
from tests.support import FakeClock, Monotonic, use_cache_clock, use_clock

PASSWORD = "correct horse battery"
N = 3.0
# Scheduling slack on a shared 2-CPU machine: a request in flight, a slow event loop.
SLACK = 1.5


def emulator_delete(host: str, project: str, path: str) -> None:
    """Delete a document behind the instance's back (what another instance's logout does)."""
    url = f"http://{host}/v1/projects/{project}/databases/(default)/documents/{path}"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
        pass


def cached_client(make_client: AppFactory, seconds: float = 30, **env: str) -> tuple[TestClient, Monotonic]:
    client = make_client(SESSION_CACHE_SECONDS=str(seconds), **env)
    return client, use_cache_clock(Monotonic())


def status(client: TestClient | httpx.Client, token: str) -> int:
    return client.get("/profile", headers=bearer(token)).status_code


# --- the cache module alone --------------------------------------------------------------------


def _records(user_id: str, token_hash: str) -> tuple[SessionRecord, Versioned[UserRecord]]:
    now = datetime.now(UTC)
    session = SessionRecord(
        user_id=user_id,
        username=f"u{user_id}",
        public_id=tokens.public_id(token_hash),
        created_at=now,
        last_seen_at=now,
        absolute_expires_at=now + timedelta(days=1),
        expires_at=now + timedelta(hours=1),
    )
    user = UserRecord(user_id=user_id, username=f"u{user_id}", password_hash="x", created_at=now, updated_at=now)
    return session, Versioned(user, now)


def test_cache_never_grows_beyond_its_size_and_drops_the_least_recently_used() -> None:
    from session.cache import SessionCache  # here: the other tests run unchanged against code without it

    cache = SessionCache(3)
    hashes = [tokens.hash_token(f"t{i}") for i in range(10)]
    for i, h in enumerate(hashes[:3]):
        cache.put(h, *_records(f"user{i % 2}", h), read_at=0.0, revision=cache.revision)
    assert cache.get(hashes[0]) is not None  # now the most recently used
    for i, h in enumerate(hashes[3:]):
        cache.put(h, *_records(f"user{i % 2}", h), read_at=0.0, revision=cache.revision)
        assert len(cache) <= 3
    assert len(cache) == 3
    assert cache.get(hashes[1]) is None and cache.get(hashes[2]) is None
    assert [h for h in hashes if cache.get(h) is not None] == hashes[-3:]
    cache.forget_user("user0")
    cache.forget_user("user1")
    assert len(cache) == 0


def test_cache_keeps_no_read_that_a_revocation_may_have_overtaken() -> None:
    from session.cache import SessionCache

    cache = SessionCache(10)
    h = tokens.hash_token("t")
    before = cache.revision  # taken before the read is sent
    cache.forget(tokens.hash_token("other"))  # a logout lands while the read is in flight
    assert not cache.put(h, *_records("u", h), read_at=0.0, revision=before)
    assert cache.get(h) is None
    assert cache.put(h, *_records("u", h), read_at=0.0, revision=cache.revision)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "3601"])
def test_cache_seconds_bounds(value: str) -> None:
    from session.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="SESSION_CACHE_SECONDS"):
        load_settings({"SESSION_CACHE_SECONDS": value})


@pytest.mark.parametrize("value", ["0", "-5", "1000001", "1.5"])
def test_cache_size_bounds(value: str) -> None:
    from session.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="SESSION_CACHE_SIZE"):
        load_settings({"SESSION_CACHE_SIZE": value})


# --- in process, real emulator -----------------------------------------------------------------


def test_strong_by_default(make_client: AppFactory, project: str, emulator_host: str) -> None:
    client = make_client()
    assert main_module().api_instance.service.cache is None
    register(client)
    token = login(client)
    assert status(client, token) == 200
    emulator_delete(emulator_host, project, f"sessions/{tokens.hash_token(token)}")
    assert status(client, token) == 401


def test_cached_profile_reads_nothing_for_n_seconds_then_reads_again(
    make_client: AppFactory, project: str, emulator_host: str
) -> None:
    client, monotonic = cached_client(make_client, seconds=30)
    register(client)
    token = login(client)
    assert status(client, token) == 200  # read and cached
    emulator_delete(emulator_host, project, f"sessions/{tokens.hash_token(token)}")  # another instance's logout
    monotonic.now += 29.9
    assert status(client, token) == 200  # served from the cache: no read saw the deletion
    monotonic.now += 0.1
    assert status(client, token) == 401  # N seconds after this instance's read: read again


# Every route but GET /profile decides on a fresh read, whatever the cache holds.
STRONG_ROUTES = [
    ("PATCH", "/profile", {"display_name": "x"}),
    ("GET", "/sessions", None),
    ("DELETE", "/sessions", None),
    ("DELETE", "/sessions/" + tokens.public_id(tokens.hash_token("another")), None),
    ("POST", "/profile/password", {"current_password": PASSWORD, "new_password": "another long password"}),
]


@pytest.mark.parametrize(("method", "path", "body"), STRONG_ROUTES, ids=[f"{m} {p[:20]}" for m, p, _ in STRONG_ROUTES])
def test_state_changing_routes_never_trust_the_cache(
    make_client: AppFactory, project: str, emulator_host: str, method: str, path: str, body: object
) -> None:
    client, _ = cached_client(make_client, seconds=30)
    register(client)
    token = login(client)
    assert status(client, token) == 200
    emulator_delete(emulator_host, project, f"sessions/{tokens.hash_token(token)}")
    assert status(client, token) == 200  # the cache still holds it
    response = client.request(method, path, headers=bearer(token), json=body)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthenticated"


def test_cached_session_is_never_served_past_its_own_expiry(make_client: AppFactory) -> None:
    client, _ = cached_client(make_client, seconds=3600, SESSION_TTL_SECONDS="100", SESSION_TOUCH_SECONDS="99")
    clock = use_clock(FakeClock())
    register(client)
    token = login(client)
    assert status(client, token) == 200
    clock.advance(99)
    assert status(client, token) == 200
    clock.advance(1)  # the session's own expiry; the cache entry is 0 s old by its own clock
    assert status(client, token) == 401


def test_revocations_through_this_instance_take_effect_on_it_at_once(make_client: AppFactory) -> None:
    client, _ = cached_client(make_client, seconds=3600)
    register(client)
    service = main_module().api_instance.service
    a, b, c, d = (login(client) for _ in range(4))
    for token in (a, b, c, d):
        assert status(client, token) == 200
    assert len(service.cache) == 4

    assert client.post("/logout", headers=bearer(a)).status_code == 204
    assert status(client, a) == 401
    b_id = tokens.public_id(tokens.hash_token(b))
    assert client.delete(f"/sessions/{b_id}", headers=bearer(c)).status_code == 204
    assert status(client, b) == 401
    assert status(client, d) == 200
    assert client.delete("/sessions", headers=bearer(c)).status_code == 204  # revoke all others
    assert [status(client, t) for t in (b, d)] == [401, 401]
    assert status(client, c) == 200

    renamed = client.patch("/profile", headers=bearer(c), json={"display_name": "New Name"})
    assert renamed.status_code == 200
    assert client.get("/profile", headers=bearer(c)).json()["display_name"] == "New Name"  # not the cached user

    changed = client.post(
        "/profile/password", headers=bearer(c), json={"current_password": PASSWORD, "new_password": "a new password!"}
    )
    assert changed.status_code == 200
    assert status(client, c) == 401
    assert status(client, changed.json()["token"]) == 200


def test_admin_disable_through_this_instance_takes_effect_at_once(make_client: AppFactory) -> None:
    import asyncio

    from session.admin import AdminService

    client, _ = cached_client(make_client, seconds=3600)
    register(client)
    token = login(client)
    assert status(client, token) == 200
    service = main_module().api_instance.service
    asyncio.run(AdminService(service).set_disabled("alice", True))
    assert len(service.cache) == 0
    assert status(client, token) == 401


def test_the_cache_never_grows_beyond_its_size_through_the_service(make_client: AppFactory) -> None:
    client, _ = cached_client(make_client, seconds=3600, SESSION_CACHE_SIZE="3")
    register(client)
    service = main_module().api_instance.service
    sessions = [login(client) for _ in range(5)]
    for token in sessions:
        assert status(client, token) == 200
        assert len(service.cache) <= 3
    assert len(service.cache) == 3
    assert service.cache.get(tokens.hash_token(sessions[0])) is None
    assert service.cache.get(tokens.hash_token(sessions[-1])) is not None


def test_entries_are_never_shared_across_users(make_client: AppFactory) -> None:
    client, _ = cached_client(make_client, seconds=3600)
    register(client, "alice")
    register(client, "bob")
    alice, bob = login(client, "alice"), login(client, "bob")
    assert client.get("/profile", headers=bearer(alice)).json()["username"] == "alice"
    assert client.get("/profile", headers=bearer(bob)).json()["username"] == "bob"
    # Cached now; each token still gets its own user, never the other's.
    assert client.get("/profile", headers=bearer(alice)).json()["username"] == "alice"
    assert client.get("/profile", headers=bearer(bob)).json()["username"] == "bob"
    cache = main_module().api_instance.service.cache
    entries = {name: cache.get(tokens.hash_token(t)) for name, t in (("alice", alice), ("bob", bob))}
    assert {name: e.user.record.username for name, e in entries.items() if e} == {"alice": "alice", "bob": "bob"}
    # Bob's secret under alice's name is another token: another key, nothing cached, no such session.
    forged = f"{alice.split('.')[0]}.{bob.split('.')[1]}"
    assert status(client, forged) == 401


# --- real processes: two `make run` servers on one emulator ------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "session", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=60,
    )


def last_accepted(clients: list[httpx.Client], token: str, since: float, limit: float) -> list[float | None]:
    """Poll GET /profile on each client until each says 401: when (from ``since``) each last accepted it, or None."""
    last: list[float | None] = [None] * len(clients)
    pending = set(range(len(clients)))
    while pending:
        for i in sorted(pending):
            code = status(clients[i], token)
            elapsed = time.monotonic() - since
            assert elapsed < limit, f"still accepted {elapsed:.1f} s after the instance read it"
            if code == 401:
                pending.discard(i)
            else:
                assert code == 200
                last[i] = elapsed
        time.sleep(0.1)
    return last


@pytest.fixture
def servers(project: str, emulator_host: str) -> Iterator[tuple[Server, Server, Server]]:
    """A and B with SESSION_CACHE_SECONDS=3, C with 0: three instances of one deployment."""
    env = {"FIRESTORE_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project, "SESSION_COOKIE_SECURE": "true"}
    with ExitStack() as stack:
        a = stack.enter_context(make_run({**env, "SESSION_CACHE_SECONDS": str(N)}))
        b = stack.enter_context(make_run({**env, "SESSION_CACHE_SECONDS": str(N)}))
        c = stack.enter_context(make_run({**env, "SESSION_CACHE_SECONDS": "0"}))
        yield a, b, c


def test_revocations_reach_other_instances_within_n_seconds(servers: tuple[Server, Server, Server]) -> None:
    a_server, b_server, c_server = servers
    with (
        httpx.Client(base_url=a_server.base, timeout=30) as a,
        httpx.Client(base_url=b_server.base, timeout=30) as b,
        httpx.Client(base_url=c_server.base, timeout=30) as c,
    ):

        def revoked(username: str, revoke: Callable[[str], None], *, through_a: bool = True) -> None:
            assert a.post("/register", json={"username": username, "password": PASSWORD}).status_code == 201
            token = a.post("/login", json={"username": username, "password": PASSWORD}).json()["token"]
            assert status(c, token) == 200
            read_at = time.monotonic()
            assert status(a, token) == 200 and status(b, token) == 200  # both have read it: cached until read_at + N
            revoke(token)
            revoked_at = time.monotonic() - read_at
            assert status(c, token) == 401, username  # N = 0: at once on any instance
            others = [b]
            if through_a:
                assert status(a, token) == 401, username  # made through A: at once on A
            else:
                others.append(a)
            for last in last_accepted(others, token, read_at, N + SLACK + 5):
                assert last is None or last <= N + SLACK, (username, last)
                if revoked_at < N - SLACK:  # time was left: the test saw the stale window it bounds
                    assert last is not None and last >= revoked_at, (username, last, revoked_at)

        def logout(token: str) -> None:
            assert a.post("/logout", headers=bearer(token)).status_code == 204

        def change_password(token: str) -> None:
            body = {"current_password": PASSWORD, "new_password": "another long password"}
            assert a.post("/profile/password", headers=bearer(token), json=body).status_code == 200

        def disable(token: str) -> None:
            done = cli("users", "disable", "disabled")  # a third process: the admin CLI, through no server
            assert done.returncode == 0, done.stderr

        revoked("logout", logout)
        revoked("changer", change_password)
        revoked("disabled", disable, through_a=False)
