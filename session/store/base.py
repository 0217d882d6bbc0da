"""The store's contract: its errors, the values it returns, and the ``Store`` Protocol the rules call.

Every rule lives outside the store; a backend implements these operations with the guarantees the
Protocol's docstrings state, and ``tests/test_store_contract.py`` holds the cases every backend passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

from session.events import EventRecord
from session.models import AttemptsRecord, DeviceRecord, LedgerRecord, SessionRecord, UserChange, UserRecord
from session.plan import Plan

R = TypeVar("R", bound=BaseModel)
# The account's ledger lives below the user's document: users/{username}/ledger/sessions.
LEDGER_COLLECTION = "ledger"
LEDGER_DOCUMENT = "sessions"
# The subcollection of a user document that holds its trusted devices (deleted with the user's subcollections).
DEVICES = "devices"
# The subcollection of a user document that holds the account's security events (deleted with the user).
EVENTS = "events"
# Documents per commit of a bulk write (Firestore allows 500 writes per commit; stay well below).
BATCH = 400


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreUnavailable(StoreError):
    """Firestore could not be reached, did not answer within the deadline, was overloaded or aborted the call.

    Transient: the client may retry (503 with Retry-After).
    """


class StoreRejected(StoreError):
    """Firestore refused the request itself (``InvalidArgument``, ``PermissionDenied``, ...).

    Retrying cannot help: the request or the deployment is wrong, so this is a
    500 and an ERROR log, never a 503. ``error`` is the library's class name.
    """

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        super().__init__(f"{error}: {message}")


class StoreCorrupt(StoreError):
    """A stored document does not match its record model.

    Says where (``collection``, ``document_id``) and what (``model``, and
    ``problems``: each failing field with pydantic's error type), never a
    value: pydantic's own message quotes the input, which may be a password hash.
    """

    def __init__(self, path: str, model: str, problems: list[str]) -> None:
        self.collection, _, self.document_id = path.rpartition("/")
        self.model = model
        self.problems = problems
        super().__init__(f"document {path} does not match {model}: {', '.join(problems)}")


class AlreadyExists(StoreError):
    """A create found the document already there."""


class PreconditionFailed(StoreError):
    """The document changed (or vanished) since it was read."""


@dataclass(frozen=True, slots=True)
class Versioned(Generic[R]):
    """A record with the update time it was read at, for precondition writes."""

    record: R
    update_time: datetime


@dataclass(frozen=True, slots=True)
class CountedGuess:
    """One guess counted on a failed-login counter, as the commit that counted it returned.

    ``count`` is the counter's value after this guess (Firestore's transform result, so
    every request of a burst sees a different value), ``window_start`` the earliest
    guess since the counter last started, ``update_time`` the commit's time (for a
    precondition that nobody has counted since).
    """

    key: str
    count: int
    window_start: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class AccountView:
    """What one consistent read of an account returned (``Store.read_account``).

    ``sessions`` and ``counters`` hold those of the asked keys that exist.
    """

    user: Versioned[UserRecord] | None
    ledger: Versioned[LedgerRecord] | None
    sessions: dict[str, Versioned[SessionRecord]]
    device: Versioned[DeviceRecord] | None = None
    counters: dict[str, CountedGuess] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueryShape:
    """The index-relevant shape of a query the store ran (for the index check)."""

    collection: str
    equalities: tuple[str, ...]
    order_by: tuple[tuple[str, str], ...] = ()
    group: bool = False  # a collection-group query (every collection of that name, at any depth)


def counted_guess_of(key: str, found: Versioned[AttemptsRecord]) -> CountedGuess:
    """A counter as stored, as the ``CountedGuess`` a guess counted now would have seen."""
    record = found.record
    return CountedGuess(key, record.count, datetime.fromtimestamp(record.window_start, UTC), found.update_time)


class Store(Protocol):
    """What the session rules need from storage, and nothing more: persistence, no rules.

    Every rule (expiry, lockout windows, which sessions an account allows, when to
    retry) lives in ``session.service``. A backend implements these operations with
    the guarantees their docstrings state; ``tests/test_store_contract.py`` is the
    shared set of cases every backend must pass. ``FirestoreStore`` is the one backend.
    Failures are the store's own errors: ``StoreUnavailable`` (transient),
    ``StoreRejected``, ``StoreCorrupt``, and, where stated, ``AlreadyExists`` and
    ``PreconditionFailed``.
    """

    async def read_auth(
        self, username: str, token_hash: str
    ) -> tuple[Versioned[SessionRecord] | None, Versioned[UserRecord] | None]:
        """A session and a user, read together (one round trip, one consistent snapshot)."""
        ...

    async def read_user(self, username: str) -> Versioned[UserRecord] | None:
        """A user, with the version (update time) it was read at."""
        ...

    async def reserve_attempt(self, key: str, now: datetime, expires_at: datetime) -> CountedGuess:
        """Add one to counter ``key`` and return the value this call produced (atomic, never shared)."""
        ...

    async def reserve_attempts(self, counters: Sequence[tuple[str, datetime]], now: datetime) -> list[CountedGuess]:
        """``reserve_attempt`` on each ``(key, expires_at)`` in one atomic commit; the guesses in that order."""
        ...

    async def reserve_and_read_login(
        self, counters: Sequence[tuple[str, datetime]], now: datetime, username: str, device: str | None
    ) -> tuple[list[CountedGuess], AccountView]:
        """``reserve_attempts`` while the user, its ledger and (if ``device``) that device of it are read.

        One round trip; the counts are committed when this returns.
        """
        ...

    async def restart_attempts(self, guess: CountedGuess, now: datetime, expires_at: datetime) -> CountedGuess:
        """Reset the counter to 1 from ``now``, only if unchanged since ``guess``; else ``PreconditionFailed``."""
        ...

    async def read_counter(self, key: str) -> Versioned[AttemptsRecord] | None:
        """Counter ``key`` as stored, with the version it was read at (for a precondition)."""
        ...

    async def read_attempts(self, key: str) -> CountedGuess | None:
        """Counter ``key`` as it is now (its count, window start and version), without counting."""
        ...

    async def read_ledger(self, username: str) -> Versioned[LedgerRecord] | None:
        """The user's session ledger, with the version it was read at."""
        ...

    async def read_sessions(self, token_hashes: list[str]) -> dict[str, SessionRecord]:
        """The sessions of these keys that exist, by key (one round trip)."""
        ...

    async def list_sessions(
        self,
        user_id: str,
        *,
        limit: int | None = None,
        after: tuple[datetime, str] | None = None,
        ordered: bool = True,
    ) -> list[tuple[str, SessionRecord]]:
        """A user's session documents with their keys, newest first (expired ones too).

        ``ordered=False``: all of them in any order (a query that needs no composite index).

        The order is total: ``created_at`` descending, then ``public_id`` descending, so
        sessions sharing a timestamp are neither skipped nor repeated across pages.
        ``limit``: at most that many; ``after``: only those after the ``(created_at,
        public_id)`` position in that order (the last one of a previous page).
        """
        ...

    async def find_session(self, public_id: str) -> tuple[str, SessionRecord] | None:
        """The session with this public id, with its key."""
        ...

    async def create_user(self, record: UserRecord, ledger: LedgerRecord) -> None:
        """Insert a user with its ``ledger``, in one commit; ``AlreadyExists`` when the username is taken."""
        ...

    async def update_user(self, current: Versioned[UserRecord], changes: UserChange) -> Versioned[UserRecord]:
        """Apply ``changes`` only if the user is still at ``current``'s version; else ``PreconditionFailed``."""
        ...

    async def commit(self, plan: Plan) -> None:
        """Carry out every write of ``plan`` in one atomic commit, or none of them.

        ``AlreadyExists`` when a ``create`` found its document; ``PreconditionFailed`` when an
        ``update``, ``decrement`` or ``must_exist`` delete found none, or an ``unchanged_since``
        document had changed. Either way nothing was written.
        """
        ...

    async def read_account(
        self,
        username: str,
        *,
        sessions: Sequence[str] = (),
        device: str | None = None,
        counters: Sequence[str] = (),
    ) -> AccountView:
        """The user, its ledger, those ``sessions`` that exist, its device ``device`` and those ``counters``.

        One round trip, one consistent snapshot: a ledger read with a user is the ledger as it
        was when that user was read.
        """
        ...

    async def read_devices(self, username: str, device_hashes: Sequence[str]) -> dict[str, DeviceRecord]:
        """The user's devices of these hashes that exist, by hash (one round trip)."""
        ...

    async def touch_session(self, token_hash: str, last_seen_at: datetime, expires_at: datetime) -> bool:
        """Update a session's deadlines; False, writing nothing, when it no longer exists (never recreates it)."""
        ...

    async def delete_session(self, token_hash: str) -> None:
        """Delete one session; a missing one is not an error."""
        ...

    async def delete_user_sessions(self, user_id: str, keep: str | None = None, up_to_epoch: int | None = None) -> int:
        """Delete every session of a user but ``keep`` (with ``up_to_epoch``, only those at that epoch or older).

        Returns how many.
        """
        ...

    async def list_users(self, limit: int, after: str | None = None) -> list[UserRecord]:
        """At most ``limit`` users in username (document id) order, only those after ``after`` if given."""
        ...

    async def list_usernames(self, limit: int, after: str | None = None) -> list[str]:
        """``list_users``' usernames alone: no user document is parsed (a corrupt one does not stop a sweep)."""
        ...

    async def read_users(self, usernames: list[str]) -> dict[str, UserRecord]:
        """The users of ``usernames`` that exist, by username (one round trip)."""
        ...

    async def bump_epochs(self, usernames: list[str], now: datetime, events: Sequence[EventRecord] = ()) -> int:
        """Add one to the ``auth_epoch`` of each user (a server-side increment, no precondition).

        Sets ``updated_at`` to ``now``, and the ledger's ``changed_at`` in the same commit, so that
        a commit opening a session under the ledger's precondition fails. A user that does not
        exist (any more) is skipped, never created. Returns how many were bumped. Atomic per user, not across users.
        ``events``: at most one per user (by ``username``), created in that user's commit.
        """
        ...

    async def scan_sessions(self, limit: int, after: str | None = None) -> list[tuple[str, SessionRecord]]:
        """At most ``limit`` session documents of every user in key (document id) order, after key ``after``."""
        ...

    async def delete_sessions(self, keys: list[str]) -> int:
        """Delete these sessions (missing ones are not an error), in bounded batches; returns how many keys."""
        ...

    async def delete_username_sessions(self, username: str) -> int:
        """Delete every session document naming ``username``, whatever its user id; returns how many."""
        ...

    async def delete_user(self, current: Versioned[UserRecord]) -> None:
        """Delete the user document and its ledger, only if the user is still at ``current``'s version.

        ``PreconditionFailed`` otherwise. From then on no commit that opens a session (each carries a
        precondition on the ledger) can write below the user. The other subcollections are left
        alone: ``delete_user_descendants`` removes them.
        """
        ...

    async def delete_user_descendants(self, username: str) -> int:
        """Delete every document in every subcollection (at any depth) under the user document ``username``.

        Works whether or not the user document itself exists. Returns how many were deleted.
        """
        ...

    async def delete_attempts(self, key: str) -> None:
        """Delete failed-login counter ``key``; a missing one is not an error."""
        ...

    async def list_devices(self, username: str) -> list[tuple[str, DeviceRecord]]:
        """Every device document below the user (trusted or not), with its key, in key order."""
        ...

    # --- security events (written only by the commits of the changes they record) ---

    async def list_events(
        self, username: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[EventRecord]:
        """Up to ``limit`` of the user's events after position ``after`` (``at``, id), newest first."""
        ...

    async def read_event(self, username: str, event_id: str) -> EventRecord | None:
        """One event of the user, if it exists."""
        ...

    async def pending_events(self, limit: int) -> list[EventRecord]:
        """Up to ``limit`` events of any user still ``published: false``, in ``at`` order within the page."""
        ...

    async def mark_published(self, events: Sequence[EventRecord]) -> int:
        """Mark ``events`` published; an event deleted meanwhile is skipped, never recreated. Returns how many."""
        ...

    async def close(self) -> None:
        """Release the running event loop's connection, if any."""
        ...
