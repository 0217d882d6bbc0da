"""`python -m session audit`: each kind of damage planted straight into the emulator is found, then fixed.

The damage is written with the plain Firestore client, as a crash, a cut connection or
an old bug would have left it; the audit runs as an admin runs it (a subprocess).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from starlette.testclient import TestClient

from session import tokens
from session.audit import KINDS
from session.models import DeviceRecord, SessionRecord, UserRecord
from tests.conftest import bearer, login, register
from tests.test_cli import cli, error_lines

NOW = datetime.now(UTC)
LINE = re.compile(r"^(?P<kind>[a-z_]+): (?P<n>\d+)(?:, (?P<fixed>\d+) (?:deleted|dropped))?")


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path) -> None:
    os.environ["XDG_STATE_HOME"] = str(tmp_path / "state")


def counts(stdout: str) -> tuple[dict[str, int], dict[str, int]]:
    """Found and fixed, by kind, from the audit's lines."""
    found, fixed = {}, {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m and m["kind"] in {k.name for k in KINDS}:
            found[m["kind"]] = int(m["n"])
            fixed[m["kind"]] = int(m["fixed"] or 0)
    assert set(found) == {k.name for k in KINDS}, stdout
    return found, fixed


def session_doc(username: str, user_id: str, *, epoch: int = 0, expires_in: timedelta = timedelta(hours=1)) -> Any:
    token = tokens.mint(username)
    key = tokens.hash_token(token)
    record = SessionRecord(
        user_id=user_id,
        username=username,
        public_id=tokens.public_id(key),
        created_at=NOW - timedelta(minutes=5),
        last_seen_at=NOW - timedelta(minutes=5),
        absolute_expires_at=NOW + timedelta(days=1),
        expires_at=NOW + expires_in,
        auth_epoch=epoch,
        auth_time=NOW - timedelta(minutes=5),
    )
    return key, record.model_dump()


def plant(db: firestore.Client, alice: dict[str, Any]) -> dict[str, Any]:
    """One or more of every kind of damage; returns the ids to check afterwards."""
    sessions, users, counters = db.collection("sessions"), db.collection("users"), db.collection("login_attempts")
    planted: dict[str, Any] = {}
    expired_key, expired = session_doc("alice", alice["user_id"], expires_in=timedelta(minutes=-1))
    ghost_key, ghost = session_doc("ghost", "no-such-user-id")
    old_epoch_key, old_epoch = session_doc("alice", alice["user_id"], epoch=-1)
    unledgered_key, unledgered = session_doc("alice", alice["user_id"])
    for key, data in ((expired_key, expired), (ghost_key, ghost), (old_epoch_key, old_epoch)):
        sessions.document(key).set(data)
    sessions.document(unledgered_key).set(unledgered)
    planted["dead"] = [expired_key, ghost_key, old_epoch_key]
    planted["unledgered"] = unledgered_key
    ledger = users.document("alice").collection("ledger").document("sessions")
    ledger.update({"sessions": firestore.ArrayUnion(["f" * 64, "e" * 64])})
    # carol: a user written before the cap (no ledger), with three live sessions: over a cap of 2.
    carol = UserRecord(user_id="carol-id", username="carol", password_hash="x", created_at=NOW, updated_at=NOW)
    users.document("carol").set(carol.model_dump())
    for _ in range(3):
        key, data = session_doc("carol", "carol-id")
        sessions.document(key).set(data)
    device = DeviceRecord(user_id="ghost-id", created_at=NOW, expires_at=NOW + timedelta(days=1)).model_dump()
    users.document("ghost").collection("devices").document("d" * 64).set(device)
    users.document("alice").collection("devices").document("c" * 64).set(device)  # another user's id: a namesake's
    users.document("ghost2").collection("ledger").document("sessions").set({"user_id": "x", "sessions": []})
    counters.document("a" * 64).set(
        {"count": -1, "window_start": NOW.timestamp(), "expires_at": NOW + timedelta(hours=1)}
    )
    counters.document("b" * 64).set(
        {"count": 2, "window_start": NOW.timestamp(), "expires_at": NOW - timedelta(hours=1)}
    )
    sessions.document("9" * 64).set({"user_id": 3})
    users.document("broken").set({"username": 3})
    return planted


def test_each_kind_of_damage_is_found_then_fixed(client: TestClient, project: str) -> None:
    alice = register(client, "alice")
    token = login(client, "alice")
    db = firestore.Client(project=project)
    planted = plant(db, alice)
    env = {**os.environ, "SESSION_MAX_PER_USER": "2"}

    found_run = cli("audit", "--page-size", "2", env=env)  # pages of 2: the paging is exercised too
    assert found_run.returncode == 1, found_run.stderr
    found, fixed = counts(found_run.stdout)
    assert found == {
        "dead_sessions": 3,
        "stale_ledger_entries": 2,
        "expired_counters": 1,
        "unledgered_sessions": 1,
        "over_cap": 1,
        "negative_counters": 1,
        "orphan_devices": 2,
        "orphan_ledgers": 1,
        "corrupt": 2,
    }
    assert not any(fixed.values())
    assert "carol (3)" in found_run.stdout and "sessions/999999999999" in found_run.stdout
    assert any(line.startswith("audit: sessions:") for line in error_lines(found_run)), found_run.stderr
    assert token not in found_run.stdout and tokens.hash_token(token) not in found_run.stdout

    fix_run = cli("audit", "--fix", env=env)
    assert fix_run.returncode == 1, fix_run.stderr  # unledgered, over the cap and corrupt are for a human
    _, fixed = counts(fix_run.stdout)
    assert fixed == {
        "dead_sessions": 3,
        "stale_ledger_entries": 2,
        "expired_counters": 1,
        "unledgered_sessions": 0,
        "over_cap": 0,
        "negative_counters": 1,
        "orphan_devices": 2,
        "orphan_ledgers": 1,
        "corrupt": 0,
    }
    for key in planted["dead"]:
        assert not db.collection("sessions").document(key).get().exists
    assert db.collection("sessions").document(planted["unledgered"]).get().exists
    ledger = db.collection("users").document("alice").collection("ledger").document("sessions").get().to_dict()
    assert ledger["sessions"] == [tokens.hash_token(token)]
    assert not list(db.collection("users").document("ghost").collection("devices").stream())
    assert not db.collection("users").document("alice").collection("devices").document("c" * 64).get().exists
    assert not db.collection("users").document("ghost2").collection("ledger").document("sessions").get().exists
    assert not db.collection("login_attempts").document("a" * 64).get().exists
    assert not db.collection("login_attempts").document("b" * 64).get().exists
    # What was live stays live: the fix deleted nothing the service would accept.
    assert client.get("/profile", headers=bearer(token)).status_code == 200

    again = cli("audit", env=env)
    found, _ = counts(again.stdout)
    assert {k: n for k, n in found.items() if n} == {"unledgered_sessions": 1, "over_cap": 1, "corrupt": 2}


def test_a_database_used_normally_needs_no_attention(client: TestClient) -> None:
    register(client, "alice")
    token = login(client, "alice")
    other = login(client, "alice")
    assert client.post("/logout", headers=bearer(other)).status_code == 204  # leaves its ledger entry: garbage
    changed = client.post(
        "/profile/password",
        headers=bearer(token),
        json={"current_password": "correct horse battery", "new_password": "another long password"},
    )
    assert changed.status_code == 200, changed.text
    result = cli("audit")
    assert result.returncode == 0, result.stdout + result.stderr
    found, _ = counts(result.stdout)
    assert sum(n for k, n in found.items() if next(x for x in KINDS if x.name == k).attention) == 0
    assert result.stdout.splitlines()[-1].endswith("nothing needs attention")


def test_help_states_the_cost_in_reads() -> None:
    result = cli("audit", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Cost, in Firestore document reads: 1 per session" in text
