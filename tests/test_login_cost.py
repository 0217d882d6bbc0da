"""What a login costs in Firestore work (issue 10): counted by the store itself, per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.testclient import TestClient

from session.models import LoginRequest
from session.store import OpCounts, current_ops
from tests.conftest import main_module, register

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


def test_a_successful_login_is_two_round_trips(client: TestClient) -> None:
    register(client)
    service = main_module().api_instance.service
    ops, result = _counted(client, lambda: service.login(LoginRequest(username="alice", password=PASSWORD)))
    assert result.token
    # Round trip 1: the guess is counted (1 write) while the user is read (1 read), together.
    # Round trip 2: one commit creates the session (1 write), checks the user is unchanged (1 write that
    # changes nothing) and deletes the counter (1 delete).
    assert ops.as_dict() == {"round_trips": 2, "reads": 1, "writes": 3, "deletes": 1}


def test_a_failed_login_is_one_round_trip(client: TestClient) -> None:
    register(client)
    service = main_module().api_instance.service
    for username in ("alice", "nobody"):  # the same work for an unknown user
        ops, result = _counted(client, lambda u=username: service.login(LoginRequest(username=u, password="wrong!")))
        assert type(result).__name__ == "InvalidCredentials"
        assert ops.as_dict() == {"round_trips": 1, "reads": 1, "writes": 1, "deletes": 0}


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
