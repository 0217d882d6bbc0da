"""What a login costs in Firestore work (issue 10): counted by the store itself, per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.testclient import TestClient

from session import tokens
from session.models import LoginRequest
from session.store import OpCounts, current_ops
from tests.conftest import AppFactory, main_module, register

PASSWORD = "correct horse battery"


def _counted(client: TestClient, call: Callable[[], Awaitable[Any]]) -> tuple[OpCounts, Any]:
    async def run() -> tuple[OpCounts, Any]:
        ops = OpCounts()
        token = current_ops.set(ops)
        try:
            try:
                result: Any = await call()
            except Exception as exc:  # the error is part of what is measured
                result = exc
            return ops, result
        finally:
            current_ops.reset(token)

    return client.portal.call(run)  # type: ignore[union-attr]


def _login(client: TestClient, username: str = "alice", password: str = PASSWORD) -> tuple[OpCounts, Any]:
    service = main_module().api_instance.service
    return _counted(client, lambda: service.login(LoginRequest(username=username, password=password)))


def test_a_successful_login_is_two_round_trips(client: TestClient) -> None:
    register(client)
    ops, result = _login(client)
    assert result.token
    # Round trip 1: the guess is counted (1 write) while the user and the account's ledger are read (2 reads,
    # one snapshot). Round trip 2: one commit under the ledger's precondition creates the session (1 write),
    # adds it and the new device to the ledger (1 write), writes the device of the device cookie (1 write) and
    # deletes the counter (1 delete). No write to the user document (issue 19): 4 writes, was 5. Issue 22 adds
    # the security event (login_new_device) to the same commit: one write more, no round trip.
    assert result.device_token
    assert ops.as_dict() == {"round_trips": 2, "reads": 2, "writes": 4 + 1, "deletes": 1}


def test_without_a_cap_the_ledger_still_carries_the_precondition(make_client: AppFactory) -> None:
    client = make_client(SESSION_MAX_PER_USER="0")
    register(client)
    ops, result = _login(client)
    assert result.token
    # The ledger is read and written all the same: it witnesses the credentials, and lists the trusted devices.
    assert ops.as_dict() == {"round_trips": 2, "reads": 2, "writes": 4 + 1, "deletes": 1}


def test_a_login_at_the_cap_reads_the_sessions_and_ends_one(make_client: AppFactory) -> None:
    client = make_client(SESSION_MAX_PER_USER="3")
    register(client)
    for _ in range(3):
        assert _login(client)[1].token
    ops, result = _login(client)
    assert result.token
    # One more round trip reads the 3 sessions the full ledger lists; the commit deletes the least recently used.
    assert ops.as_dict() == {"round_trips": 3, "reads": 2 + 3, "writes": 4 + 1, "deletes": 1 + 1}


def test_a_failed_login_is_one_round_trip(client: TestClient) -> None:
    register(client)
    for username in ("alice", "nobody"):  # the same work for an unknown user
        ops, result = _login(client, username, "wrong!")
        assert type(result).__name__ == "InvalidCredentials"
        assert ops.as_dict() == {"round_trips": 1, "reads": 2, "writes": 1, "deletes": 0}


def test_a_login_from_a_trusted_device_is_two_round_trips(make_client: AppFactory) -> None:
    client = make_client(SESSION_MAX_PER_USER="0")  # the ledger's read and write are counted above
    register(client)
    service = main_module().api_instance.service
    device = _login(client)[1].device_token
    ops, result = _counted(
        client, lambda: service.login(LoginRequest(username="alice", password=PASSWORD), device=device)
    )
    assert result.token and result.device_token == device
    # Round trip 1: the guess on the device's counter (1 write) while the user, the ledger and the device are
    # read (3 reads). Round trip 2: the session, the ledger (its precondition, and the device's last use); the
    # counter deleted. The device document is not written: more than half its lifetime is left (issue 26: 3
    # writes, was 4), plus the security event (login) in the same commit.
    assert ops.as_dict() == {"round_trips": 2, "reads": 3, "writes": 3 + 1, "deletes": 1}
    ops, result = _counted(
        client, lambda: service.login(LoginRequest(username="alice", password="wrong!"), device=device)
    )
    assert type(result).__name__ == "InvalidCredentials"
    assert ops.as_dict() == {"round_trips": 1, "reads": 3, "writes": 1, "deletes": 0}
    # A cookie naming alice that is not hers: its device is read, then the guess counts on the shared counter.
    forged = tokens.mint("alice")
    ops, result = _counted(
        client, lambda: service.login(LoginRequest(username="alice", password="wrong!"), device=forged)
    )
    assert type(result).__name__ == "InvalidCredentials"
    assert ops.as_dict() == {"round_trips": 2, "reads": 3, "writes": 2, "deletes": 0}


def test_the_address_limit_adds_writes_not_round_trips(make_client: AppFactory) -> None:
    client = make_client(SESSION_ADDRESS_MAX_FAILURES="100", SESSION_MAX_PER_USER="0")
    register(client)
    service = main_module().api_instance.service
    ops, result = _counted(
        client, lambda: service.login(LoginRequest(username="alice", password=PASSWORD), address="192.0.2.1")
    )
    assert result.token
    # Round trip 1: both counters in one commit (2 writes), the user and ledger read. Round trip 2: as without the
    # limit, plus the address's guess given back (1 write; the address's counter is never cleared by one user).
    assert ops.as_dict() == {"round_trips": 2, "reads": 2, "writes": 6 + 1, "deletes": 1}
    ops, result = _counted(
        client, lambda: service.login(LoginRequest(username="alice", password="wrong!"), address="192.0.2.1")
    )
    assert type(result).__name__ == "InvalidCredentials"
    assert ops.as_dict() == {"round_trips": 1, "reads": 2, "writes": 2, "deletes": 0}


def test_a_refused_guess_verifies_no_password(client: TestClient) -> None:
    register(client)
    for _ in range(5):
        assert client.post("/login", json={"username": "alice", "password": "wrong!"}).status_code == 401
    service = main_module().api_instance.service
    verified: list[str] = []
    original = service.passwords.verify

    def spy(stored_hash: str, password: str) -> bool:
        verified.append(password)
        return bool(original(stored_hash, password))

    service.passwords.verify = spy
    try:
        assert client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 429
    finally:
        service.passwords.verify = original
    assert verified == []
