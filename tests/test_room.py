"""Making room under the caps (session/room.py): lists and documents as read in, kept and ended out. No emulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from session import room
from session.models import DeviceRecord, SessionRecord, UserRecord

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
USER = UserRecord(
    user_id="u1", username="alice", password_hash="x", created_at=NOW - 99 * MINUTE, updated_at=NOW, auth_epoch=2
)


def session(last_seen: int, *, created: int = -60, expires: int = 60, epoch: int = 2) -> SessionRecord:
    """A session of USER, its times in minutes from NOW."""
    return SessionRecord(
        user_id="u1",
        username="alice",
        public_id="p",
        created_at=NOW + created * MINUTE,
        last_seen_at=NOW + last_seen * MINUTE,
        absolute_expires_at=NOW + 999 * MINUTE,
        expires_at=NOW + expires * MINUTE,
        auth_epoch=epoch,
        auth_time=NOW + created * MINUTE,
    )


def device(expires: int, *, epoch: int | None = 2, user_id: str = "u1") -> DeviceRecord:
    return DeviceRecord(
        user_id=user_id, created_at=NOW - 99 * MINUTE, expires_at=NOW + expires * MINUTE, auth_epoch=epoch
    )


def test_a_full_list_of_live_sessions_ends_the_least_recently_used() -> None:
    stored = {"a": session(-5), "b": session(-30), "c": session(-1)}
    assert room.make_room(USER, ["a", "b", "c"], stored, 3, NOW) == (["a", "c"], ["b"])


def test_over_the_cap_ends_as_many_as_it_takes_to_leave_room_for_one() -> None:
    # A cap lowered since the list was written: 4 live, cap 2, so 3 go (least recently used first).
    stored = {"a": session(-4), "b": session(-3), "c": session(-2), "d": session(-1)}
    assert room.make_room(USER, ["a", "b", "c", "d"], stored, 2, NOW) == (["d"], ["a", "b", "c"])


def test_dead_sessions_go_first_and_make_room_themselves() -> None:
    stored = {
        "live-old": session(-50),
        "expired": session(-1, expires=0),  # expires_at == now: no longer accepted
        "voided": session(-1, epoch=1),  # a password change since
        "live-new": session(-2),
    }
    kept, ended = room.make_room(USER, ["live-old", "expired", "voided", "live-new"], stored, 4, NOW)
    assert kept == ["live-old", "live-new"]  # room enough once the dead ones go: no live session ends
    assert ended == ["expired", "voided"]


def test_entries_whose_session_is_gone_are_dropped_not_deleted() -> None:
    stored = {"a": session(-5), "b": session(-3)}
    assert room.make_room(USER, ["gone", "a", "b"], stored, 3, NOW) == (["a", "b"], [])


def test_a_session_of_a_newer_epoch_is_never_judged_dead() -> None:
    # Re-stamped by a revoke-all after the user was read: it may be live, so it competes on use like any other.
    stored = {"restamped": session(-40, epoch=3, expires=0), "b": session(-10)}
    assert room.make_room(USER, ["restamped", "b"], stored, 2, NOW) == (["b"], ["restamped"])


def test_ties_on_last_use_are_broken_by_creation_then_key() -> None:
    stored = {"z": session(-5, created=-50), "y": session(-5, created=-50), "x": session(-5, created=-20)}
    assert room.make_room(USER, ["z", "y", "x"], stored, 2, NOW) == (["x"], ["y", "z"])


@pytest.mark.parametrize("cap", [1, 2, 5])
def test_room_is_always_left_for_one(cap: int) -> None:
    stored = {f"s{i}": session(-i) for i in range(8)}
    kept, ended = room.make_room(USER, list(stored), stored, cap, NOW)
    assert len(kept) == cap - 1
    assert sorted(kept + ended) == sorted(stored)
    assert kept == [f"s{i}" for i in range(cap - 1)]  # the most recently used


def test_a_full_device_list_untrusts_the_earliest_renewed() -> None:
    stored = {"a": device(30), "b": device(10), "c": device(20)}
    assert room.make_device_room(USER, ["a", "b", "c"], stored, 3, NOW) == (["a", "c"], ["b"])


def test_untrusted_devices_go_first_and_gone_entries_are_dropped() -> None:
    stored = {
        "old-epoch": device(90, epoch=1),
        "expired": device(0),
        "namesake": device(90, user_id="u0"),
        "trusted": device(5),
    }
    kept, gone = room.make_device_room(USER, ["gone", "old-epoch", "expired", "namesake", "trusted"], stored, 5, NOW)
    assert kept == ["trusted"]
    assert gone == ["old-epoch", "expired", "namesake"]
