"""The pure rules of session/liveness.py: plain values in, a verdict out (no emulator, no clock of their own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from session import liveness
from session.errors import UnauthenticatedReason as Reason
from session.models import DeviceRecord, SessionRecord, UserRecord

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def user(**changes: object) -> UserRecord:
    fields: dict[str, object] = {
        "user_id": "u1",
        "username": "alice",
        "password_hash": "not-a-real-hash",
        "created_at": NOW - 10 * HOUR,
        "updated_at": NOW - 10 * HOUR,
        "auth_epoch": 3,
    }
    return UserRecord.model_validate({**fields, **changes})


def session(**changes: object) -> SessionRecord:
    fields: dict[str, object] = {
        "user_id": "u1",
        "username": "alice",
        "public_id": "p1",
        "created_at": NOW - HOUR,
        "last_seen_at": NOW - HOUR,
        "absolute_expires_at": NOW + 23 * HOUR,
        "expires_at": NOW + HOUR,
        "auth_epoch": 3,
    }
    return SessionRecord.model_validate({**fields, **changes})


def device(**changes: object) -> DeviceRecord:
    fields: dict[str, object] = {"user_id": "u1", "created_at": NOW - HOUR, "expires_at": NOW + HOUR, "auth_epoch": 3}
    return DeviceRecord.model_validate({**fields, **changes})


# (what differs from a live session of an enabled user, the verdict)
SESSIONS = [
    ({}, {}, None),
    ({"expires_at": NOW + timedelta(microseconds=1)}, {}, None),
    ({"expires_at": NOW}, {}, Reason.EXPIRED),  # expires_at is the first instant it is no longer accepted
    ({"expires_at": NOW - HOUR}, {}, Reason.EXPIRED),
    ({}, {"disabled": True}, Reason.REVOKED),
    ({}, {"auth_epoch": 4}, Reason.REVOKED),  # a password change, a disable or a revoke-all since
    ({"auth_epoch": 4}, {}, Reason.REVOKED),  # not the user's epoch either way
    ({}, {"user_id": "u2"}, Reason.REVOKED),  # a namesake registered after a deletion
    ({}, {"sessions_valid_after": NOW - HOUR}, None),  # created exactly at the old revocation point
    ({}, {"sessions_valid_after": NOW - HOUR + timedelta(microseconds=1)}, Reason.REVOKED),
    ({"expires_at": NOW}, {"disabled": True}, Reason.EXPIRED),  # expiry is said first
]


@pytest.mark.parametrize(("session_changes", "user_changes", "reason"), SESSIONS)
def test_why_not_live(
    session_changes: dict[str, object], user_changes: dict[str, object], reason: Reason | None
) -> None:
    assert liveness.why_not_live(session(**session_changes), user(**user_changes), NOW) is reason
    assert liveness.is_live(session(**session_changes), user(**user_changes), NOW) is (reason is None)


def test_a_session_without_its_user_is_revoked() -> None:
    assert liveness.why_not_live(session(), None, NOW) is Reason.REVOKED
    assert liveness.why_not_live(session(expires_at=NOW), None, NOW) is Reason.EXPIRED


@pytest.mark.parametrize(
    ("after", "same"),
    [
        ({}, True),
        ({"display_name": "Alice B.", "version": 2}, True),  # a profile edit is not a change of credentials
        ({"password_hash": "another", "auth_epoch": 4}, False),
        ({"disabled": True}, False),
        ({"user_id": "u2"}, False),
    ],
)
def test_same_credentials(after: dict[str, object], same: bool) -> None:
    assert liveness.same_credentials(user(), user(**after)) is same


@pytest.mark.parametrize(
    ("session_changes", "user_changes", "never"),
    [
        ({}, {}, False),
        ({"expires_at": NOW}, {}, True),
        ({}, {"auth_epoch": 4}, True),  # voided by a newer epoch
        ({}, {"disabled": True}, True),
        # Re-stamped by a revoke-all after the user was read: may well be live, so never judged dead.
        ({"auth_epoch": 4}, {}, False),
        ({"auth_epoch": 4, "expires_at": NOW}, {}, False),
    ],
)
def test_never_live_again(session_changes: dict[str, object], user_changes: dict[str, object], never: bool) -> None:
    assert liveness.never_live_again(session(**session_changes), user(**user_changes), NOW) is never


@pytest.mark.parametrize(
    ("changes", "trusted", "known"),
    [
        ({}, True, True),
        ({"expires_at": NOW}, False, False),
        ({"user_id": "u2"}, False, False),  # another account's device (a deleted namesake's)
        ({"auth_epoch": 2}, False, True),  # minted before the password changed: known, re-stampable, not trusted
        ({"auth_epoch": None}, False, True),  # stored before device epochs
    ],
)
def test_device_trust(changes: dict[str, object], trusted: bool, known: bool) -> None:
    assert liveness.device_trusted(device(**changes), user(), NOW) is trusted
    assert liveness.device_known(device(**changes), user(), NOW) is known


def test_no_device_or_no_user_is_never_trusted() -> None:
    assert liveness.device_trusted(None, user(), NOW) is False
    assert liveness.device_trusted(device(), None, NOW) is False
    assert liveness.device_known(None, user(), NOW) is False
