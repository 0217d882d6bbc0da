"""The admin CLI, `python -m session`, against the emulator with the service's own settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from tests.conftest import ROOT, bearer, login, register


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "session", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=60,
    )


def test_users_create_and_permissions(client: TestClient) -> None:
    created = cli(
        "users",
        "create",
        "Dave",
        "--permission",
        "read",
        "--permission",
        "admin",
        "--password-stdin",
        stdin="dave's long password\n",
    )
    assert created.returncode == 0, created.stderr
    assert "dave" in created.stdout
    token = login(client, "dave", "dave's long password")
    assert client.get("/profile", headers=bearer(token)).json()["permissions"] == ["read", "admin"]
    changed = cli("users", "set-permissions", "dave", "orders:write")
    assert changed.returncode == 0, changed.stderr
    assert client.get("/profile", headers=bearer(token)).json()["permissions"] == ["orders:write"]


def test_disable_and_enable(client: TestClient) -> None:
    register(client)
    token = login(client)
    disabled = cli("users", "disable", "alice")
    assert disabled.returncode == 0, disabled.stderr
    assert "1 session(s) revoked" in disabled.stdout
    assert client.get("/profile", headers=bearer(token)).status_code == 401
    assert client.post("/login", json={"username": "alice", "password": "correct horse battery"}).status_code == 403
    assert cli("users", "enable", "alice").returncode == 0
    assert login(client)


def test_sessions_list_and_revoke_all(client: TestClient) -> None:
    register(client)
    tokens = [login(client) for _ in range(2)]
    listed = cli("sessions", "list", "alice")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.strip().splitlines()
    assert len(rows) == 3  # header + two sessions
    assert "testclient" in rows[1]
    for token in tokens:
        assert token not in listed.stdout and token.split(".")[1] not in listed.stdout
    revoked = cli("sessions", "revoke-all", "alice")
    assert revoked.returncode == 0 and "2 session(s) revoked" in revoked.stdout
    assert all(client.get("/profile", headers=bearer(t)).status_code == 401 for t in tokens)


@pytest.mark.parametrize(
    "args",
    [
        ("users", "disable", "nobody"),
        ("users", "set-permissions", "nobody", "read"),
        ("sessions", "list", "nobody"),
        ("sessions", "revoke-all", "nobody"),
    ],
)
def test_unknown_user_is_a_one_line_error(client: TestClient, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "nobody" in result.stderr


def test_create_existing_user_fails(client: TestClient) -> None:
    register(client)
    result = cli("users", "create", "alice", "--password-stdin", stdin="another password\n")
    assert result.returncode == 1
    assert "taken" in result.stderr


def test_bad_settings_are_one_clear_message(project: str) -> None:
    os.environ["SESSION_TTL_SECONDS"] = "-5"
    result = cli("check-config")
    assert result.returncode == 2
    assert "SESSION_TTL_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr
