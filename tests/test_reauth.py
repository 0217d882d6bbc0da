"""Re-authentication (issue 14, part 1): ``auth_time``, ``POST /reauthenticate`` and the operations that need it.

Against the real emulator through real requests. A session is aged by moving the
service's injected clock forward (``Ahead``), never by sleeping; the races release
real threads together with a barrier and repeat over several trials, as in
``tests/test_races.py``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from session import tokens
from session.models import ReauthenticateRequest, SessionRecord
from session.service import utc_now
from tests.conftest import AppFactory, bearer, emulator_get, login, main_module, register, together
from tests.support import Ahead, assert_problem, later, live_tokens, use_clock
from tests.test_login_cost import _counted as counted

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
REAUTH_SECONDS = 600
ORIGIN = "https://app.example.com"


@pytest.fixture
def clock() -> Ahead:
    return Ahead()


def reauth(client: TestClient, token: str, password: str = PASSWORD, **kwargs: Any) -> Any:
    return client.post("/reauthenticate", headers=bearer(token), json={"password": password}, **kwargs)


def profile_session(client: TestClient, token: str) -> dict[str, Any]:
    response = client.get("/profile", headers=bearer(token))
    assert response.status_code == 200, response.text
    return dict(response.json()["session"])


# --- auth_time -----------------------------------------------------------------------------------------


def test_login_sets_auth_time_and_the_profile_shows_it(client: TestClient) -> None:
    register(client)
    token = login(client)
    session = profile_session(client, token)
    assert session["auth_time"] == session["logged_in_at"]


def test_a_password_change_opens_a_session_proved_now(client: TestClient, clock: Ahead) -> None:
    register(client)
    use_clock(clock)
    token = login(client)
    clock.seconds = REAUTH_SECONDS + 5
    changed = client.post(
        "/profile/password",
        headers=bearer(token),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    new = changed.json()["token"]
    assert client.get("/sessions", headers=bearer(new)).status_code == 200  # fresh: no reauthentication needed


def test_a_session_stored_without_auth_time_reads_it_as_created_at(
    client: TestClient, emulator_host: str, project: str
) -> None:
    """Sessions stored before auth_time existed were opened by a login, which proved the password at created_at."""
    register(client)
    token = login(client)
    url = (
        f"http://{emulator_host}/v1/projects/{project}/databases/(default)/documents/"
        f"sessions/{tokens.hash_token(token)}?updateMask.fieldPaths=auth_time"
    )
    request = urllib.request.Request(url, data=json.dumps({"fields": {}}).encode(), method="PATCH")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10):
        pass
    stored = emulator_get(emulator_host, project, f"sessions/{tokens.hash_token(token)}")
    assert "auth_time" not in stored["fields"]  # the field is really gone
    session = profile_session(client, token)
    assert session["auth_time"] == session["logged_in_at"]
    assert client.get("/sessions", headers=bearer(token)).status_code == 200  # and it was proved just now


def test_the_record_model_fills_a_missing_auth_time_from_created_at() -> None:
    created = utc_now()
    fields = {
        "user_id": "u",
        "username": "alice",
        "public_id": "p",
        "created_at": created,
        "last_seen_at": created,
        "absolute_expires_at": created,
        "expires_at": created,
    }
    assert SessionRecord.model_validate(fields).auth_time == created
    later = created + timedelta(seconds=1)
    assert SessionRecord.model_validate({**fields, "auth_time": later}).auth_time == later


# --- the operations that need a recent proof -------------------------------------------------------------


def _other_session_id(client: TestClient, token: str, other: str) -> str:
    listed = client.get("/sessions", headers=bearer(token)).json()["sessions"]
    other_id = tokens.public_id(tokens.hash_token(other))
    assert other_id in [s["id"] for s in listed]
    return other_id


Operation = Callable[[TestClient, str, str], Any]

OPERATIONS: dict[str, Operation] = {
    "list sessions": lambda c, token, other_id: c.get("/sessions", headers=bearer(token)),
    "revoke all": lambda c, token, other_id: c.delete("/sessions", headers=bearer(token)),
    "revoke another": lambda c, token, other_id: c.delete(f"/sessions/{other_id}", headers=bearer(token)),
    "change email": lambda c, token, other_id: c.patch(
        "/profile", headers=bearer(token), json={"email": "new@example.com"}
    ),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_a_stale_session_must_reauthenticate_then_may(
    make_client: AppFactory, clock: Ahead, operation: Operation
) -> None:
    client = make_client(SESSION_REAUTH_SECONDS=str(REAUTH_SECONDS))
    register(client, email="old@example.com")
    use_clock(clock)
    token, other = login(client), login(client)
    other_id = _other_session_id(client, token, other)
    clock.seconds = REAUTH_SECONDS + 1

    refused = assert_problem(operation(client, token, other_id), 403, "reauthentication_required")
    assert refused["max_age"] == REAUTH_SECONDS
    assert client.get("/profile", headers=bearer(other)).status_code == 200  # nothing was done
    assert client.get("/profile", headers=bearer(token)).json()["email"] == "old@example.com"

    renewed = reauth(client, token)
    assert renewed.status_code == 200, renewed.text
    new = renewed.json()["token"]
    done = operation(client, new, other_id)
    assert done.status_code in (200, 204), done.text


def test_the_window_is_the_setting(make_client: AppFactory, clock: Ahead) -> None:
    client = make_client(SESSION_REAUTH_SECONDS="30")
    register(client)
    use_clock(clock)
    token = login(client)
    clock.seconds = 29
    assert client.get("/sessions", headers=bearer(token)).status_code == 200
    clock.seconds = 31
    assert (
        assert_problem(client.get("/sessions", headers=bearer(token)), 403, "reauthentication_required")["max_age"]
        == 30
    )


def test_what_a_stale_session_may_still_do(client: TestClient, clock: Ahead) -> None:
    """Its own profile, a new display name, the same email again, and ending itself."""
    register(client, email="alice@example.com")
    use_clock(clock)
    token = login(client)
    clock.seconds = REAUTH_SECONDS + 1
    assert client.get("/profile", headers=bearer(token)).status_code == 200
    assert client.patch("/profile", headers=bearer(token), json={"display_name": "Al"}).status_code == 200
    same = client.patch("/profile", headers=bearer(token), json={"email": "alice@example.com"})
    assert same.status_code == 200, same.text
    removed = client.patch("/profile", headers=bearer(token), json={"email": None})  # removing it is a change
    assert_problem(removed, 403, "reauthentication_required")
    own = tokens.public_id(tokens.hash_token(token))
    assert client.delete(f"/sessions/{own}", headers=bearer(token)).status_code == 204
    assert client.get("/profile", headers=bearer(token)).status_code == 401


def test_a_stale_session_gets_no_answer_about_other_ids(client: TestClient, clock: Ahead) -> None:
    register(client)
    use_clock(clock)
    token = login(client)
    clock.seconds = REAUTH_SECONDS + 1
    unknown = tokens.public_id(tokens.hash_token(tokens.mint("alice")))
    assert_problem(client.delete(f"/sessions/{unknown}", headers=bearer(token)), 403, "reauthentication_required")


def test_the_cache_does_not_let_a_stale_session_through(make_client: AppFactory, clock: Ahead) -> None:
    """With SESSION_CACHE_SECONDS on, the check is still made on the session as read from the store."""
    client = make_client(SESSION_CACHE_SECONDS="60")
    register(client)
    use_clock(clock)
    token = login(client)
    assert client.get("/profile", headers=bearer(token)).status_code == 200  # now cached
    clock.seconds = REAUTH_SECONDS + 1
    assert_problem(client.get("/sessions", headers=bearer(token)), 403, "reauthentication_required")
    new = reauth(client, token).json()["token"]
    assert client.get("/profile", headers=bearer(token)).status_code == 401  # this instance forgot the old one
    assert client.get("/sessions", headers=bearer(new)).status_code == 200


# --- POST /reauthenticate -----------------------------------------------------------------------------------


def test_reauthenticate_rotates_the_session(client: TestClient, clock: Ahead, emulator_host: str, project: str) -> None:
    register(client)
    use_clock(clock)
    token = login(client)
    before = profile_session(client, token)
    clock.seconds = 120
    headers = {**bearer(token), "User-Agent": "another agent"}
    reply = client.post("/reauthenticate", headers=headers, json={"password": PASSWORD})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    new = body["token"]
    assert new != token
    assert body["username"] == "alice" and body["token_type"] == "Bearer"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"__session={new};") and "HttpOnly" in cookie

    assert_problem(client.get("/profile", headers=bearer(token)), 401, "unauthenticated")
    after = profile_session(client, new)
    assert after["auth_time"] > before["auth_time"]
    assert after["auth_time"] == after["logged_in_at"] == body["logged_in_at"]  # fresh like a login
    assert emulator_get(emulator_host, project, f"sessions/{tokens.hash_token(new)}")["fields"]["user_agent"] == {
        "stringValue": "testclient"  # the old session's user agent, not the request's
    }
    listed = client.get("/sessions", headers=bearer(new)).json()["sessions"]
    assert [s["id"] for s in listed] == [tokens.public_id(tokens.hash_token(new))]


def test_reauthenticate_with_the_cookie_needs_an_allowed_origin(make_client: AppFactory) -> None:
    client = make_client(SESSION_ALLOWED_ORIGINS=ORIGIN)
    register(client)
    assert client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    assert_problem(client.post("/reauthenticate", json={"password": PASSWORD}), 403, "csrf_rejected")
    foreign = client.post("/reauthenticate", json={"password": PASSWORD}, headers={"Origin": "https://evil.example"})
    assert_problem(foreign, 403, "csrf_rejected")
    reply = client.post("/reauthenticate", json={"password": PASSWORD}, headers={"Origin": ORIGIN})
    assert reply.status_code == 200, reply.text
    assert client.cookies.get("__session") == reply.json()["token"]  # the jar now holds the new session
    assert client.get("/sessions").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "invalid_request"),
        ({"password": ""}, 400, "invalid_request"),
        ({"password": 12345678}, 400, "invalid_request"),
        ({"password": PASSWORD, "extra": 1}, 400, "invalid_request"),
        ({"password": "x" * 1025}, 400, "invalid_request"),
    ],
    ids=["missing", "empty", "number", "extra-field", "too-long"],
)
def test_bad_bodies(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    register(client)
    token = login(client)
    assert_problem(client.post("/reauthenticate", headers=bearer(token), json=body), status, code)
    assert client.get("/profile", headers=bearer(token)).status_code == 200


def test_reauthenticate_needs_a_session(client: TestClient) -> None:
    register(client)
    assert_problem(client.post("/reauthenticate", json={"password": PASSWORD}), 401, "unauthenticated")


def test_wrong_passwords_count_against_the_login_limit(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    register(client)
    token = login(client)
    # A client without alice's device cookie (curl, say): its guesses count on the username's counter. From a
    # trusted device they count on that device's own (tests/test_device_lockout.py, README "Lockout").
    client.cookies.clear()
    statuses = [reauth(client, token, f"guess {i}").status_code for i in range(8)]
    assert statuses == [403] * 5 + [429] * 3
    assert assert_problem(reauth(client, token, "guess 9"), 429, "too_many_attempts")
    right = reauth(client, token)  # past the limit, even the right password is refused
    assert_problem(right, 429, "too_many_attempts")
    assert int(right.headers["retry-after"]) >= 1
    assert client.get("/profile", headers=bearer(token)).status_code == 200  # the session itself stays valid
    assert client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 429


def test_a_wrong_password_is_403_and_the_session_lives(client: TestClient) -> None:
    register(client)
    token = login(client)
    assert_problem(reauth(client, token, "not my password"), 403, "wrong_current_password")
    assert client.get("/profile", headers=bearer(token)).status_code == 200


def test_a_right_password_gives_its_guess_back(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="3")
    register(client)
    token = login(client)
    for _ in range(6):  # more right reauthentications than the limit: none uses it up
        reply = reauth(client, token)
        assert reply.status_code == 200, reply.text
        token = reply.json()["token"]
    assert [reauth(client, token, f"guess {i}").status_code for i in range(3)] == [403] * 3


def test_what_a_reauthentication_costs(client: TestClient) -> None:
    register(client)
    token = login(client)
    service = main_module().api_instance.service

    async def reauthenticate(password: str) -> Any:
        ctx = await service.authenticate(token)
        return await service.reauthenticate(ctx, ReauthenticateRequest(password=password))

    ops, result = counted(client, lambda: reauthenticate("wrong password"))
    assert type(result).__name__ == "WrongCurrentPassword"
    # The session and user read (1 round trip, 2 reads), then the guess counted (1 write) while the user and
    # the account's ledger are read again, in one snapshot (2 reads).
    assert ops.as_dict() == {"round_trips": 2, "reads": 4, "writes": 1, "deletes": 0}
    ops, result = counted(client, lambda: reauthenticate(PASSWORD))
    assert result.token
    # The same two round trips, then one commit under the ledger's precondition: the new session and the
    # ledger (2 writes), the counter and the old session (2 deletes), and the `reauthenticated` event (1 write).
    assert ops.as_dict() == {"round_trips": 3, "reads": 4, "writes": 3 + 1, "deletes": 2}


# --- races ----------------------------------------------------------------------------------------------------

# Each race runs TRIALS times, one side started 0, 20, 40 ... ms later, so that both orders and the overlaps
# between them occur; a race whose claim is about both orders goes on (up to MAX_TRIALS) until it has seen
# both, and fails if it never does: a run that only ever saw one order proves nothing about the other.
TRIALS = 8
MAX_TRIALS = 3 * TRIALS


def _trials(outcomes: set[Any], both: set[Any]) -> Iterator[int]:
    """Trial numbers: TRIALS of them, then more while ``outcomes`` still lacks one of ``both``."""
    trial = 0
    while trial < TRIALS or (trial < MAX_TRIALS and not both <= outcomes):
        yield trial
        trial += 1


def _stored_sessions(emulator_host: str, project: str, username: str) -> list[dict[str, Any]]:
    listed = emulator_get(emulator_host, project, "sessions?pageSize=300").get("documents", [])
    return [d for d in listed if d["fields"]["username"]["stringValue"] == username]


@pytest.mark.slow
def test_a_burst_of_wrong_passwords_is_judged_at_most_max_failures_times(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    for trial in range(3):
        username = f"guess{trial}"
        register(client, username)
        token = login(client, username)
        guesses = [f"guess {i}" for i in range(19)]
        guesses.insert(trial * 7, PASSWORD)  # the right one somewhere in the burst
        replies = together([lambda g=g, t=token: reauth(client, t, g).status_code for g in guesses])  # type: ignore[misc]
        judged = [s for s in replies if s in (200, 403)]
        assert len(judged) <= 5, f"trial {trial}: {sorted(replies)}"
        assert set(replies) <= {200, 401, 403, 429}, replies


@pytest.mark.slow
def test_parallel_reauthentications_with_one_token_rotate_once(
    make_client: AppFactory, emulator_host: str, project: str
) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="50")
    for trial in range(TRIALS):
        username = f"twin{trial}"
        register(client, username)
        token = login(client, username)
        replies = together([lambda t=token: reauth(client, t) for _ in range(4)])  # type: ignore[misc]
        statuses = [r.status_code for r in replies]
        assert statuses.count(200) == 1, f"trial {trial}: {statuses}"
        assert set(statuses) == {200, 401}, statuses
        winner = replies[statuses.index(200)].json()["token"]
        minted = [token, *(r.json()["token"] for r in replies if r.status_code == 200)]
        assert live_tokens(client, minted) == [winner]
        stored = _stored_sessions(emulator_host, project, username)
        assert [d["name"].rsplit("/", 1)[1] for d in stored] == [tokens.hash_token(winner)]


@pytest.mark.slow
def test_a_reauthentication_racing_a_password_change_leaves_no_session_of_the_old_epoch(
    make_client: AppFactory, emulator_host: str, project: str
) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="50")
    outcomes: set[tuple[int, int]] = set()
    both = {(200, 200), (401, 200)}  # the reauthentication first (then voided), or the change first
    for trial in _trials(outcomes, both):
        username = f"race{trial}"
        register(client, username)
        stolen, owner = login(client, username), login(client, username)
        reauthed, changed = together(
            [
                lambda t=stolen, d=(trial % TRIALS) * 0.025: later(d, lambda: reauth(client, t)),  # type: ignore[misc]
                lambda t=owner: client.post(  # type: ignore[misc]
                    "/profile/password",
                    headers=bearer(t),
                    json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                ),
            ]
        )
        outcomes.add((reauthed.status_code, changed.status_code))
        assert changed.status_code == 200, changed.text
        assert reauthed.status_code in (200, 401), reauthed.text
        minted = [stolen, owner, changed.json()["token"]]
        if reauthed.status_code == 200:
            minted.append(reauthed.json()["token"])
        assert live_tokens(client, minted) == [changed.json()["token"]], f"trial {trial}"
        # In the store too: whatever is left besides the new session is of an older epoch (void).
        epoch = int(_user_doc(emulator_host, project, username)["fields"]["auth_epoch"]["integerValue"])
        current = [
            d["name"].rsplit("/", 1)[1]
            for d in _stored_sessions(emulator_host, project, username)
            if int(d["fields"].get("auth_epoch", {}).get("integerValue", 0)) >= epoch
        ]
        assert current == [tokens.hash_token(changed.json()["token"])], f"trial {trial}"
    print("outcomes (reauthenticate, password change):", sorted(outcomes))
    assert outcomes == both, f"not both orders in {trial + 1} trials: {sorted(outcomes)}"


@pytest.mark.slow
def test_a_reauthentication_racing_a_revoke_all_leaves_only_the_revoker(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="50")
    outcomes: set[int] = set()
    both = {200, 401}  # the rotation first (its new session then revoked), or the revoke-all first
    for trial in _trials(outcomes, both):
        username = f"rall{trial}"
        register(client, username)
        stolen, owner = login(client, username), login(client, username)
        stagger = (trial % TRIALS) * 0.02
        reauthed, revoked = together(
            [
                lambda t=stolen: reauth(client, t),  # type: ignore[misc]
                lambda t=owner, d=stagger: later(d, lambda: client.delete("/sessions", headers=bearer(t))),  # type: ignore[misc]
            ]
        )
        assert revoked.status_code == 204, revoked.text
        assert reauthed.status_code in (200, 401), reauthed.text
        minted = [stolen, owner] + ([reauthed.json()["token"]] if reauthed.status_code == 200 else [])
        assert live_tokens(client, minted) == [owner], f"trial {trial}"
        outcomes.add(reauthed.status_code)
    print("outcomes (reauthenticate):", sorted(outcomes))
    assert outcomes == both, f"not both orders in {trial + 1} trials: {sorted(outcomes)}"


def _user_doc(emulator_host: str, project: str, username: str) -> dict[str, Any]:
    return emulator_get(emulator_host, project, f"users/{username}")
