"""Trust that ends when it should (issue 19), against the real emulator.

1. A device cookie is trusted only under the credentials it was minted with: a password change, an
   admin's new password, revoke-all, a disable and revoke-everyone end every earlier device's trust in
   the commit that changes the credentials; the browser that made the change keeps (re-stamps) its own.
   At most ``SESSION_MAX_DEVICES_PER_USER`` devices are trusted, even under parallel logins.
2. A signed-in user's password proof cannot be starved by a storm of profile writes.
3. The counter holds guesses judged wrong plus guesses in flight: right passwords never use it up.
4. ``users delete`` racing logins leaves nothing below the user.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from session import tokens
from tests.conftest import AppFactory, bearer, main_module, register, together

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
DEVICE = "__Host-session-device"


def _login(client: TestClient, password: str = PASSWORD, username: str = "alice") -> Any:
    return client.post("/login", json={"username": username, "password": password})


def _status(client: TestClient, password: str = PASSWORD) -> int:
    return int(_login(client, password).status_code)


def _lock(client: TestClient, limit: int = 5) -> None:
    """Lock the username from a client without a device cookie: the limit's wrong guesses, then 429."""
    statuses = [_status(client, f"wrong guess {i}") for i in range(limit + 1)]
    assert statuses == [401] * limit + [429], statuses


def _firestore(project: str) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=project)


def _devices(project: str, username: str = "alice") -> list[dict[str, Any]]:
    docs = _firestore(project).collection("users").document(username).collection("devices").stream()
    return [d.to_dict() for d in docs]


def _epoch(project: str, username: str = "alice") -> int:
    data = _firestore(project).collection("users").document(username).get().to_dict()
    return int(data["auth_epoch"])


def _trusted_devices(project: str, username: str = "alice") -> int:
    """Device documents that a login would trust now: the user's current epoch, not expired."""
    epoch = _epoch(project, username)
    return sum(1 for d in _devices(project, username) if d.get("auth_epoch") == epoch)


# --- 1. device trust ends with the credentials --------------------------------------------------------


def _change_password(client: TestClient, token: str) -> Any:
    return client.post(
        "/profile/password",
        headers=bearer(token),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )


def test_a_device_minted_before_a_password_change_buys_no_judged_guess(make_client: AppFactory) -> None:
    old = make_client()  # a browser that once knew the password (a phished one): it keeps its device cookie
    register(old)
    assert _status(old) == 200
    owner = make_client()
    token = _login(owner).json()["token"]
    owner.cookies.clear()  # the owner changes the password from a browser without a device cookie
    assert _change_password(owner, token).status_code == 200

    attacker = make_client()  # cookie-less
    _lock(attacker)
    # The old device cookie is no longer trusted: its guesses land on the locked username's counter.
    assert _status(old, "another guess") == 429
    assert _status(old, NEW_PASSWORD) == 429
    assert _status(attacker, NEW_PASSWORD) == 429


@pytest.mark.parametrize("change", ["revoke_all", "set_password", "disable", "revoke_everyone"])
def test_every_credential_change_ends_the_trust_of_earlier_devices(make_client: AppFactory, change: str) -> None:
    old = make_client()
    register(old)
    token = _login(old).json()["token"]
    if change == "revoke_all":
        other = make_client()
        fresh = _login(other).json()["token"]
        other.cookies.clear()
        assert other.delete("/sessions", headers=bearer(fresh)).status_code == 204
        password = PASSWORD
    else:
        from session.admin import AdminService

        admin = AdminService(main_module().api_instance.service)
        portal = old.portal
        assert portal is not None
        if change == "set_password":
            portal.call(admin.set_password, "alice", NEW_PASSWORD)
            password = NEW_PASSWORD
        elif change == "disable":
            portal.call(admin.set_disabled, "alice", True)
            portal.call(admin.set_disabled, "alice", False)
            password = PASSWORD
        else:
            portal.call(admin.revoke_everyone)
            password = PASSWORD
    assert old.get("/profile", headers=bearer(token)).status_code == 401
    attacker = make_client()
    _lock(attacker)
    assert _status(old, password) == 429  # the old device buys nothing


def test_the_browser_that_changes_the_password_keeps_its_trust(make_client: AppFactory) -> None:
    owner = make_client()
    register(owner)
    token = _login(owner).json()["token"]  # the owner's browser holds its device cookie
    changed = _change_password(owner, token)
    assert changed.status_code == 200, changed.text
    attacker = make_client()
    _lock(attacker)
    assert _status(owner, NEW_PASSWORD) == 200  # its device was re-stamped in the change's commit


def test_the_browser_that_revokes_everything_keeps_its_trust(make_client: AppFactory) -> None:
    owner = make_client()
    register(owner)
    token = _login(owner).json()["token"]
    assert owner.delete("/sessions", headers=bearer(token)).status_code == 204
    attacker = make_client()
    _lock(attacker)
    assert _status(owner) == 200


def test_the_browser_that_reauthenticates_after_a_new_password_is_trusted_again(make_client: AppFactory) -> None:
    laptop = make_client()
    register(laptop)
    assert _status(laptop) == 200  # the laptop's device, minted under the old password
    phone = make_client()
    token = _login(phone).json()["token"]
    phone.cookies.clear()
    new_token = _change_password(phone, token).json()["token"]  # from the phone, which has no device cookie
    # The laptop signs in with the new password (a new session) and re-authenticates: trusted again.
    laptop_token = _login(laptop, NEW_PASSWORD).json()["token"]
    renewed = laptop.post("/reauthenticate", headers=bearer(laptop_token), json={"password": NEW_PASSWORD})
    assert renewed.status_code == 200, renewed.text
    assert new_token
    attacker = make_client()
    _lock(attacker)
    assert _status(laptop, NEW_PASSWORD) == 200


def test_at_most_the_limit_of_devices_is_trusted_and_the_least_recently_used_goes(
    make_client: AppFactory, project: str
) -> None:
    first = make_client(SESSION_MAX_DEVICES_PER_USER="3")
    register(first)
    assert _status(first) == 200  # device 1 (the one kept in use)
    for _ in range(5):
        browser = make_client(SESSION_MAX_DEVICES_PER_USER="3")
        assert _status(browser) == 200
        assert _status(first) == 200  # device 1 is used again: the least recently used is another
    assert _trusted_devices(project) == 3
    attacker = make_client(SESSION_MAX_DEVICES_PER_USER="3")
    _lock(attacker)
    assert _status(first) == 200  # the device in use survived every eviction


def test_the_device_bound_holds_under_parallel_logins_over_two_instances(make_client: AppFactory, project: str) -> None:
    # A limit above the burst: every login is judged (16 right passwords in flight at once).
    one = make_client(SESSION_MAX_DEVICES_PER_USER="4", SESSION_LOGIN_MAX_FAILURES="100")
    two = make_client(SESSION_MAX_DEVICES_PER_USER="4", SESSION_LOGIN_MAX_FAILURES="100")
    register(one)
    for _ in range(3):

        def fresh_login(instance: TestClient) -> int:
            # Each login is a new browser: no device cookie (TestClient cookies are per client, so send none).
            response = instance.post("/login", json={"username": "alice", "password": PASSWORD}, headers={"cookie": ""})
            return int(response.status_code)

        one.cookies.clear()
        two.cookies.clear()
        statuses = together([lambda i=i: fresh_login(one if i % 2 else two) for i in range(16)])
        assert statuses == [200] * 16, Counter(statuses)
        assert _trusted_devices(project) <= 4


# --- 2. a proof of the password under a storm of profile writes ----------------------------------------


def test_a_password_change_goes_through_a_storm_of_profile_writes(live_server: str) -> None:
    """A thief with the token alone loops PATCH /profile from 32 keep-alive connections; the owner changes the
    password with the right current password: it succeeds, with at most one 503 on the way, never a 429."""
    with httpx.Client(base_url=live_server, timeout=30) as owner:
        assert owner.post("/register", json={"username": "alice", "password": PASSWORD}).status_code == 201
        stolen = owner.post("/login", json={"username": "alice", "password": PASSWORD}).json()["token"]
        mine = owner.post("/login", json={"username": "alice", "password": PASSWORD}).json()["token"]
        stop = threading.Event()
        patches: Counter[int] = Counter()

        def storm(i: int) -> None:
            with httpx.Client(base_url=live_server, timeout=30) as thief:
                n = 0
                while not stop.is_set():
                    n += 1
                    r = thief.patch("/profile", headers=bearer(stolen), json={"display_name": f"thief {i} {n}"})
                    patches[r.status_code] += 1

        threads = [threading.Thread(target=storm, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # the storm is under way
            answers: list[int] = []
            current, token = PASSWORD, mine
            for new in (NEW_PASSWORD, "a third passphrase", "a fourth passphrase"):  # three changes in the storm
                tries = []
                for _ in range(3):
                    r = owner.post(
                        "/profile/password",
                        headers=bearer(token),
                        json={"current_password": current, "new_password": new},
                    )
                    tries.append(r.status_code)
                    if r.status_code != 503:
                        break
                answers += tries
                assert tries[-1] == 200 and tries.count(503) <= 1, (answers, patches)
                current, token = new, r.json()["token"]
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert patches[200] > 0, patches  # the storm was real
        assert 429 not in answers
        # The thief's session ended with the change; the newest password works.
        assert owner.get("/profile", headers=bearer(stolen)).status_code == 401
        assert owner.post("/login", json={"username": "alice", "password": current}).status_code == 200


def test_a_reauthentication_goes_through_a_storm_of_profile_writes(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as owner:
        assert owner.post("/register", json={"username": "alice", "password": PASSWORD}).status_code == 201
        stolen = owner.post("/login", json={"username": "alice", "password": PASSWORD}).json()["token"]
        mine = owner.post("/login", json={"username": "alice", "password": PASSWORD}).json()["token"]
        stop = threading.Event()

        def storm(i: int) -> None:
            with httpx.Client(base_url=live_server, timeout=30) as thief:
                while not stop.is_set():
                    thief.patch("/profile", headers=bearer(stolen), json={"display_name": f"thief {i}"})

        threads = [threading.Thread(target=storm, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            answers = []
            for _ in range(6):
                r = owner.post("/reauthenticate", headers=bearer(mine), json={"password": PASSWORD})
                answers.append(r.status_code)
                if r.status_code == 200:
                    mine = r.json()["token"]
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert answers.count(200) >= 5 and 429 not in answers, answers


# --- 3. the counting rule ------------------------------------------------------------------------------


def _counter(project: str, username: str = "alice") -> int:
    doc = _firestore(project).collection("login_attempts").document(tokens.counter_key(username)).get()
    return int(doc.to_dict()["count"]) if doc.exists else 0


def test_a_burst_of_right_passwords_gives_back_every_guess(make_client: AppFactory, project: str) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    register(client)

    def right() -> int:
        return int(
            client.post("/login", json={"username": "alice", "password": PASSWORD}, headers={"cookie": ""}).status_code
        )

    for _ in range(3):
        client.cookies.clear()
        statuses = together([right for _ in range(12)])
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 5, statuses
        assert _counter(project) == 0  # refused guesses were given back, successes cleared theirs
        client.cookies.clear()
        assert right() == 200  # the next right login is not refused


def test_right_passwords_from_overlapping_clients_never_meet_429(make_client: AppFactory, project: str) -> None:
    clients = [make_client(SESSION_LOGIN_MAX_FAILURES="5") for _ in range(4)]
    register(clients[0])

    def loop(client: TestClient) -> list[int]:
        out = []
        for _ in range(12):
            client.cookies.clear()
            out.append(int(_login(client).status_code))
        return out

    results = together([lambda c=c: loop(c) for c in clients])
    assert all(s == 200 for statuses in results for s in statuses), results
    assert _counter(project) == 0


def test_a_wrong_burst_is_still_judged_at_most_the_limit(make_client: AppFactory, project: str) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    register(client)
    statuses = together(
        [
            lambda i=i: int(client.post("/login", json={"username": "alice", "password": f"w{i}"}).status_code)
            for i in range(40)
        ]
    )
    assert statuses.count(401) <= 5 and statuses.count(401) + statuses.count(429) == 40, Counter(statuses)
    assert _counter(project) == statuses.count(401)  # the refused ones were given back
    assert _status(client) == 429  # still locked for the window


def test_a_login_that_loses_a_race_gives_its_guess_back(make_client: AppFactory, project: str) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    register(client)
    owner = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    for _ in range(6):
        token = _login(owner).json()["token"]
        owner.cookies.clear()

        def revoke(token: str = token) -> int:
            return int(owner.delete("/sessions", headers=bearer(token), params={"include_current": "true"}).status_code)

        def right() -> int:
            client.cookies.clear()
            return int(_login(client).status_code)

        together([revoke, right, right])
        assert _counter(project) == 0


# --- 4. users delete racing logins -----------------------------------------------------------------


def test_users_delete_racing_logins_leaves_nothing_below_the_user(make_client: AppFactory, project: str) -> None:
    from session.admin import AdminService

    db = _firestore(project)
    for trial in range(10):
        name = f"victim{trial}"
        client = make_client()
        register(client, name)
        admin = AdminService(main_module().api_instance.service)
        portal = client.portal
        assert portal is not None

        def login_once(client: TestClient = client, name: str = name) -> int:
            return int(
                client.post("/login", json={"username": name, "password": PASSWORD}, headers={"cookie": ""}).status_code
            )

        def delete(portal: Any = portal, admin: AdminService = admin, name: str = name, trial: int = trial) -> Any:
            time.sleep(0.002 * trial)
            return portal.call(admin.delete_user, name)

        together([login_once, login_once, login_once, delete])
        time.sleep(0.2)  # any login still in flight has answered by now (together waited for every thread)
        left = [f"{c.id}/{d.id}" for c in db.collection("users").document(name).collections() for d in c.stream()]
        assert left == [], (trial, left)
        assert not db.collection("users").document(name).get().exists
