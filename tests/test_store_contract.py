"""The store contract: one set of cases that every ``session.store.Store`` backend must pass.

``StoreContract`` holds the cases; each asserts a guarantee that the ``Store``
Protocol's docstrings state, through the Protocol's methods only, and nothing
specific to one backend. A backend's test class subclasses it and provides the
``store`` fixture (flask-session's shared abstract test, with a fixture instead of
abstract methods). ``TestFirestoreStore`` runs the cases on the real emulator, one
fresh ``demo-`` project per test.

Each test runs its store calls on one event loop (``runner``), and the backend's
fixture closes the store's client on that same loop at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from session.config import load_settings
from session.models import DeviceRecord, LedgerRecord, SessionRecord, UserRecord
from session.store import AlreadyExists, FirestoreStore, LedgerChange, PreconditionFailed, Store, Versioned

# Whole seconds: a counter's window start may travel as seconds since the epoch.
NOW = datetime.now(UTC).replace(microsecond=0)
LATER = NOW + timedelta(minutes=5)
EXPIRES = NOW + timedelta(hours=1)


def user_record(username: str = "alice", **changes: Any) -> UserRecord:
    fields: dict[str, Any] = {
        "user_id": f"u-{username}",
        "username": username,
        "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "display_name": username.title(),
        "permissions": ["read"],
        "created_at": NOW,
        "updated_at": NOW,
    }
    return UserRecord(**{**fields, **changes})


def session_record(user: UserRecord, *, created_at: datetime = NOW, **changes: Any) -> SessionRecord:
    fields: dict[str, Any] = {
        "user_id": user.user_id,
        "username": user.username,
        "public_id": uuid.uuid4().hex,
        "created_at": created_at,
        "last_seen_at": created_at,
        "absolute_expires_at": created_at + timedelta(days=1),
        "expires_at": created_at + timedelta(hours=1),
        "user_agent": "pytest",
        "auth_epoch": user.auth_epoch,
    }
    return SessionRecord(**{**fields, **changes})


def device_record(user: UserRecord, **changes: Any) -> DeviceRecord:
    return DeviceRecord(**{"user_id": user.user_id, "created_at": NOW, "expires_at": EXPIRES, **changes})


def token_hash() -> str:
    return uuid.uuid4().hex * 2  # the shape of a sha256 hex digest


def key() -> str:
    return uuid.uuid4().hex


class StoreContract:
    """The cases. A subclass provides ``store``: a ``Store`` on an empty database, closed afterwards."""

    @pytest.fixture
    def runner(self) -> Iterator[asyncio.Runner]:
        """One event loop for the whole test (a store may bind a connection to the loop that made it)."""
        with asyncio.Runner() as runner:
            yield runner

    @pytest.fixture
    def alice(self, store: Store, runner: asyncio.Runner) -> Versioned[UserRecord]:
        """User alice, created, as read back with its version."""
        runner.run(store.create_user(user_record()))
        read = runner.run(store.read_user("alice"))
        assert read is not None
        return read

    # --- users -----------------------------------------------------------------------------

    def test_a_created_user_reads_back_the_same_with_a_version(self, store: Store, runner: asyncio.Runner) -> None:
        record = user_record(email="alice@example.com", auth_epoch=3)
        runner.run(store.create_user(record))
        read = runner.run(store.read_user("alice"))
        assert read is not None
        assert read.record == record
        assert isinstance(read.update_time, datetime)

    def test_a_second_create_user_raises_already_exists_and_keeps_the_first(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        with pytest.raises(AlreadyExists):
            runner.run(store.create_user(user_record(display_name="Mallory", password_hash="other")))
        again = runner.run(store.read_user("alice"))
        assert again == alice

    def test_read_user_of_a_missing_name_is_none(self, store: Store, runner: asyncio.Runner) -> None:
        assert runner.run(store.read_user("nobody")) is None

    def test_update_user_at_the_current_version_applies_and_returns_a_newer_version(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        updated = runner.run(store.update_user(alice, {"display_name": "Alice A.", "version": 2}))
        assert updated.record == alice.record.model_copy(update={"display_name": "Alice A.", "version": 2})
        assert updated.update_time > alice.update_time
        assert runner.run(store.read_user("alice")) == updated

    def test_update_user_at_a_stale_version_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        updated = runner.run(store.update_user(alice, {"display_name": "First"}))
        with pytest.raises(PreconditionFailed):
            runner.run(store.update_user(alice, {"display_name": "Second", "email": "x@example.com"}))
        assert runner.run(store.read_user("alice")) == updated

    def test_update_user_of_a_vanished_user_raises_and_creates_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        # The Protocol deletes no user, so "vanished" is a version of a user that is not there.
        ghost = Versioned(user_record("ghost"), alice.update_time)
        with pytest.raises(PreconditionFailed):
            runner.run(store.update_user(ghost, {"display_name": "Boo"}))
        assert runner.run(store.read_user("ghost")) is None

    def test_update_user_with_session_changes_applies_both(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h = token_hash()
        runner.run(store.create_session(h, session_record(alice.record), user=None))
        updated = runner.run(store.update_user(alice, {"auth_epoch": 1}, session_changes=(h, {"auth_epoch": 1})))
        session, user = runner.run(store.read_auth("alice", h))
        assert user == updated
        assert user.record.auth_epoch == 1
        assert session is not None and session.record.auth_epoch == 1

    def test_update_user_whose_session_is_missing_raises_and_changes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        missing = token_hash()
        with pytest.raises(PreconditionFailed):
            runner.run(store.update_user(alice, {"auth_epoch": 1}, session_changes=(missing, {"auth_epoch": 1})))
        assert runner.run(store.read_auth("alice", missing)) == (None, alice)

    # --- create_session --------------------------------------------------------------------

    def test_create_session_at_the_current_user_version_creates_it_and_keeps_the_version(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, record = token_hash(), session_record(alice.record)
        runner.run(store.create_session(h, record, user=alice))
        session, user = runner.run(store.read_auth("alice", h))
        assert session is not None and session.record == record
        assert user == alice  # without user_changes, the user's version does not move

    def test_create_session_at_a_stale_user_version_raises_and_creates_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        updated = runner.run(store.update_user(alice, {"auth_epoch": 1}))
        h = token_hash()
        with pytest.raises(PreconditionFailed):
            runner.run(store.create_session(h, session_record(alice.record), user=alice, user_changes={"version": 9}))
        assert runner.run(store.read_auth("alice", h)) == (None, updated)

    def test_create_session_applies_user_changes_with_it(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, record = token_hash(), session_record(alice.record, auth_epoch=1)
        runner.run(store.create_session(h, record, user=alice, user_changes={"auth_epoch": 1, "password_hash": "new"}))
        session, user = runner.run(store.read_auth("alice", h))
        assert session is not None and session.record == record
        assert user is not None
        assert user.record == alice.record.model_copy(update={"auth_epoch": 1, "password_hash": "new"})
        assert user.update_time > alice.update_time

    def test_parallel_create_sessions_at_one_user_version_all_succeed(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        hashes = [token_hash() for _ in range(8)]

        async def logins() -> None:
            await asyncio.gather(*(store.create_session(h, session_record(alice.record), user=alice) for h in hashes))

        runner.run(logins())
        assert sorted(h for h, _ in runner.run(store.list_sessions(alice.record.user_id))) == sorted(hashes)
        assert runner.run(store.read_user("alice")) == alice

    def test_create_session_with_clear_deletes_an_unchanged_counter(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h = key(), token_hash()
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        runner.run(store.create_session(h, session_record(alice.record), user=alice, clear=reservation))
        assert runner.run(store.read_attempts(k)) is None
        assert runner.run(store.read_auth("alice", h))[0] is not None

    def test_create_session_with_clear_of_a_counter_counted_since_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h = key(), token_hash()
        first = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        second = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        with pytest.raises(PreconditionFailed):
            runner.run(store.create_session(h, session_record(alice.record), user=alice, clear=first))
        assert runner.run(store.read_attempts(k)) == second
        assert runner.run(store.read_auth("alice", h)) == (None, alice)

    def test_create_session_with_release_takes_one_off_the_counter(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h = key(), token_hash()
        runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        second = runner.run(store.reserve_attempt(k, LATER, EXPIRES))
        runner.run(store.create_session(h, session_record(alice.record), user=alice, release=second))
        after = runner.run(store.read_attempts(k))
        assert after is not None
        assert (after.count, after.window_start) == (1, NOW)
        assert runner.run(store.read_auth("alice", h))[0] is not None

    def test_create_session_with_release_of_a_gone_counter_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h = key(), token_hash()
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        runner.run(store.create_session(token_hash(), session_record(alice.record), user=None, clear=reservation))
        assert runner.run(store.read_attempts(k)) is None
        with pytest.raises(PreconditionFailed):
            runner.run(store.create_session(h, session_record(alice.record), user=alice, release=reservation))
        assert runner.run(store.read_attempts(k)) is None  # not recreated
        assert runner.run(store.read_auth("alice", h)) == (None, alice)

    def test_create_session_replacing_one_deletes_it_in_the_same_write(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        old, new = token_hash(), token_hash()
        runner.run(store.create_session(old, session_record(alice.record), user=alice))
        runner.run(store.create_session(new, session_record(alice.record), user=alice, replaces=old))
        assert runner.run(store.read_auth("alice", old)) == (None, alice)
        assert runner.run(store.read_auth("alice", new))[0] is not None

    def test_create_session_replacing_a_gone_one_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        old, first, second = token_hash(), token_hash(), token_hash()
        runner.run(store.create_session(old, session_record(alice.record), user=alice))
        runner.run(store.create_session(first, session_record(alice.record), user=alice, replaces=old))
        with pytest.raises(PreconditionFailed):  # a second rotation of the same session
            runner.run(store.create_session(second, session_record(alice.record), user=alice, replaces=old))
        assert runner.run(store.read_auth("alice", second)) == (None, alice)
        assert runner.run(store.read_auth("alice", old)) == (None, alice)  # not recreated

    def test_create_session_without_a_user_checks_no_user(self, store: Store, runner: asyncio.Runner) -> None:
        h, record = token_hash(), session_record(user_record("carol"))
        runner.run(store.create_session(h, record, user=None))
        session, user = runner.run(store.read_auth("carol", h))
        assert session is not None and session.record == record
        assert user is None

    # --- touch and delete ------------------------------------------------------------------

    def test_touch_session_updates_its_deadlines(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, record = token_hash(), session_record(alice.record)
        runner.run(store.create_session(h, record, user=alice))
        assert runner.run(store.touch_session(h, LATER, LATER + timedelta(hours=1))) is True
        session, _ = runner.run(store.read_auth("alice", h))
        assert session is not None
        assert session.record == record.model_copy(
            update={"last_seen_at": LATER, "expires_at": LATER + timedelta(hours=1)}
        )

    def test_touch_session_of_a_missing_session_is_false_and_creates_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h = token_hash()
        runner.run(store.create_session(h, session_record(alice.record), user=alice))
        runner.run(store.delete_session(h))
        assert runner.run(store.touch_session(h, LATER, EXPIRES)) is False
        assert runner.run(store.read_auth("alice", h))[0] is None
        assert runner.run(store.list_sessions(alice.record.user_id)) == []

    def test_delete_session_is_idempotent(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, kept = token_hash(), token_hash()
        runner.run(store.create_session(h, session_record(alice.record), user=alice))
        runner.run(store.create_session(kept, session_record(alice.record), user=alice))
        runner.run(store.delete_session(h))
        assert runner.run(store.read_auth("alice", h))[0] is None
        runner.run(store.delete_session(h))  # again: not an error
        runner.run(store.delete_session(token_hash()))  # never existed: not an error
        assert [k for k, _ in runner.run(store.list_sessions(alice.record.user_id))] == [kept]

    def test_delete_user_sessions_keeps_keep_honours_up_to_epoch_and_counts(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        bob = user_record("bob")
        hashes = {name: token_hash() for name in ("keep", "epoch0", "epoch1", "epoch2", "bob")}
        records = {
            "keep": session_record(alice.record, auth_epoch=0),
            "epoch0": session_record(alice.record, auth_epoch=0),
            "epoch1": session_record(alice.record, auth_epoch=1),
            "epoch2": session_record(alice.record, auth_epoch=2),
            "bob": session_record(bob, auth_epoch=0),
        }
        for name, record in records.items():
            runner.run(store.create_session(hashes[name], record, user=None))

        removed = runner.run(store.delete_user_sessions(alice.record.user_id, keep=hashes["keep"], up_to_epoch=1))
        assert removed == 2
        left = {k for k, _ in runner.run(store.list_sessions(alice.record.user_id))}
        assert left == {hashes["keep"], hashes["epoch2"]}

        assert runner.run(store.delete_user_sessions(alice.record.user_id)) == 2
        assert runner.run(store.list_sessions(alice.record.user_id)) == []
        assert runner.run(store.delete_user_sessions(alice.record.user_id)) == 0
        assert runner.run(store.list_sessions(bob.user_id)) == [(hashes["bob"], records["bob"])]

    # --- queries ---------------------------------------------------------------------------

    def test_list_sessions_is_newest_first_with_keys_expired_ones_too(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        old = NOW - timedelta(days=3)
        made = [
            (token_hash(), session_record(alice.record, created_at=NOW + timedelta(seconds=1))),
            (token_hash(), session_record(alice.record, created_at=old, expires_at=old + timedelta(minutes=1))),
            (token_hash(), session_record(alice.record, created_at=NOW + timedelta(seconds=2))),
            (token_hash(), session_record(alice.record, created_at=NOW)),
        ]
        for h, record in made:
            runner.run(store.create_session(h, record, user=alice))
        runner.run(store.create_session(token_hash(), session_record(user_record("bob")), user=None))

        listed = runner.run(store.list_sessions(alice.record.user_id))
        assert listed == sorted(made, key=lambda pair: pair[1].created_at, reverse=True)
        assert runner.run(store.list_sessions("u-nobody")) == []

    def test_find_session_by_public_id(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        made = [(token_hash(), session_record(alice.record)) for _ in range(3)]
        for h, record in made:
            runner.run(store.create_session(h, record, user=alice))
        assert runner.run(store.find_session(made[1][1].public_id)) == made[1]
        assert runner.run(store.find_session(uuid.uuid4().hex)) is None

    def test_read_auth_of_missing_documents_is_none_none(self, store: Store, runner: asyncio.Runner) -> None:
        assert runner.run(store.read_auth("nobody", token_hash())) == (None, None)

    # --- failed-login counters -------------------------------------------------------------

    def test_concurrent_reservations_each_get_their_own_count(self, store: Store, runner: asyncio.Runner) -> None:
        k, n = key(), 20
        # Out of order, so the earliest time is neither the first nor the last one sent.
        times = [NOW + timedelta(seconds=(7 * i) % n) for i in range(n)]

        async def burst() -> list[Any]:
            return list(await asyncio.gather(*(store.reserve_attempt(k, t, EXPIRES) for t in times)))

        reservations = runner.run(burst())
        assert sorted(r.count for r in reservations) == list(range(1, n + 1))
        assert all(r.key == k for r in reservations)
        for sent, got in zip(times, reservations, strict=True):
            assert got.window_start <= sent
        counter = runner.run(store.read_attempts(k))
        assert counter is not None
        assert (counter.count, counter.window_start) == (n, min(times))

    def test_reserve_and_read_login_of_one_counter_counts_and_reads(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k = key()
        (reservation,), user, _, _ = runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "alice", None))
        assert user == alice
        assert (reservation.key, reservation.count, reservation.window_start) == (k, 1, NOW)
        assert runner.run(store.read_attempts(k)) == reservation  # committed when it returned

        (reservation,), user, _, _ = runner.run(store.reserve_and_read_login([(k, EXPIRES)], LATER, "nobody", None))
        assert user is None
        assert (reservation.count, reservation.window_start) == (2, NOW)

    def test_reserve_attempts_counts_each_counter_in_one_commit(self, store: Store, runner: asyncio.Runner) -> None:
        a, b = key(), key()
        runner.run(store.reserve_attempt(a, NOW, EXPIRES))
        first, second = runner.run(store.reserve_attempts([(a, EXPIRES), (b, LATER + timedelta(hours=1))], LATER))
        assert (first.key, first.count, first.window_start) == (a, 2, NOW)
        assert (second.key, second.count, second.window_start) == (b, 1, LATER)
        assert runner.run(store.read_attempts(a)) == first
        assert runner.run(store.read_attempts(b)) == second

    def test_parallel_reserve_attempts_each_get_their_own_counts(self, store: Store, runner: asyncio.Runner) -> None:
        shared, n = key(), 12

        async def burst() -> list[Any]:
            calls = (store.reserve_attempts([(key(), EXPIRES), (shared, EXPIRES)], NOW) for _ in range(n))
            return list(await asyncio.gather(*calls))

        counts = sorted(pair[1].count for pair in runner.run(burst()))
        assert counts == list(range(1, n + 1))

    def test_reserve_and_read_login_counts_and_reads_the_user_and_the_device(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h, device = key(), token_hash(), token_hash()
        record = device_record(alice.record)
        runner.run(store.create_session(h, session_record(alice.record), user=alice, device=(device, record)))
        (reservation,), user, found, _ = runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "alice", device))
        assert user is not None and user.record == alice.record
        assert found is not None and found.record == record
        assert (reservation.key, reservation.count, reservation.window_start) == (k, 1, NOW)
        assert runner.run(store.read_attempts(k)) == reservation  # committed when it returned
        # Another user's device, an unknown one, none asked for: no device.
        runner.run(store.create_user(user_record("bob")))
        assert runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "bob", device))[2] is None
        assert runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "alice", token_hash()))[2] is None
        reservations, user, found, _ = runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "nobody", None))
        assert (reservations[0].count, user, found) == (4, None, None)

    def test_create_session_with_a_device_writes_it_under_the_user_and_overwrites_it(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        device = token_hash()
        runner.run(
            store.create_session(
                token_hash(), session_record(alice.record), user=alice, device=(device, device_record(alice.record))
            )
        )
        renewed = device_record(alice.record, expires_at=EXPIRES + timedelta(days=1))
        runner.run(
            store.create_session(token_hash(), session_record(alice.record), user=None, device=(device, renewed))
        )
        found = runner.run(store.reserve_and_read_login([(key(), EXPIRES)], NOW, "alice", device))[2]
        assert found is not None and found.record == renewed

    def test_create_session_with_release_also_takes_one_off_that_counter_too(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, other, h = key(), key(), token_hash()
        mine, theirs = runner.run(store.reserve_attempts([(k, EXPIRES), (other, EXPIRES)], NOW))
        runner.run(store.reserve_attempt(other, LATER, EXPIRES))
        runner.run(store.create_session(h, session_record(alice.record), user=alice, clear=mine, release_also=theirs))
        assert runner.run(store.read_attempts(k)) is None
        after = runner.run(store.read_attempts(other))
        assert after is not None and after.count == 1
        assert runner.run(store.read_auth("alice", h))[0] is not None

    def test_create_session_with_release_also_of_a_gone_counter_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h, device = key(), token_hash(), token_hash()
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        runner.run(store.create_session(token_hash(), session_record(alice.record), user=None, clear=reservation))
        with pytest.raises(PreconditionFailed):
            runner.run(
                store.create_session(
                    h,
                    session_record(alice.record),
                    user=alice,
                    release_also=reservation,
                    device=(device, device_record(alice.record)),
                )
            )
        assert runner.run(store.read_attempts(k)) is None  # not recreated
        assert runner.run(store.read_auth("alice", h)) == (None, alice)
        assert runner.run(store.reserve_and_read_login([(key(), EXPIRES)], NOW, "alice", device))[2] is None

    def test_restart_attempts_resets_an_unchanged_counter_and_refuses_a_stale_one(
        self, store: Store, runner: asyncio.Runner
    ) -> None:
        k = key()
        first = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        second = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        with pytest.raises(PreconditionFailed):
            runner.run(store.restart_attempts(first, LATER, LATER + timedelta(hours=1)))
        assert runner.run(store.read_attempts(k)) == second  # nothing written

        restarted = runner.run(store.restart_attempts(second, LATER, LATER + timedelta(hours=1)))
        assert (restarted.key, restarted.count, restarted.window_start) == (k, 1, LATER)
        assert runner.run(store.read_attempts(k)) == restarted
        assert runner.run(store.reserve_attempt(k, LATER, EXPIRES)).count == 2

    # --- the session ledger (the cap on sessions) ---------------------------------------------

    def test_create_user_with_a_ledger_writes_both(self, store: Store, runner: asyncio.Runner) -> None:
        record = user_record()
        runner.run(store.create_user(record, ledger=LedgerRecord(user_id=record.user_id)))
        ledger = runner.run(store.read_ledger("alice"))
        assert ledger is not None and ledger.record == LedgerRecord(user_id=record.user_id, sessions=[])
        assert runner.run(store.read_ledger("nobody")) is None

    def test_create_ledger_twice_raises_already_exists_and_keeps_the_first(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        first = runner.run(store.create_ledger("alice", LedgerRecord(user_id="u-alice", sessions=["a" * 64])))
        with pytest.raises(AlreadyExists):
            runner.run(store.create_ledger("alice", LedgerRecord(user_id="u-alice", sessions=[])))
        assert runner.run(store.read_ledger("alice")) == first

    def test_read_sessions_returns_those_that_exist(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, missing = token_hash(), token_hash()
        record = session_record(alice.record)
        runner.run(store.create_session(h, record, user=None))
        assert runner.run(store.read_sessions([h, missing])) == {h: record}
        assert runner.run(store.read_sessions([])) == {}

    def test_create_session_with_a_ledger_change_writes_it_and_evicts(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        old, new = token_hash(), token_hash()
        runner.run(store.create_session(old, session_record(alice.record), user=None))
        base = runner.run(store.create_ledger("alice", LedgerRecord(user_id="u-alice", sessions=[old])))
        change = LedgerChange("alice", LedgerRecord(user_id="u-alice", sessions=[new]), base=base, evict=(old,))
        runner.run(store.create_session(new, session_record(alice.record), user=alice, ledger=change))
        ledger = runner.run(store.read_ledger("alice"))
        assert ledger is not None and ledger.record.sessions == [new]
        assert runner.run(store.read_sessions([old, new])).keys() == {new}

    def test_create_session_on_a_changed_ledger_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        kept, h = token_hash(), token_hash()
        runner.run(store.create_session(kept, session_record(alice.record), user=None))
        base = runner.run(store.create_ledger("alice", LedgerRecord(user_id="u-alice", sessions=[])))
        first = LedgerChange("alice", LedgerRecord(user_id="u-alice", sessions=[kept]), base=base)
        runner.run(store.create_session(token_hash(), session_record(alice.record), user=None, ledger=first))
        stale = LedgerChange("alice", LedgerRecord(user_id="u-alice", sessions=[h]), base=base, evict=(kept,))
        with pytest.raises(PreconditionFailed):
            runner.run(store.create_session(h, session_record(alice.record), user=alice, ledger=stale))
        assert runner.run(store.read_sessions([kept, h])).keys() == {kept}
        ledger = runner.run(store.read_ledger("alice"))
        assert ledger is not None and ledger.record.sessions == [kept]

    def test_a_forced_ledger_change_needs_no_base(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        runner.run(store.create_ledger("alice", LedgerRecord(user_id="u-alice", sessions=["x" * 64])))
        h = token_hash()
        change = LedgerChange("alice", LedgerRecord(user_id="u-alice", sessions=[h]), base=None, force=True)
        runner.run(store.create_session(h, session_record(alice.record), user=alice, ledger=change))
        ledger = runner.run(store.read_ledger("alice"))
        assert ledger is not None and ledger.record.sessions == [h]

    def test_list_sessions_unordered_returns_every_session_of_the_user(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        mine = {token_hash(): session_record(alice.record, created_at=NOW - timedelta(minutes=i)) for i in range(3)}
        for h, record in mine.items():
            runner.run(store.create_session(h, record, user=None))
        runner.run(store.create_session(token_hash(), session_record(user_record("bob")), user=None))
        assert dict(runner.run(store.list_sessions(alice.record.user_id, ordered=False))) == mine

    def test_reserve_and_read_ledger_counts_and_reads_the_ledger(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k = key()
        made = runner.run(store.create_ledger("alice", LedgerRecord(user_id="u-alice")))
        reservation, ledger = runner.run(store.reserve_and_read_ledger(k, NOW, EXPIRES, "alice"))
        assert (reservation.count, ledger) == (1, made)
        reservation, ledger = runner.run(store.reserve_and_read_ledger(k, NOW, EXPIRES, "nobody"))
        assert (reservation.count, ledger) == (2, None)

    def test_reserve_and_read_login_with_the_ledger_counts_and_reads_user_and_ledger(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k = key()
        made = runner.run(store.create_ledger("alice", LedgerRecord(user_id="u-alice")))
        (reservation,), user, _, ledger = runner.run(
            store.reserve_and_read_login([(k, EXPIRES)], NOW, "alice", None, with_ledger=True)
        )
        assert (reservation.count, user, ledger) == (1, alice, made)
        (reservation,), user, _, ledger = runner.run(
            store.reserve_and_read_login([(k, EXPIRES)], NOW, "nobody", None, with_ledger=True)
        )
        assert (reservation.count, user, ledger) == (2, None, None)

    def test_read_attempts_does_not_count(self, store: Store, runner: asyncio.Runner) -> None:
        k = key()
        assert runner.run(store.read_attempts(k)) is None
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        assert runner.run(store.read_attempts(k)) == reservation
        assert runner.run(store.read_attempts(k)) == reservation

    # --- pages and the admin's sweeps (issue 14) ----------------------------------------------

    def test_list_sessions_pages_in_a_total_order_when_timestamps_tie(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        # Five sessions, four of them created in the same microsecond: only the public id tells them apart.
        made = [(token_hash(), session_record(alice.record)) for _ in range(4)]
        made.append((token_hash(), session_record(alice.record, created_at=NOW + timedelta(seconds=1))))
        for h, record in made:
            runner.run(store.create_session(h, record, user=alice))
        expected = sorted(made, key=lambda pair: (pair[1].created_at, pair[1].public_id), reverse=True)
        assert runner.run(store.list_sessions(alice.record.user_id)) == expected

        seen: list[tuple[str, SessionRecord]] = []
        after: tuple[datetime, str] | None = None
        while True:
            page = runner.run(store.list_sessions(alice.record.user_id, limit=2, after=after))
            assert len(page) <= 2
            seen += page
            if len(page) < 2:
                break
            after = (page[-1][1].created_at, page[-1][1].public_id)
        assert seen == expected  # none skipped, none repeated

    def test_list_users_and_usernames_page_in_username_order(self, store: Store, runner: asyncio.Runner) -> None:
        names = ["carol", "alice", "dave", "bob", "erin"]
        for name in names:
            runner.run(store.create_user(user_record(name)))
        first = runner.run(store.list_users(2))
        assert [u.username for u in first] == ["alice", "bob"]
        assert first[0] == user_record("alice")
        assert [u.username for u in runner.run(store.list_users(10, "bob"))] == ["carol", "dave", "erin"]
        assert runner.run(store.list_usernames(3)) == ["alice", "bob", "carol"]
        assert runner.run(store.list_usernames(3, "carol")) == ["dave", "erin"]
        assert runner.run(store.list_usernames(3, "erin")) == []

    def test_read_users_returns_those_that_exist(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        assert runner.run(store.read_users(["alice", "nobody", "alice"])) == {"alice": alice.record}
        assert runner.run(store.read_users([])) == {}

    def test_bump_epochs_adds_one_to_each_and_creates_no_user(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        runner.run(store.create_user(user_record("bob", auth_epoch=4)))
        assert runner.run(store.bump_epochs(["alice", "ghost", "bob"], LATER)) == 2
        users = runner.run(store.read_users(["alice", "bob", "ghost"]))
        assert users["alice"] == alice.record.model_copy(update={"auth_epoch": 1, "updated_at": LATER})
        assert (users["bob"].auth_epoch, users["bob"].updated_at) == (5, LATER)
        assert "ghost" not in users and runner.run(store.read_user("ghost")) is None

    def test_scan_sessions_pages_every_users_sessions_in_key_order(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        made = [(token_hash(), session_record(alice.record)) for _ in range(3)]
        made += [(token_hash(), session_record(user_record("bob"))) for _ in range(2)]
        for h, record in made:
            runner.run(store.create_session(h, record, user=None))
        ordered = sorted(made)
        first = runner.run(store.scan_sessions(3))
        assert first == ordered[:3]
        assert runner.run(store.scan_sessions(3, first[-1][0])) == ordered[3:]

    def test_delete_sessions_deletes_those_keys_only(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        hashes = [token_hash() for _ in range(3)]
        for h in hashes:
            runner.run(store.create_session(h, session_record(alice.record), user=None))
        assert runner.run(store.delete_sessions([hashes[0], hashes[2], token_hash()])) == 3
        assert [k for k, _ in runner.run(store.list_sessions(alice.record.user_id))] == [hashes[1]]
        assert runner.run(store.delete_sessions([])) == 0

    def test_delete_username_sessions_deletes_every_session_naming_it(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        namesake = user_record("alice", user_id="u-earlier-alice")
        runner.run(store.create_session(token_hash(), session_record(alice.record), user=None))
        runner.run(store.create_session(token_hash(), session_record(namesake), user=None))
        kept = (token_hash(), session_record(user_record("bob")))
        runner.run(store.create_session(*kept, user=None))
        assert runner.run(store.delete_username_sessions("alice")) == 2
        assert runner.run(store.scan_sessions(10)) == [kept]
        assert runner.run(store.delete_username_sessions("alice")) == 0

    def test_delete_user_at_the_current_version_deletes_it(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        runner.run(store.delete_user(alice))
        assert runner.run(store.read_user("alice")) is None
        with pytest.raises(PreconditionFailed):  # gone: the version cannot match
            runner.run(store.delete_user(alice))
        assert runner.run(store.read_user("alice")) is None

    def test_delete_user_at_a_stale_version_raises_and_keeps_it(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        updated = runner.run(store.update_user(alice, {"display_name": "Changed"}))
        with pytest.raises(PreconditionFailed):
            runner.run(store.delete_user(alice))
        assert runner.run(store.read_user("alice")) == updated

    def test_delete_user_descendants_without_any_is_zero_user_or_not(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        assert runner.run(store.delete_user_descendants("alice")) == 0
        assert runner.run(store.read_user("alice")) == alice  # the user document itself is not below itself
        assert runner.run(store.delete_user_descendants("nobody")) == 0

    def test_delete_attempts_deletes_the_counter_and_is_idempotent(self, store: Store, runner: asyncio.Runner) -> None:
        k, other = key(), key()
        runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        kept = runner.run(store.reserve_attempt(other, NOW, EXPIRES))
        runner.run(store.delete_attempts(k))
        assert runner.run(store.read_attempts(k)) is None
        runner.run(store.delete_attempts(k))
        assert runner.run(store.read_attempts(other)) == kept


class TestFirestoreStore(StoreContract):
    """The contract on the Firestore emulator, one fresh project per test."""

    @pytest.fixture
    def store(self, project: str, runner: asyncio.Runner) -> Iterator[Store]:
        store = FirestoreStore(load_settings())
        yield store
        runner.run(store.close())
