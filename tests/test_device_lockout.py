"""Lockout that an attacker cannot turn against the owner (issue 14, part 3), against the real emulator.

A successful login sets a device cookie; a login that presents it for its own user is counted and
judged on that device's counter alone. Anyone else (no cookie, another user's, an unknown or an
expired one) shares the username's counter. An optional per-address limit counts failed logins
across usernames, from a proxy's header only when configured. Each counter is counted before
its guess is judged, so bursts are raced with a barrier over several trials.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from session import credentials, tokens
from session.config import load_settings
from tests.conftest import AppFactory, emulator_get, register, together
from tests.support import FakeClock, use_clock

PASSWORD = "correct horse battery"
DEVICE = "__Host-session-device"
BURST = 40
TRIALS = 5


def _login(client: TestClient, username: str, password: str, **headers: str) -> Any:
    return client.post("/login", json={"username": username, "password": password}, headers=headers)


def _status(client: TestClient, username: str, password: str, **headers: str) -> int:
    return int(_login(client, username, password, **headers).status_code)


def _device_cookie(response: Any, name: str = DEVICE) -> str:
    """The value of the device cookie a response sets."""
    (cookie,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    return str(cookie.split(";")[0].partition("=")[2])


# --- the acceptance test of the issue ---------------------------------------------------------------


def test_an_attacker_locks_the_username_but_the_owners_browser_still_logs_in(make_client: AppFactory) -> None:
    owner = make_client(SESSION_LOGIN_MAX_FAILURES="5")  # the owner's browser
    register(owner)
    assert _status(owner, "alice", PASSWORD) == 200  # an earlier visit: the browser keeps its device cookie
    attacker = make_client(SESSION_LOGIN_MAX_FAILURES="5")  # another browser, without the cookie

    assert [_status(attacker, "alice", f"guess {i}") for i in range(8)] == [401] * 5 + [429] * 3
    assert _status(attacker, "alice", PASSWORD) == 429  # the username is locked, even for the right password

    assert _status(owner, "alice", PASSWORD) == 200  # the owner's browser still logs in
    assert owner.get("/profile").status_code == 200
    assert _status(attacker, "alice", PASSWORD) == 429  # and the attacker still gets 429
    assert _status(attacker, "alice", "guess 9") == 429


def test_a_locked_username_does_not_keep_the_owner_from_proving_the_password(make_client: AppFactory) -> None:
    owner = make_client(SESSION_LOGIN_MAX_FAILURES="5")  # the owner's browser
    register(owner)
    token = _login(owner, "alice", PASSWORD).json()["token"]  # the browser keeps its device cookie
    laptop = make_client(SESSION_LOGIN_MAX_FAILURES="5")  # a second session of the owner's, then no cookies
    other = _login(laptop, "alice", PASSWORD).json()["token"]
    laptop.cookies.clear()
    attacker = make_client(SESSION_LOGIN_MAX_FAILURES="5")
    assert [_status(attacker, "alice", f"guess {i}") for i in range(6)] == [401] * 5 + [429]

    # Without the device cookie the proof of a password counts on the locked username: refused unjudged.
    refused = laptop.post("/reauthenticate", headers={"Authorization": f"Bearer {other}"}, json={"password": PASSWORD})
    assert refused.status_code == 429
    # With it, re-authentication and a password change are judged on the device's own counter.
    renewed = owner.post("/reauthenticate", headers={"Authorization": f"Bearer {token}"}, json={"password": PASSWORD})
    assert renewed.status_code == 200, renewed.text
    changed = owner.post(
        "/profile/password",
        headers={"Authorization": f"Bearer {renewed.json()['token']}"},
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
    )
    assert changed.status_code == 200, changed.text
    assert _status(attacker, "alice", "a brand new passphrase") == 429  # the attacker is still locked out


# --- the device cookie itself ----------------------------------------------------------------------------


def test_the_device_cookie_is_host_prefixed_httponly_strict_and_long_lived(client: TestClient) -> None:
    register(client)
    response = _login(client, "alice", PASSWORD)
    (cookie,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{DEVICE}=")]
    attributes = [part.strip() for part in cookie.split(";")]
    named = {a.split("=")[0].lower(): a.partition("=")[2] for a in attributes[1:]}
    # __Host-: Secure, Path=/ and no Domain, or a browser refuses it.
    assert set(named) == {"httponly", "secure", "samesite", "path", "max-age"}
    assert named["samesite"].lower() == "strict" and named["path"] == "/"
    assert int(named["max-age"]) == 90 * 86400  # SESSION_DEVICE_COOKIE_DAYS
    token = _device_cookie(response)
    assert tokens.parse_device(token) is not None and token != response.json()["token"]


def test_without_secure_cookies_the_device_cookie_has_a_plain_name(make_client: AppFactory) -> None:
    client = make_client(SESSION_COOKIE_SECURE="false", SESSION_DEVICE_COOKIE_DAYS="30")
    register(client)
    response = _login(client, "alice", PASSWORD)
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("session-device="))
    assert "Secure" not in cookie and "Max-Age=2592000" in cookie
    assert not any(c.startswith("__Host-") for c in response.headers.get_list("set-cookie"))
    # ... and it works the same: the owner's browser gets past a locked username.
    attacker = make_client(SESSION_COOKIE_SECURE="false")
    assert [_status(attacker, "alice", "x") for _ in range(6)] == [401] * 5 + [429]
    assert _status(client, "alice", PASSWORD) == 200


def test_the_device_is_stored_by_hash_under_its_user_and_renewed_once_half_its_lifetime_is_gone(
    make_client: AppFactory, emulator_host: str, project: str
) -> None:
    client = make_client(SESSION_DEVICE_COOKIE_DAYS="10")
    register(client)
    clock = use_clock(FakeClock())
    first = _login(client, "alice", PASSWORD)
    token = _device_cookie(first)
    doc = emulator_get(emulator_host, project, f"users/alice/devices/{tokens.device_hash(token)}")["fields"]
    assert set(doc) == {"user_id", "created_at", "expires_at", "auth_epoch", "device"}  # never the token itself
    assert doc["user_id"]["stringValue"] == first.json()["user_id"]
    assert "timestampValue" in doc["expires_at"]  # a Timestamp: the TTL policy can delete it
    created = doc["created_at"]["timestampValue"]

    first_expiry = doc["expires_at"]["timestampValue"]

    # A day later more than half the lifetime is left: the login does not write the device (issue 26), and the
    # cookie is re-sent for what its document has left, so the two end together.
    clock.advance(86400)
    again = _login(client, "alice", PASSWORD)  # the browser presents its cookie
    assert _device_cookie(again) == token
    kept = emulator_get(emulator_host, project, f"users/alice/devices/{tokens.device_hash(token)}")["fields"]
    assert kept["expires_at"]["timestampValue"] == first_expiry
    assert _max_age(again) == 9 * 86400

    # Past half its lifetime: renewed for the whole lifetime again, and so is the cookie.
    clock.advance(4 * 86400 + 1)
    again = _login(client, "alice", PASSWORD)
    assert _device_cookie(again) == token
    renewed = emulator_get(emulator_host, project, f"users/alice/devices/{tokens.device_hash(token)}")["fields"]
    assert renewed["created_at"]["timestampValue"] == created
    expires = datetime.fromisoformat(renewed["expires_at"]["timestampValue"].replace("Z", "+00:00"))
    assert abs(expires - (clock.now + timedelta(days=10))) < timedelta(seconds=5)
    assert _max_age(again) == 10 * 86400


def _max_age(response: Any) -> int:
    (cookie,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{DEVICE}=")]
    return int(cookie.split("Max-Age=")[1].split(";")[0])


def test_another_users_login_from_the_same_browser_replaces_the_cookie(make_client: AppFactory) -> None:
    browser = make_client(SESSION_LOGIN_MAX_FAILURES="2")
    register(browser, "alice")
    register(browser, "bobby")
    alices = _device_cookie(_login(browser, "alice", PASSWORD))
    bobs = _device_cookie(_login(browser, "bobby", PASSWORD))
    assert alices != bobs and tokens.parse_device(bobs).username == "bobby"  # type: ignore[union-attr]
    assert browser.cookies.get(DEVICE) == bobs
    # So alice's guesses from this browser now share her username's counter.
    other = make_client(SESSION_LOGIN_MAX_FAILURES="2")
    assert [_status(browser, "alice", "x") for _ in range(3)] == [401, 401, 429]
    assert _status(other, "alice", PASSWORD) == 429


# --- which counter judges a guess ---------------------------------------------------------------------


def test_a_trusted_device_has_its_own_limit_and_leaves_the_shared_one_alone(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    owner = make_client(SESSION_LOGIN_MAX_FAILURES="3", SESSION_DEVICE_MAX_FAILURES="2")
    register(owner)
    assert _status(owner, "alice", PASSWORD) == 200
    responses = [_login(owner, "alice", "typo") for _ in range(3)]
    assert [r.status_code for r in responses] == [401, 401, 429]
    assert responses[2].json()["code"] == "too_many_attempts"
    assert 1 <= int(responses[2].headers["retry-after"]) <= 900
    assert _status(owner, "alice", PASSWORD) == 429  # this device is locked, right password or not ...
    locked = [r.json_fields for r in caplog.records if r.getMessage() == "login_locked_out"]  # type: ignore[attr-defined]
    assert locked and {f["counter"] for f in locked} == {"device"}
    other = make_client(SESSION_LOGIN_MAX_FAILURES="3")
    assert _status(other, "alice", PASSWORD) == 200  # ... but the shared counter never saw its guesses


def test_a_cookie_of_another_user_counts_on_the_shared_counter(make_client: AppFactory) -> None:
    browser = make_client(SESSION_LOGIN_MAX_FAILURES="3")
    register(browser, "alice")
    register(browser, "bobby")
    assert _status(browser, "alice", PASSWORD) == 200  # alice's device cookie
    assert [_status(browser, "bobby", "x") for _ in range(4)] == [401, 401, 401, 429]
    assert _status(make_client(SESSION_LOGIN_MAX_FAILURES="3"), "bobby", PASSWORD) == 429  # bobby's shared counter
    assert _status(browser, "alice", PASSWORD) == 200  # alice's device was not touched


@pytest.mark.parametrize(
    "cookie",
    [
        tokens.mint("alice"),  # well-formed, naming alice, never issued
        "not a token",
        "x" * 300,
    ],
    ids=["unknown", "malformed", "too long"],
)
def test_a_forged_or_unknown_cookie_counts_on_the_shared_counter(make_client: AppFactory, cookie: str) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="3")
    register(client)
    forged = {"Cookie": f"{DEVICE}={cookie}"}
    assert [_status(client, "alice", "x", **forged) for _ in range(4)] == [401, 401, 401, 429]
    client.cookies.clear()
    assert _status(client, "alice", PASSWORD) == 429  # the shared counter took the guesses


def test_an_expired_device_counts_on_the_shared_counter(make_client: AppFactory) -> None:
    owner = make_client(SESSION_LOGIN_MAX_FAILURES="2", SESSION_DEVICE_COOKIE_DAYS="1")
    register(owner)
    clock = use_clock(FakeClock())
    assert _status(owner, "alice", PASSWORD) == 200
    clock.advance(86400 + 1)  # the device's expires_at has passed (TTL may not have deleted it yet)
    attacker = make_client(SESSION_LOGIN_MAX_FAILURES="2")
    use_clock(clock)
    assert [_status(attacker, "alice", "x") for _ in range(3)] == [401, 401, 429]
    assert _status(owner, "alice", PASSWORD) == 429


def test_a_right_password_from_a_trusted_device_gives_its_guess_back(
    make_client: AppFactory, emulator_host: str, project: str
) -> None:
    owner = make_client(SESSION_DEVICE_MAX_FAILURES="3")
    register(owner)
    token = _device_cookie(_login(owner, "alice", PASSWORD))
    assert [_status(owner, "alice", "typo") for _ in range(2)] == [401, 401]
    assert _status(owner, "alice", PASSWORD) == 200  # counted as the 3rd, then cleared in the session's commit
    counter = tokens.device_counter_key(tokens.device_hash(token))
    with pytest.raises(Exception, match="404"):
        emulator_get(emulator_host, project, f"login_attempts/{counter}")
    assert [_status(owner, "alice", "typo") for _ in range(4)] == [401, 401, 401, 429]


# --- bursts --------------------------------------------------------------------------------------------


def test_a_burst_with_one_device_cookie_is_judged_at_most_the_device_limit(make_client: AppFactory) -> None:
    client = make_client(SESSION_LOGIN_MAX_FAILURES="5", SESSION_DEVICE_MAX_FAILURES="4")
    for trial in range(TRIALS):
        username = f"dev{trial}"
        register(client, username)
        cookie = {"Cookie": f"{DEVICE}={_device_cookie(_login(client, username, PASSWORD))}"}
        client.cookies.clear()
        passwords = [f"wrong guess {i}" for i in range(BURST - 1)]
        passwords.insert(trial * 7 % BURST, PASSWORD)  # the right one somewhere in the burst
        statuses = together([lambda p=p, u=username, c=cookie: _status(client, u, p, **c) for p in passwords])  # type: ignore[misc]
        judged = [s for s in statuses if s in (200, 401)]
        assert len(judged) <= 4, f"trial {trial}: {len(judged)} judged: {sorted(statuses)}"
        assert set(statuses) <= {200, 401, 429} and statuses.count(429) == BURST - len(judged)
        # None of them touched the username's counter: a browser without the cookie still logs in.
        client.cookies.clear()
        assert _status(client, username, PASSWORD) == 200


def test_the_address_limit_holds_across_usernames_in_a_burst(make_client: AppFactory) -> None:
    client = make_client(
        SESSION_ADDRESS_MAX_FAILURES="10", SESSION_CLIENT_IP_HEADER="X-Forwarded-For", SESSION_CLIENT_IP_HOPS="1"
    )
    for trial in range(TRIALS):
        address = {"X-Forwarded-For": f"198.51.100.{trial}"}
        calls = [lambda u=f"user{trial}x{i}", a=address: _status(client, u, "stuffed", **a) for i in range(BURST)]  # type: ignore[misc]
        statuses = together(calls)
        # Every username is new (count 1), so the address counter alone decides: exactly 10 judged.
        assert sorted(statuses) == [401] * 10 + [429] * (BURST - 10), f"trial {trial}"
    assert _status(client, "fresh", "stuffed", **{"X-Forwarded-For": "198.51.100.200"}) == 401  # another address


def test_right_passwords_give_their_address_guess_back(make_client: AppFactory) -> None:
    client = make_client(SESSION_ADDRESS_MAX_FAILURES="3")
    for name in ("alice", "bobby", "carol"):
        register(client, name)
    for _ in range(3):  # an office behind one address, logging in every morning
        for name in ("alice", "bobby", "carol"):
            client.cookies.clear()
            assert _status(client, name, PASSWORD) == 200
    client.cookies.clear()
    assert [_status(client, f"nobody{i}", "x") for i in range(4)] == [401, 401, 401, 429]
    assert _status(client, "alice", PASSWORD) == 429  # the address is locked (for browsers without a device cookie)


def test_a_trusted_device_is_not_held_back_by_a_locked_address(make_client: AppFactory) -> None:
    owner = make_client(SESSION_ADDRESS_MAX_FAILURES="2")
    register(owner)
    assert _status(owner, "alice", PASSWORD) == 200
    attacker = make_client(SESSION_ADDRESS_MAX_FAILURES="2")  # the same address ("testclient"), no cookie
    assert [_status(attacker, f"victim{i}", "x") for i in range(3)] == [401, 401, 429]
    assert _status(attacker, "alice", PASSWORD) == 429
    assert _status(owner, "alice", PASSWORD) == 200


# --- where the address comes from ------------------------------------------------------------------------


def test_a_spoofed_forwarded_for_is_ignored_unless_configured(make_client: AppFactory) -> None:
    client = make_client(SESSION_ADDRESS_MAX_FAILURES="3")
    statuses = [_status(client, f"user{i}", "x", **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]  # one counter: the connection's peer address


def test_a_configured_forwarded_for_is_read_at_the_trusted_hop(make_client: AppFactory) -> None:
    client = make_client(
        SESSION_ADDRESS_MAX_FAILURES="3", SESSION_CLIENT_IP_HEADER="X-Forwarded-For", SESSION_CLIENT_IP_HOPS="1"
    )
    # The proxy appends the address it saw; what a client wrote to its left changes nothing.
    spoofed = [{"X-Forwarded-For": f"203.0.113.{i}, 192.0.2.1"} for i in range(4)]
    assert [_status(client, f"user{i}", "x", **h) for i, h in enumerate(spoofed)] == [401, 401, 401, 429]
    assert _status(client, "user9", "x", **{"X-Forwarded-For": "192.0.2.2"}) == 401  # another client

    behind_lb = make_client(
        SESSION_ADDRESS_MAX_FAILURES="1", SESSION_CLIENT_IP_HEADER="X-Forwarded-For", SESSION_CLIENT_IP_HOPS="2"
    )
    # Behind a load balancer: "<client>, <load balancer>" is appended, the client is 2nd from the right.
    hops = [{"X-Forwarded-For": f"203.0.113.{i}, 192.0.2.7, 10.0.0.{i}"} for i in range(2)]
    assert [_status(behind_lb, f"victim{i}", "x", **h) for i, h in enumerate(hops)] == [401, 429]


@pytest.mark.parametrize(
    ("header", "hops", "values", "peer", "expected"),
    [
        (None, 1, ["203.0.113.9"], "192.0.2.1", "192.0.2.1"),  # not configured: never believed
        ("x-forwarded-for", 1, ["203.0.113.9, 192.0.2.1"], "10.0.0.1", "192.0.2.1"),
        ("x-forwarded-for", 2, ["203.0.113.9, 192.0.2.1, 10.0.0.1"], "10.0.0.2", "192.0.2.1"),
        ("x-forwarded-for", 3, ["192.0.2.1"], "10.0.0.2", "192.0.2.1"),  # fewer entries: the leftmost
        ("x-forwarded-for", 1, ["203.0.113.9", "192.0.2.1"], "10.0.0.2", "192.0.2.1"),  # two header lines
        ("x-forwarded-for", 1, [], "192.0.2.1", "192.0.2.1"),  # no header: the peer
        ("x-forwarded-for", 1, [" , "], "192.0.2.1", "192.0.2.1"),
        (None, 1, [], "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # IPv6 per /64
        (None, 1, [], "::ffff:192.0.2.1", "192.0.2.1"),
        (None, 1, [], None, None),
    ],
)
def test_client_address(header: str | None, hops: int, values: list[str], peer: str | None, expected: str) -> None:
    env = {"SESSION_CLIENT_IP_HOPS": str(hops), **({"SESSION_CLIENT_IP_HEADER": header} if header else {})}
    assert credentials.client_address(load_settings(env), values, peer) == expected
