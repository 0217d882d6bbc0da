"""The cap on sessions per user (issue 14, part 2): SESSION_MAX_PER_USER, against the real emulator.

The cap holds because each session is committed together with its entry in the user's
ledger, under a precondition on the ledger: these tests race real logins (threads released
by a barrier, over two app instances) and count what is alive afterwards.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest
from google.cloud import firestore
from starlette.testclient import TestClient

from tests.conftest import AppFactory, bearer, login, register
from tests.support import live_tokens

PASSWORD = "correct horse battery"
BURST = 32
TRIALS = 3

pytestmark = pytest.mark.slow


def _burst_logins(clients: list[TestClient], username: str, n: int) -> list[tuple[int, str | None]]:
    start = threading.Barrier(n)

    def one(i: int) -> tuple[int, str | None]:
        client = clients[i % len(clients)]
        start.wait()
        response = client.post("/login", json={"username": username, "password": PASSWORD})
        return response.status_code, response.json().get("token") if response.status_code == 200 else None

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def _stored_sessions(project: str, user_id: str) -> int:
    """The user's session documents in Firestore (all of them fresh here: none is merely expired)."""
    db = firestore.Client(project=project)
    try:
        return len(db.collection("sessions").where(filter=firestore.FieldFilter("user_id", "==", user_id)).get())
    finally:
        db.close()


def _user_id(client: TestClient, token: str) -> str:
    user_id: str = client.get("/profile", headers=bearer(token)).json()["user_id"]
    return user_id


def test_32_parallel_logins_leave_exactly_the_cap_alive(make_client: AppFactory, project: str) -> None:
    # Two instances of the app, the default cap (20); a lockout limit the burst of right passwords cannot meet.
    env = {"SESSION_LOGIN_MAX_FAILURES": "100"}
    clients = [make_client(**env), make_client(**env)]
    assert clients[0] is not clients[1]
    for trial in range(TRIALS):
        username = f"cap{trial}"
        register(clients[0], username)
        results = _burst_logins(clients, username, BURST)
        assert [status for status, _ in results] == [200] * BURST, results
        tokens = [token for _, token in results if token]
        alive = live_tokens(clients[0], tokens)
        assert len(alive) == 20, f"trial {trial}: {len(alive)} of {BURST} sessions alive"
        # Nothing over the cap is left in Firestore either: the evicted ones were deleted in their evictors' commits.
        assert _stored_sessions(project, _user_id(clients[0], alive[0])) == 20


def test_a_login_past_the_cap_ends_the_least_recently_used_session(make_client: AppFactory) -> None:
    client = make_client(SESSION_MAX_PER_USER="3", SESSION_TOUCH_SECONDS="0.5")
    register(client)
    a, b, c = login(client), login(client), login(client)
    time.sleep(0.6)
    assert client.get("/profile", headers=bearer(a)).status_code == 200  # a touch: a is now the most recently used
    d = login(client)
    assert live_tokens(client, [a, b, c, d]) == [a, c, d]
    gone = client.get("/profile", headers=bearer(b))
    assert gone.status_code == 401 and gone.json()["reason"] == "unknown"


def test_ended_sessions_make_room_without_ending_a_live_one(make_client: AppFactory) -> None:
    client = make_client(SESSION_MAX_PER_USER="3")
    register(client)
    a, b, c = login(client), login(client), login(client)
    for token in (a, b):
        assert client.post("/logout", headers=bearer(token)).status_code == 204
    d, e = login(client), login(client)
    assert live_tokens(client, [a, b, c, d, e]) == [c, d, e]


def test_sessions_from_before_the_cap_are_counted(make_client: AppFactory) -> None:
    uncapped = make_client(SESSION_MAX_PER_USER="0", SESSION_LOGIN_MAX_FAILURES="100")
    register(uncapped)
    before = [login(uncapped) for _ in range(5)]
    capped = make_client(SESSION_MAX_PER_USER="3", SESSION_LOGIN_MAX_FAILURES="100")
    after = login(capped)
    alive = live_tokens(capped, [*before, after])
    assert len(alive) == 3 and after in alive
    assert alive[:2] == before[-2:]  # the least recently used (the oldest here) were ended


def test_a_burst_past_a_small_cap_over_two_instances(make_client: AppFactory, project: str) -> None:
    env = {"SESSION_MAX_PER_USER": "2", "SESSION_LOGIN_MAX_FAILURES": "100"}
    clients = [make_client(**env), make_client(**env)]
    for trial in range(TRIALS):
        username = f"small{trial}"
        register(clients[0], username)
        results = _burst_logins(clients, username, 16)
        assert [status for status, _ in results] == [200] * 16, results
        alive = live_tokens(clients[1], [token for _, token in results if token])
        assert len(alive) == 2, f"trial {trial}: {len(alive)} alive"
        assert _stored_sessions(project, _user_id(clients[1], alive[0])) == 2


def test_a_reauthentication_takes_the_place_of_the_session_it_ends(make_client: AppFactory) -> None:
    client = make_client(SESSION_MAX_PER_USER="2")
    register(client)
    a, b = login(client), login(client)
    response = client.post("/reauthenticate", headers=bearer(a), json={"password": PASSWORD})
    assert response.status_code == 200
    a2 = response.json()["token"]
    assert live_tokens(client, [a, b, a2]) == [b, a2]  # the rotation ended nothing but the session it replaced
    c = login(client)
    assert live_tokens(client, [b, a2, c]) == [a2, c]  # b is the least recently used of the two
