"""The store contract: one set of cases that every ``session.store.Store`` backend must pass.

``StoreContract`` holds the cases; each asserts a guarantee that the ``Store``
Protocol's docstrings state (and, for ``commit``, those of ``session.plan.Write``),
through the Protocol's methods only, and nothing specific to one backend. A
backend's test class subclasses it and provides the ``store`` fixture
(flask-session's shared abstract test, with a fixture instead of abstract
methods). ``TestFirestoreStore`` runs the cases on the real emulator, one fresh
``demo-`` project per test.

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

from session import plan
from session.config import load_settings
from session.models import DeviceRecord, LedgerRecord, SessionRecord, UserChange, UserRecord
from session.plan import Doc, Plan, Write
from session.store import AlreadyExists, FirestoreStore, PreconditionFailed, Store, Versioned

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


def ledger_record(user: UserRecord, **changes: Any) -> LedgerRecord:
    return LedgerRecord(**{"user_id": user.user_id, **changes})


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
        "auth_time": created_at,
    }
    return SessionRecord(**{**fields, **changes})


def device_record(user: UserRecord, **changes: Any) -> DeviceRecord:
    fields: dict[str, Any] = {
        "user_id": user.user_id,
        "created_at": NOW,
        "expires_at": EXPIRES,
        "auth_epoch": user.auth_epoch,
    }
    return DeviceRecord(**{**fields, **changes})


def token_hash() -> str:
    return uuid.uuid4().hex * 2  # the shape of a sha256 hex digest


def key() -> str:
    return uuid.uuid4().hex


def opening(h: str, record: SessionRecord, *also: Write | None, ledger: Versioned[LedgerRecord] | None = None) -> Plan:
    """A typical commit that opens session ``h``: the session, then (given the ledger as read) its entry
    in that ledger under the precondition that the ledger is unchanged since, then ``also``.

    Without ``ledger``, a plan that merely stores the session (a fixture for the other cases).
    """
    entry = None
    if ledger is not None:
        sessions = [*ledger.record.sessions, h]
        entry = plan.update(Doc.ledger(record.username), {"sessions": sessions}, ledger.update_time)
    return Plan().then(plan.create(Doc.session(h), record), entry, *also)


class StoreContract:
    """The cases. A subclass provides ``store``: a ``Store`` on an empty database, closed afterwards."""

    @pytest.fixture
    def runner(self) -> Iterator[asyncio.Runner]:
        """One event loop for the whole test (a store may bind a connection to the loop that made it)."""
        with asyncio.Runner() as runner:
            yield runner

    @pytest.fixture
    def alice(self, store: Store, runner: asyncio.Runner) -> Versioned[UserRecord]:
        """User alice, created with an empty ledger, as read back with its version."""
        record = user_record()
        runner.run(store.create_user(record, ledger_record(record)))
        read = runner.run(store.read_user("alice"))
        assert read is not None
        return read

    @pytest.fixture
    def ledger(self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]) -> Versioned[LedgerRecord]:
        """Alice's ledger as ``create_user`` wrote it, with its version."""
        read = runner.run(store.read_ledger("alice"))
        assert read is not None
        return read

    # --- users -----------------------------------------------------------------------------

    def test_create_user_writes_the_user_and_its_ledger(self, store: Store, runner: asyncio.Runner) -> None:
        record = user_record(email="alice@example.com", auth_epoch=3)
        ledger = ledger_record(record, devices=[token_hash()], changed_at=NOW)
        runner.run(store.create_user(record, ledger))
        read = runner.run(store.read_user("alice"))
        assert read is not None
        assert read.record == record
        assert isinstance(read.update_time, datetime)
        stored = runner.run(store.read_ledger("alice"))
        assert stored is not None and stored.record == ledger
        assert runner.run(store.read_ledger("nobody")) is None

    def test_a_second_create_user_raises_already_exists_and_keeps_the_first_and_its_ledger(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        mallory = user_record(display_name="Mallory", password_hash="other", user_id="u-mallory")
        with pytest.raises(AlreadyExists):
            runner.run(store.create_user(mallory, ledger_record(mallory, sessions=[token_hash()])))
        assert runner.run(store.read_user("alice")) == alice
        assert runner.run(store.read_ledger("alice")) == ledger

    def test_read_user_of_a_missing_name_is_none(self, store: Store, runner: asyncio.Runner) -> None:
        assert runner.run(store.read_user("nobody")) is None

    def test_update_user_at_the_current_version_applies_and_returns_a_newer_version(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        updated = runner.run(store.update_user(alice, UserChange(display_name="Alice A.", version=2)))
        assert updated.record == alice.record.model_copy(update={"display_name": "Alice A.", "version": 2})
        assert updated.update_time > alice.update_time
        assert runner.run(store.read_user("alice")) == updated
        assert runner.run(store.read_ledger("alice")) == ledger  # a profile edit leaves the ledger alone

    def test_update_user_at_a_stale_version_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        updated = runner.run(store.update_user(alice, UserChange(display_name="First")))
        with pytest.raises(PreconditionFailed):
            runner.run(store.update_user(alice, UserChange(display_name="Second", email="x@example.com")))
        assert runner.run(store.read_user("alice")) == updated

    def test_update_user_of_a_vanished_user_raises_and_creates_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        ghost = Versioned(user_record("ghost"), alice.update_time)
        with pytest.raises(PreconditionFailed):
            runner.run(store.update_user(ghost, UserChange(display_name="Boo")))
        assert runner.run(store.read_user("ghost")) is None

    # --- commit: a plan carried out atomically ----------------------------------------------

    def test_an_opening_plan_creates_the_session_and_its_ledger_entry_and_keeps_the_user_version(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        h, record = token_hash(), session_record(alice.record)
        runner.run(store.commit(opening(h, record, ledger=ledger)))
        session, user = runner.run(store.read_auth("alice", h))
        assert session is not None and session.record == record
        assert user == alice  # the user is not written: its version does not move
        after = runner.run(store.read_ledger("alice"))
        assert after is not None and after.record == ledger.record.model_copy(update={"sessions": [h]})
        assert after.update_time > ledger.update_time

    def test_a_plan_that_only_creates_checks_no_user(self, store: Store, runner: asyncio.Runner) -> None:
        h, record = token_hash(), session_record(user_record("carol"))
        runner.run(store.commit(opening(h, record)))
        session, user = runner.run(store.read_auth("carol", h))
        assert session is not None and session.record == record
        assert user is None

    def test_a_create_of_an_existing_session_raises_already_exists_and_writes_nothing_else(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        h, first = token_hash(), session_record(alice.record)
        runner.run(store.commit(opening(h, first)))
        k, device = key(), token_hash()
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        again = opening(
            h,
            session_record(alice.record, user_agent="other"),
            plan.update(Doc.user("alice"), UserChange(display_name="Changed"), alice.update_time),
            plan.put(Doc.device("alice", device), device_record(alice.record)),
            plan.delete(Doc.counter(k), reservation.update_time),
            ledger=ledger,
        )
        with pytest.raises(AlreadyExists):
            runner.run(store.commit(again))
        assert runner.run(store.read_sessions([h])) == {h: first}
        assert runner.run(store.read_user("alice")) == alice
        assert runner.run(store.read_ledger("alice")) == ledger
        assert runner.run(store.read_devices("alice", [device])) == {}
        assert runner.run(store.read_attempts(k)) == reservation

    def test_an_update_with_unchanged_since_at_a_stale_version_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        updated = runner.run(store.update_user(alice, UserChange(auth_epoch=1)))
        h = token_hash()
        stale = plan.update(Doc.user("alice"), UserChange(version=9), alice.update_time)
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(opening(h, session_record(alice.record), stale)))
        assert runner.run(store.read_auth("alice", h)) == (None, updated)

    def test_an_opening_plan_applies_a_user_change_with_it(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        h, record = token_hash(), session_record(alice.record, auth_epoch=1)
        change = UserChange(auth_epoch=1, password_hash="new")
        runner.run(store.commit(opening(h, record, plan.update(Doc.user("alice"), change), ledger=ledger)))
        session, user = runner.run(store.read_auth("alice", h))
        assert session is not None and session.record == record
        assert user is not None
        assert user.record == alice.record.model_copy(update={"auth_epoch": 1, "password_hash": "new"})
        assert user.update_time > alice.update_time

    def test_updates_at_the_current_versions_apply_together(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h = token_hash()
        runner.run(store.commit(opening(h, session_record(alice.record))))
        session, _ = runner.run(store.read_auth("alice", h))
        assert session is not None
        both = Plan().then(
            plan.update(Doc.user("alice"), UserChange(auth_epoch=1), alice.update_time),
            plan.update(Doc.session(h), {"auth_epoch": 1}, session.update_time),
        )
        runner.run(store.commit(both))
        session, user = runner.run(store.read_auth("alice", h))
        assert user is not None and user.record.auth_epoch == 1
        assert session is not None and session.record.auth_epoch == 1

    def test_an_update_of_a_missing_session_raises_and_changes_nothing_else(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        missing = token_hash()
        both = Plan().then(
            plan.update(Doc.user("alice"), UserChange(auth_epoch=1), alice.update_time),
            plan.update(Doc.session(missing), {"auth_epoch": 1}),
        )
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(both))
        assert runner.run(store.read_auth("alice", missing)) == (None, alice)

    def test_an_update_of_a_missing_user_or_ledger_never_creates_it(self, store: Store, runner: asyncio.Runner) -> None:
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(Plan().then(plan.update(Doc.user("ghost"), UserChange(display_name="Boo")))))
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(Plan().then(plan.update(Doc.ledger("ghost"), {"sessions": [token_hash()]}))))
        assert runner.run(store.read_user("ghost")) is None
        assert runner.run(store.read_ledger("ghost")) is None

    def test_parallel_openings_under_one_ledger_version_land_exactly_one(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        hashes = [token_hash() for _ in range(8)]

        async def logins() -> list[BaseException | None]:
            plans = [opening(h, session_record(alice.record), ledger=ledger) for h in hashes]
            return list(await asyncio.gather(*(store.commit(p) for p in plans), return_exceptions=True))

        outcomes = runner.run(logins())
        landed = [h for h, outcome in zip(hashes, outcomes, strict=True) if outcome is None]
        assert len(landed) == 1
        assert all(isinstance(o, PreconditionFailed) for o in outcomes if o is not None)
        assert [h for h, _ in runner.run(store.list_sessions(alice.record.user_id))] == landed
        after = runner.run(store.read_ledger("alice"))
        assert after is not None and after.record.sessions == landed
        assert runner.run(store.read_user("alice")) == alice

    def test_an_opening_plan_on_a_changed_ledger_raises_and_writes_nothing(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        kept, h = token_hash(), token_hash()
        runner.run(store.commit(opening(kept, session_record(alice.record), ledger=ledger)))
        stale = opening(h, session_record(alice.record), plan.delete(Doc.session(kept)), ledger=ledger)
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(stale))
        assert runner.run(store.read_sessions([kept, h])).keys() == {kept}
        after = runner.run(store.read_ledger("alice"))
        assert after is not None and after.record.sessions == [kept]

    def test_an_opening_plan_evicts_sessions_in_the_same_commit(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        old, new = token_hash(), token_hash()
        runner.run(store.commit(opening(old, session_record(alice.record), ledger=ledger)))
        base = runner.run(store.read_ledger("alice"))
        assert base is not None
        evicting = Plan().then(
            plan.create(Doc.session(new), session_record(alice.record)),
            plan.update(Doc.ledger("alice"), {"sessions": [new]}, base.update_time),
            plan.delete(Doc.session(old)),
        )
        runner.run(store.commit(evicting))
        after = runner.run(store.read_ledger("alice"))
        assert after is not None and after.record.sessions == [new]
        assert runner.run(store.read_sessions([old, new])).keys() == {new}

    def test_a_put_overwrites_whatever_was_there(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, device = token_hash(), token_hash()
        forced = ledger_record(alice.record, sessions=[h], devices=[device])
        runner.run(store.commit(Plan().then(plan.put(Doc.ledger("alice"), forced))))  # no base needed
        stored = runner.run(store.read_ledger("alice"))
        assert stored is not None and stored.record == forced

        runner.run(store.commit(Plan().then(plan.put(Doc.device("alice", device), device_record(alice.record)))))
        renewed = device_record(alice.record, expires_at=EXPIRES + timedelta(days=1), auth_epoch=2)
        runner.run(
            store.commit(opening(h, session_record(alice.record), plan.put(Doc.device("alice", device), renewed)))
        )
        assert runner.run(store.read_devices("alice", [device])) == {device: renewed}

    def test_a_ledger_create_where_one_exists_raises_already_exists_and_writes_nothing_else(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        h = token_hash()
        made = opening(
            h,
            session_record(alice.record),
            plan.create(Doc.ledger("alice"), ledger_record(alice.record, sessions=[h])),
            plan.update(Doc.user("alice"), {"username": "alice"}),
        )
        with pytest.raises(AlreadyExists):
            runner.run(store.commit(made))
        assert runner.run(store.read_ledger("alice")) == ledger
        assert runner.run(store.read_auth("alice", h)) == (None, alice)

    def test_a_ledger_create_checked_against_a_deleted_user_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        runner.run(store.delete_user(alice))
        h = token_hash()
        made = opening(
            h,
            session_record(alice.record),
            plan.create(Doc.ledger("alice"), ledger_record(alice.record, sessions=[h])),
            plan.update(Doc.user("alice"), {"username": "alice"}),  # the user must still exist
        )
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(made))
        assert runner.run(store.read_ledger("alice")) is None
        assert runner.run(store.read_auth("alice", h)) == (None, None)

    def test_a_delete_with_unchanged_since_of_an_unchanged_counter_deletes_it(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        k, h = key(), token_hash()
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        clear = plan.delete(Doc.counter(k), reservation.update_time)
        runner.run(store.commit(opening(h, session_record(alice.record), clear, ledger=ledger)))
        assert runner.run(store.read_attempts(k)) is None
        assert runner.run(store.read_auth("alice", h))[0] is not None

    def test_a_delete_with_unchanged_since_of_a_counter_counted_since_raises_and_writes_nothing(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        k, h = key(), token_hash()
        first = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        second = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        clear = plan.delete(Doc.counter(k), first.update_time)
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(opening(h, session_record(alice.record), clear, ledger=ledger)))
        assert runner.run(store.read_attempts(k)) == second
        assert runner.run(store.read_auth("alice", h)) == (None, alice)
        assert runner.run(store.read_ledger("alice")) == ledger

    def test_a_decrement_takes_one_off_the_counter(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h = key(), token_hash()
        runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        runner.run(store.reserve_attempt(k, LATER, EXPIRES))
        runner.run(store.commit(opening(h, session_record(alice.record), plan.decrement(Doc.counter(k)))))
        after = runner.run(store.read_attempts(k))
        assert after is not None
        assert (after.count, after.window_start) == (1, NOW)
        assert runner.run(store.read_auth("alice", h))[0] is not None

    def test_a_decrement_of_a_gone_counter_raises_and_recreates_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, h = key(), token_hash()
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))
        runner.run(store.delete_attempts(k))
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(opening(h, session_record(alice.record), plan.decrement(Doc.counter(k)))))
        assert runner.run(store.read_attempts(k)) is None  # not recreated
        assert runner.run(store.read_auth("alice", h)) == (None, alice)
        assert reservation.count == 1

    def test_both_counters_are_given_back_in_one_commit(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        k, other, h = key(), key(), token_hash()
        mine, _ = runner.run(store.reserve_attempts([(k, EXPIRES), (other, EXPIRES)], NOW))
        runner.run(store.reserve_attempt(other, LATER, EXPIRES))
        give_back = (plan.delete(Doc.counter(k), mine.update_time), plan.decrement(Doc.counter(other)))
        runner.run(store.commit(opening(h, session_record(alice.record), *give_back)))
        assert runner.run(store.read_attempts(k)) is None
        after = runner.run(store.read_attempts(other))
        assert after is not None and after.count == 1
        assert runner.run(store.read_auth("alice", h))[0] is not None

    def test_a_must_exist_delete_deletes_the_replaced_session_in_the_same_commit(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        old, new = token_hash(), token_hash()
        runner.run(store.commit(opening(old, session_record(alice.record))))
        replace = plan.delete(Doc.session(old), must_exist=True)
        runner.run(store.commit(opening(new, session_record(alice.record), replace)))
        assert runner.run(store.read_auth("alice", old)) == (None, alice)
        assert runner.run(store.read_auth("alice", new))[0] is not None

    def test_a_must_exist_delete_of_a_gone_session_raises_and_writes_nothing(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        old, first, second = token_hash(), token_hash(), token_hash()
        runner.run(store.commit(opening(old, session_record(alice.record))))
        replace = plan.delete(Doc.session(old), must_exist=True)
        runner.run(store.commit(opening(first, session_record(alice.record), replace)))
        with pytest.raises(PreconditionFailed):  # a second rotation of the same session
            runner.run(store.commit(opening(second, session_record(alice.record), replace)))
        assert runner.run(store.read_auth("alice", second)) == (None, alice)
        assert runner.run(store.read_auth("alice", old)) == (None, alice)  # not recreated

    def test_a_plain_delete_of_a_missing_document_is_not_an_error(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h = token_hash()
        gone = (
            plan.delete(Doc.session(token_hash())),
            plan.delete(Doc.counter(key())),
            plan.delete(Doc.device("alice", token_hash())),
        )
        runner.run(store.commit(opening(h, session_record(alice.record), *gone)))
        assert runner.run(store.read_auth("alice", h))[0] is not None

    @pytest.mark.parametrize("failing", ["create_existing", "stale_update", "gone_decrement", "gone_must_exist"])
    @pytest.mark.parametrize("last", [True, False], ids=["failing_last", "failing_first"])
    def test_the_whole_plan_is_atomic_one_failing_write_leaves_every_other_undone(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
        failing: str,
        last: bool,
    ) -> None:
        existing, replaced, h, device = token_hash(), token_hash(), token_hash(), token_hash()
        runner.run(store.commit(opening(existing, session_record(alice.record))))
        runner.run(store.commit(opening(replaced, session_record(alice.record))))
        touched = runner.run(store.read_account("alice", sessions=[existing])).sessions[existing]
        assert runner.run(store.touch_session(existing, LATER, EXPIRES)) is True
        cleared, released, gone = key(), key(), key()
        mine = runner.run(store.reserve_attempt(cleared, NOW, EXPIRES))
        runner.run(store.reserve_attempts([(released, EXPIRES), (gone, EXPIRES)], NOW))
        runner.run(store.reserve_attempt(released, NOW, EXPIRES))
        runner.run(store.delete_attempts(gone))
        failures: dict[str, tuple[Write, type[Exception]]] = {
            "create_existing": (plan.create(Doc.session(existing), session_record(alice.record)), AlreadyExists),
            "stale_update": (
                plan.update(Doc.session(existing), {"user_agent": "x"}, touched.update_time),
                PreconditionFailed,
            ),
            "gone_decrement": (plan.decrement(Doc.counter(gone)), PreconditionFailed),
            "gone_must_exist": (plan.delete(Doc.session(token_hash()), must_exist=True), PreconditionFailed),
        }
        write, error = failures[failing]
        others = opening(
            h,
            session_record(alice.record),
            plan.update(Doc.user("alice"), UserChange(display_name="Changed"), alice.update_time),
            plan.put(Doc.device("alice", device), device_record(alice.record)),
            plan.delete(Doc.counter(cleared), mine.update_time),
            plan.decrement(Doc.counter(released)),
            plan.delete(Doc.session(replaced), must_exist=True),
            ledger=ledger,
        )
        whole = others.then(write) if last else Plan((write,)) + others

        def account() -> Any:
            return runner.run(
                store.read_account(
                    "alice", sessions=[existing, replaced, h], device=device, counters=[cleared, released, gone]
                )
            )

        before = account()
        assert before.sessions.keys() == {existing, replaced} and before.device is None
        with pytest.raises(error):
            runner.run(store.commit(whole))
        assert account() == before
        assert runner.run(store.read_user("alice")) == alice
        assert runner.run(store.read_ledger("alice")) == ledger

    # --- touch and delete ------------------------------------------------------------------

    def test_touch_session_updates_its_deadlines(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, record = token_hash(), session_record(alice.record)
        runner.run(store.commit(opening(h, record)))
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
        runner.run(store.commit(opening(h, session_record(alice.record))))
        runner.run(store.delete_session(h))
        assert runner.run(store.touch_session(h, LATER, EXPIRES)) is False
        assert runner.run(store.read_auth("alice", h))[0] is None
        assert runner.run(store.list_sessions(alice.record.user_id)) == []

    def test_delete_session_is_idempotent(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, kept = token_hash(), token_hash()
        runner.run(store.commit(opening(h, session_record(alice.record))))
        runner.run(store.commit(opening(kept, session_record(alice.record))))
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
            runner.run(store.commit(opening(hashes[name], record)))

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
            runner.run(store.commit(opening(h, record)))
        runner.run(store.commit(opening(token_hash(), session_record(user_record("bob")))))

        listed = runner.run(store.list_sessions(alice.record.user_id))
        assert listed == sorted(made, key=lambda pair: pair[1].created_at, reverse=True)
        assert runner.run(store.list_sessions("u-nobody")) == []

    def test_list_sessions_unordered_returns_every_session_of_the_user(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        mine = {token_hash(): session_record(alice.record, created_at=NOW - timedelta(minutes=i)) for i in range(3)}
        for h, record in mine.items():
            runner.run(store.commit(opening(h, record)))
        runner.run(store.commit(opening(token_hash(), session_record(user_record("bob")))))
        assert dict(runner.run(store.list_sessions(alice.record.user_id, ordered=False))) == mine

    def test_find_session_by_public_id(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        made = [(token_hash(), session_record(alice.record)) for _ in range(3)]
        for h, record in made:
            runner.run(store.commit(opening(h, record)))
        assert runner.run(store.find_session(made[1][1].public_id)) == made[1]
        assert runner.run(store.find_session(uuid.uuid4().hex)) is None

    def test_read_auth_of_missing_documents_is_none_none(self, store: Store, runner: asyncio.Runner) -> None:
        assert runner.run(store.read_auth("nobody", token_hash())) == (None, None)

    def test_read_sessions_returns_those_that_exist(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, missing = token_hash(), token_hash()
        record = session_record(alice.record)
        runner.run(store.commit(opening(h, record)))
        assert runner.run(store.read_sessions([h, missing])) == {h: record}
        assert runner.run(store.read_sessions([])) == {}

    # --- read_account and read_devices ------------------------------------------------------

    def test_read_account_reads_the_user_ledger_sessions_device_and_counters(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        h, missing, device, k, no_counter = token_hash(), token_hash(), token_hash(), key(), key()
        record, trusted = session_record(alice.record), device_record(alice.record, auth_epoch=None)
        runner.run(store.commit(opening(h, record, plan.put(Doc.device("alice", device), trusted), ledger=ledger)))
        reservation = runner.run(store.reserve_attempt(k, NOW, EXPIRES))

        view = runner.run(store.read_account("alice", sessions=[h, missing], device=device, counters=[k, no_counter]))
        assert view.user == alice
        assert view.ledger == runner.run(store.read_ledger("alice"))
        assert view.ledger is not None and view.ledger.record.sessions == [h]
        session, _ = runner.run(store.read_auth("alice", h))
        assert view.sessions == {h: session}
        assert view.device is not None and view.device.record == trusted
        assert isinstance(view.device.update_time, datetime)
        assert view.counters == {k: reservation}

    def test_read_account_of_what_is_missing_or_not_asked_for_is_none_or_empty(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        h, device, k = token_hash(), token_hash(), key()
        runner.run(store.commit(opening(h, session_record(alice.record))))
        runner.run(store.commit(Plan().then(plan.put(Doc.device("alice", device), device_record(alice.record)))))
        runner.run(store.reserve_attempt(k, NOW, EXPIRES))

        unasked = runner.run(store.read_account("alice"))
        assert (unasked.user, unasked.sessions, unasked.device, unasked.counters) == (alice, {}, None, {})
        assert unasked.ledger is not None

        nobody = runner.run(store.read_account("nobody", sessions=[token_hash()], device=device, counters=[key()]))
        assert (nobody.user, nobody.ledger, nobody.sessions, nobody.device, nobody.counters) == (
            None,
            None,
            {},
            None,
            {},
        )
        # A device is read below the user named: alice's device is not bob's.
        runner.run(store.create_user(user_record("bob"), ledger_record(user_record("bob"))))
        assert runner.run(store.read_account("bob", device=device)).device is None

    def test_read_account_is_one_consistent_snapshot(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        """Each commit writes the user's ``version`` and the ledger's ``changed_at`` together; every read pairs them."""
        rounds = 12

        async def race() -> list[Any]:
            async def writer() -> None:
                for i in range(2, rounds + 2):  # version 1 is the created user's (no changed_at)
                    both = Plan().then(
                        plan.update(Doc.user("alice"), UserChange(version=i)),
                        plan.update(Doc.ledger("alice"), {"changed_at": NOW + timedelta(seconds=i)}),
                    )
                    await store.commit(both)

            async def reader() -> list[Any]:
                return [await store.read_account("alice") for _ in range(rounds)]

            _, *views = await asyncio.gather(writer(), reader(), reader())
            return [v for batch in views for v in batch]

        for view in runner.run(race()):
            assert view.user is not None and view.ledger is not None
            version = view.user.record.version
            expected = None if version == 1 else NOW + timedelta(seconds=version)
            assert view.ledger.record.changed_at == expected
        final = runner.run(store.read_account("alice"))
        assert final.user is not None and final.user.record.version == rounds + 1

    def test_read_devices_returns_that_users_devices_that_exist(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        mine, old, theirs, missing = token_hash(), token_hash(), token_hash(), token_hash()
        bob = user_record("bob")
        current, legacy = device_record(alice.record, auth_epoch=2), device_record(alice.record, auth_epoch=None)
        puts = Plan().then(
            plan.put(Doc.device("alice", mine), current),
            plan.put(Doc.device("alice", old), legacy),
            plan.put(Doc.device("bob", theirs), device_record(bob)),
        )
        runner.run(store.commit(puts))
        found = runner.run(store.read_devices("alice", [mine, old, theirs, missing]))
        assert found == {mine: current, old: legacy}
        assert found[old].auth_epoch is None
        assert runner.run(store.read_devices("alice", [])) == {}
        assert runner.run(store.read_devices("nobody", [mine])) == {}

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

    def test_reserve_and_read_login_of_one_counter_counts_and_reads_the_user_and_the_ledger(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        k = key()
        (reservation,), view = runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "alice", None))
        assert (view.user, view.ledger, view.device, view.sessions, view.counters) == (alice, ledger, None, {}, {})
        assert (reservation.key, reservation.count, reservation.window_start) == (k, 1, NOW)
        assert runner.run(store.read_attempts(k)) == reservation  # committed when it returned

        (reservation,), view = runner.run(store.reserve_and_read_login([(k, EXPIRES)], LATER, "nobody", None))
        assert (view.user, view.ledger, view.device) == (None, None, None)
        assert (reservation.count, reservation.window_start) == (2, NOW)

    def test_reserve_and_read_login_reads_the_ledger_as_stored_now(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        h = token_hash()
        runner.run(store.commit(opening(h, session_record(alice.record), ledger=ledger)))
        _, view = runner.run(store.reserve_and_read_login([(key(), EXPIRES)], NOW, "alice", None))
        assert view.ledger == runner.run(store.read_ledger("alice"))
        assert view.ledger is not None and view.ledger.record.sessions == [h]

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
        runner.run(
            store.commit(opening(h, session_record(alice.record), plan.put(Doc.device("alice", device), record)))
        )
        (reservation,), view = runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "alice", device))
        assert view.user is not None and view.user.record == alice.record
        assert view.device is not None and view.device.record == record
        assert (reservation.key, reservation.count, reservation.window_start) == (k, 1, NOW)
        assert runner.run(store.read_attempts(k)) == reservation  # committed when it returned
        # Another user's device, an unknown one, none asked for: no device.
        bob = user_record("bob")
        runner.run(store.create_user(bob, ledger_record(bob)))
        assert runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "bob", device))[1].device is None
        assert runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "alice", token_hash()))[1].device is None
        reservations, view = runner.run(store.reserve_and_read_login([(k, EXPIRES)], NOW, "nobody", None))
        assert (reservations[0].count, view.user, view.ledger, view.device) == (4, None, None, None)

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
            runner.run(store.commit(opening(h, record)))
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
            record = user_record(name)
            runner.run(store.create_user(record, ledger_record(record)))
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

    def test_bump_epochs_adds_one_to_each_sets_the_ledgers_changed_at_and_creates_no_user(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        bob = user_record("bob", auth_epoch=4)
        bobs_ledger = ledger_record(bob, sessions=[token_hash()], devices=[token_hash()])
        runner.run(store.create_user(bob, bobs_ledger))
        assert runner.run(store.bump_epochs(["alice", "ghost", "bob"], LATER)) == 2
        users = runner.run(store.read_users(["alice", "bob", "ghost"]))
        assert users["alice"] == alice.record.model_copy(update={"auth_epoch": 1, "updated_at": LATER})
        assert (users["bob"].auth_epoch, users["bob"].updated_at) == (5, LATER)
        # The ledgers' changed_at is set, their other fields kept (a merge, not a replacement).
        after = runner.run(store.read_ledger("alice"))
        assert after is not None and after.record == ledger.record.model_copy(update={"changed_at": LATER})
        bobs = runner.run(store.read_ledger("bob"))
        assert bobs is not None and bobs.record == bobs_ledger.model_copy(update={"changed_at": LATER})
        # Nothing for a user that does not exist: neither the user nor a ledger below it.
        assert "ghost" not in users and runner.run(store.read_user("ghost")) is None
        assert runner.run(store.read_ledger("ghost")) is None

    def test_bump_epochs_makes_an_opening_under_the_ledger_read_before_fail(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        assert runner.run(store.bump_epochs(["alice"], LATER)) == 1
        h = token_hash()
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(opening(h, session_record(alice.record), ledger=ledger)))
        assert runner.run(store.read_sessions([h])) == {}

    def test_bump_epochs_of_a_user_without_a_ledger_gives_it_one_with_changed_at(
        self, store: Store, runner: asyncio.Runner
    ) -> None:
        # A user from before ledgers: only a plan can store a user without one.
        runner.run(store.commit(Plan().then(plan.create(Doc.user("old"), user_record("old")))))
        assert runner.run(store.bump_epochs(["old"], LATER)) == 1
        made = runner.run(store.read_ledger("old"))
        assert made is not None and made.record == LedgerRecord(changed_at=LATER)

    def test_scan_sessions_pages_every_users_sessions_in_key_order(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        made = [(token_hash(), session_record(alice.record)) for _ in range(3)]
        made += [(token_hash(), session_record(user_record("bob"))) for _ in range(2)]
        for h, record in made:
            runner.run(store.commit(opening(h, record)))
        ordered = sorted(made)
        first = runner.run(store.scan_sessions(3))
        assert first == ordered[:3]
        assert runner.run(store.scan_sessions(3, first[-1][0])) == ordered[3:]

    def test_delete_sessions_deletes_those_keys_only(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        hashes = [token_hash() for _ in range(3)]
        for h in hashes:
            runner.run(store.commit(opening(h, session_record(alice.record))))
        assert runner.run(store.delete_sessions([hashes[0], hashes[2], token_hash()])) == 3
        assert [k for k, _ in runner.run(store.list_sessions(alice.record.user_id))] == [hashes[1]]
        assert runner.run(store.delete_sessions([])) == 0

    def test_delete_username_sessions_deletes_every_session_naming_it(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        namesake = user_record("alice", user_id="u-earlier-alice")
        runner.run(store.commit(opening(token_hash(), session_record(alice.record))))
        runner.run(store.commit(opening(token_hash(), session_record(namesake))))
        kept = (token_hash(), session_record(user_record("bob")))
        runner.run(store.commit(opening(*kept)))
        assert runner.run(store.delete_username_sessions("alice")) == 2
        assert runner.run(store.scan_sessions(10)) == [kept]
        assert runner.run(store.delete_username_sessions("alice")) == 0

    def test_delete_user_at_the_current_version_deletes_it_and_its_ledger(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        device = token_hash()
        runner.run(store.commit(Plan().then(plan.put(Doc.device("alice", device), device_record(alice.record)))))
        runner.run(store.delete_user(alice))
        assert runner.run(store.read_user("alice")) is None
        assert runner.run(store.read_ledger("alice")) is None
        # The other subcollections are left to delete_user_descendants.
        assert runner.run(store.read_devices("alice", [device])).keys() == {device}
        with pytest.raises(PreconditionFailed):  # gone: the version cannot match
            runner.run(store.delete_user(alice))
        assert runner.run(store.read_user("alice")) is None

    def test_after_delete_user_no_opening_writes_below_the_user(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        runner.run(store.delete_user(alice))
        h, device = token_hash(), token_hash()
        late = opening(
            h,
            session_record(alice.record),
            plan.put(Doc.device("alice", device), device_record(alice.record)),
            ledger=ledger,
        )
        with pytest.raises(PreconditionFailed):
            runner.run(store.commit(late))
        assert runner.run(store.read_account("alice", sessions=[h], device=device)) == runner.run(
            store.read_account("nobody")
        )

    def test_delete_user_at_a_stale_version_raises_and_keeps_it_and_its_ledger(
        self,
        store: Store,
        runner: asyncio.Runner,
        alice: Versioned[UserRecord],
        ledger: Versioned[LedgerRecord],
    ) -> None:
        updated = runner.run(store.update_user(alice, UserChange(display_name="Changed")))
        with pytest.raises(PreconditionFailed):
            runner.run(store.delete_user(alice))
        assert runner.run(store.read_user("alice")) == updated
        assert runner.run(store.read_ledger("alice")) == ledger

    def test_delete_user_descendants_deletes_the_ledger_and_devices_but_not_the_user(
        self, store: Store, runner: asyncio.Runner, alice: Versioned[UserRecord]
    ) -> None:
        devices = [token_hash(), token_hash()]
        puts = (plan.put(Doc.device("alice", d), device_record(alice.record)) for d in devices)
        runner.run(store.commit(Plan().then(*puts)))
        assert runner.run(store.delete_user_descendants("alice")) == 3  # the ledger and two devices
        assert runner.run(store.read_user("alice")) == alice  # the user document itself is not below itself
        assert runner.run(store.read_ledger("alice")) is None
        assert runner.run(store.read_devices("alice", devices)) == {}
        assert runner.run(store.delete_user_descendants("alice")) == 0

    def test_delete_user_descendants_works_without_the_user_document(
        self, store: Store, runner: asyncio.Runner
    ) -> None:
        assert runner.run(store.delete_user_descendants("nobody")) == 0
        device = token_hash()
        runner.run(store.commit(Plan().then(plan.put(Doc.device("gone", device), device_record(user_record("gone"))))))
        assert runner.run(store.delete_user_descendants("gone")) == 1
        assert runner.run(store.read_devices("gone", [device])) == {}

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
