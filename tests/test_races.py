"""Security rules under real concurrency (issue 10), against the real emulator.

Each test releases real threads together with a barrier against one app built by
functions-framework, and repeats the race over many trials: a rule that holds one
request at a time but not under a burst fails here. The trial counts are set so that
a race that the old code lost in one trial out of thirty would still be caught.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import AppFactory, bearer, login, register, together
from tests.support import PASSWORD, admin, login_attempt, race_logins_against, still_working

NEW_PASSWORD = "a brand new passphrase"

pytestmark = pytest.mark.slow


def _rate(caught: list[int]) -> str:
    """How many trials caught the race, and how many sessions survived in all."""
    return f"{sum(1 for c in caught if c)} of {len(caught)} trials, {sum(caught)} session(s)"


# --- 1. a login in flight must not outlive the change that should have ended it -------------------

TRIALS = 12


def test_login_in_flight_does_not_survive_a_password_change(make_client: AppFactory) -> None:
    client = make_client()
    caught: list[int] = []
    for trial in range(TRIALS):
        username = f"pw{trial}"
        register(client, username)
        owner = login(client, username)

        def change(owner: str = owner) -> None:
            response = client.post(
                "/profile/password",
                headers=bearer(owner),
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            )
            assert response.status_code == 200, response.text

        stolen = race_logins_against(client, username, change)
        caught.append(len(still_working(client, stolen)))
    assert sum(caught) == 0, f"sessions opened with the old password outlived the change: {_rate(caught)}"


def test_login_in_flight_does_not_survive_disable_then_enable(make_client: AppFactory) -> None:
    client = make_client()
    caught: list[int] = []
    for trial in range(TRIALS):
        username = f"dis{trial}"
        register(client, username)

        def disable(username: str = username) -> None:
            client.portal.call(admin().set_disabled, username, True)  # type: ignore[union-attr]

        stolen = race_logins_against(client, username, disable)
        client.portal.call(admin().set_disabled, username, False)  # type: ignore[union-attr]
        caught.append(len(still_working(client, stolen)))
    assert sum(caught) == 0, f"sessions opened before the disable work again after enable: {_rate(caught)}"


def test_login_in_flight_does_not_survive_revoke_all(make_client: AppFactory) -> None:
    # A cap so high the storm of logins cannot reach it: at the default (20), the owner's session, the least
    # recently used, would rightly be ended to make room, and the last assertion would fail for that reason.
    client = make_client(SESSION_MAX_PER_USER="1000")
    caught: list[int] = []
    for trial in range(TRIALS):
        username = f"rev{trial}"
        register(client, username)
        owner = login(client, username)

        def revoke_all(owner: str = owner) -> None:
            assert client.delete("/sessions", headers=bearer(owner)).status_code == 204

        # The password stays the same: a login that reads the user after revoke-all took effect is a new,
        # legitimate one. A login sent before revoke-all was in flight when it began: it must not survive.
        stolen = race_logins_against(client, username, revoke_all, in_flight_of="revoke_all")
        caught.append(len(still_working(client, stolen)))
        # "all but the current one": the caller's own session stays.
        assert client.get("/profile", headers=bearer(owner)).status_code == 200
    assert sum(caught) == 0, f"sessions opened in flight outlived revoke-all: {_rate(caught)}"


STORM = 12


def test_a_storm_of_logins_cannot_starve_the_owners_revocations(make_client: AppFactory) -> None:
    # Someone holding the password logs in as fast as STORM threads can while the owner ends every other
    # session and the trust of a device, and an admin then disables the account. Each of those commits takes
    # its turn on the account's ledger with the logins: the owner's answers must be 204, never a 503 for
    # having lost too many turns, and the admin's disable must not give up either.
    client = make_client(SESSION_MAX_PER_USER="1000")
    for trial in range(TRIALS // 2):
        username = f"storm{trial}"
        register(client, username)
        owner = login(client, username)
        other = TestClient(client.app, base_url=str(client.base_url))
        devices: list[str] = []

        def revocations(
            owner: str = owner, other: TestClient = other, username: str = username, devices: list[str] = devices
        ) -> None:
            assert client.delete("/sessions", headers=bearer(owner)).status_code == 204
            # A second browser made trusted by its login: its trust is then ended by the owner.
            assert other.post("/login", json={"username": username, "password": PASSWORD}).status_code == 200
            listed = client.get("/devices", headers=bearer(owner))
            assert listed.status_code == 200, listed.text
            devices.extend(d["id"] for d in listed.json()["devices"])
            for device in devices:
                response = client.delete(f"/devices/{device}", headers=bearer(owner))
                assert response.status_code in (204, 404), response.text  # 404: ended meanwhile
            assert client.delete("/sessions", headers=bearer(owner)).status_code == 204
            # Last, an admin's disable: its ledger reset takes its turn too (a VersionConflict if starved).
            client.portal.call(admin().set_disabled, username, True)  # type: ignore[union-attr]

        race_logins_against(client, username, revocations, attackers=STORM)
        assert devices, "the second browser was not listed as a trusted device"
        assert login_attempt(client, username, PASSWORD)[0] == 403  # the disable took effect


# --- 2. the lockout counts a guess before it judges it ---------------------------------------------

BURST = 40
BURST_TRIALS = 5


def test_a_burst_of_guesses_is_judged_at_most_max_failures_times(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    for trial in range(BURST_TRIALS):
        username = f"burst{trial}"
        register(client, username)
        passwords = [f"wrong guess {i}" for i in range(BURST - 1)]
        passwords.insert(trial * 7 % BURST, PASSWORD)  # the right one somewhere in the burst
        attempts = [
            (lambda p=p, u=username: login_attempt(client, u, p)[0])
            for p in passwords  # type: ignore[misc]
        ]
        statuses = together(attempts)
        judged = [s for s in statuses if s in (200, 401)]
        assert len(judged) <= 5, f"trial {trial}: {len(judged)} guesses judged: {sorted(statuses)}"
        assert set(statuses) <= {200, 401, 429}, statuses
        assert statuses.count(429) == BURST - len(judged)


def test_refused_guesses_carry_retry_after(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="3", SESSION_LOGIN_WINDOW_SECONDS="600")
    register(client)
    responses = _burst_responses(client, ["alice"] * 12, "wrong password")
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) >= 9
    for r in refused:
        assert r.json()["code"] == "too_many_attempts"
        assert 1 <= int(r.headers["retry-after"]) <= 600


def _burst_responses(client: TestClient, usernames: list[str], password: str) -> list[Any]:
    start = threading.Barrier(len(usernames))

    def run(username: str) -> Any:
        start.wait()
        return client.post("/login", json={"username": username, "password": password})

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(usernames)) as pool:
        return list(pool.map(run, usernames))


def test_unknown_usernames_get_the_same_burst_answers(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    register(client)
    known = sorted(r.status_code for r in _burst_responses(client, ["alice"] * 20, "wrong password"))
    unknown = sorted(r.status_code for r in _burst_responses(client, ["nobody"] * 20, "wrong password"))
    assert known == unknown == [401] * 5 + [429] * 15


# --- 3. the current password of a password change is a guess too ------------------------------------


def _change(client: TestClient, token: str, current: str) -> Any:
    return client.post(
        "/profile/password",
        headers=bearer(token),
        json={"current_password": current, "new_password": NEW_PASSWORD},
    )


def test_wrong_current_passwords_count_against_the_login_limit(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    register(client)
    stolen = login(client)
    # A thief with the token alone, not the owner's browser: its device cookie would be judged on its own
    # counter (tests/test_device_lockout.py, README "Lockout").
    client.cookies.clear()
    statuses = [_change(client, stolen, f"guess {i}").status_code for i in range(12)]
    assert statuses == [403] * 5 + [429] * 7
    right = _change(client, stolen, PASSWORD)  # past the limit, even the right password is refused
    assert right.status_code == 429 and right.json()["code"] == "too_many_attempts"
    assert int(right.headers["retry-after"]) >= 1
    # The owner's password still works where it did: the takeover did not happen.
    assert login_attempt(client, "alice", PASSWORD)[0] == 429  # ... and the username is locked for logins too


def test_a_burst_of_current_password_guesses_is_judged_at_most_max_failures_times(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    for trial in range(3):
        username = f"chg{trial}"
        register(client, username)
        stolen = login(client, username)
        guesses = [f"guess {i}" for i in range(19)]
        guesses.insert(trial * 5, PASSWORD)
        statuses = together([(lambda g=g, t=stolen: _change(client, t, g).status_code) for g in guesses])  # type: ignore[misc]
        judged = [s for s in statuses if s in (200, 403)]
        assert len(judged) <= 5, f"trial {trial}: {sorted(statuses)}"
        assert set(statuses) <= {200, 401, 403, 429}, statuses


# --- 4. the same shape elsewhere ------------------------------------------------------------------------


def test_parallel_password_changes_with_one_session_apply_once(make_client: AppFactory) -> None:
    """Two changes made with one (stolen) session: the first ends that session, so the second must not apply."""
    client = make_client(SESSION_LOGIN_MAX_FAILURES="50")
    for trial in range(6):
        username = f"two{trial}"
        register(client, username)
        token = login(client, username)
        new = [f"new passphrase {trial} {i}" for i in range(4)]
        statuses = together(
            [
                (
                    lambda n=n, t=token: (
                        client.post(  # type: ignore[misc]
                            "/profile/password",
                            headers=bearer(t),
                            json={"current_password": PASSWORD, "new_password": n},
                        ).status_code
                    )
                )
                for n in new
            ],
        )
        assert statuses.count(200) == 1, statuses
        assert set(statuses) <= {200, 401}, statuses
        winner = new[statuses.index(200)]
        assert {p: login_attempt(client, username, p)[0] for p in new} == {p: 200 if p == winner else 401 for p in new}
