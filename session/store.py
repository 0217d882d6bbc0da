"""Everything that talks to Firestore, and nothing else does.

One ``AsyncClient`` per event loop, created lazily on first use and reused (a
gRPC channel belongs to the loop that made it). Every call runs under the
configured deadline with google-api-core's retry for transient errors; any
failure to reach Firestore becomes ``StoreUnavailable``. Records are validated
on the way in and out, and every write that must not resurrect or clobber a
document carries a precondition.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from session.config import Settings
from session.models import AttemptsRecord, DeviceRecord, LedgerRecord, SessionRecord, UserChange, UserRecord
from session.plan import Doc, Kind, Plan, Write

if TYPE_CHECKING:  # the client library is heavy: import it on first use only
    from google.cloud.firestore import AsyncClient
    from google.cloud.firestore_v1.async_collection import AsyncCollectionReference
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference
    from google.cloud.firestore_v1.base_document import DocumentSnapshot

R = TypeVar("R", bound=BaseModel)
# The session ledger of a user lives below the user's document: users/{username}/ledger/sessions.
LEDGER_COLLECTION = "ledger"
LEDGER_DOCUMENT = "sessions"
T = TypeVar("T")
# The subcollection of a user document that holds its trusted devices (deleted with the user's subcollections).
DEVICES = "devices"
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
class Reservation:
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
    counters: dict[str, Reservation] = field(default_factory=dict)


@dataclass(slots=True)
class OpCounts:
    """Firestore work done on behalf of one request (what is billed and what is waited for)."""

    round_trips: int = 0
    reads: int = 0
    writes: int = 0
    deletes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"round_trips": self.round_trips, "reads": self.reads, "writes": self.writes, "deletes": self.deletes}


# Set by the HTTP layer for each request; the store adds to it.
current_ops: contextvars.ContextVar[OpCounts | None] = contextvars.ContextVar("current_ops", default=None)


@dataclass(frozen=True, slots=True)
class QueryShape:
    """The index-relevant shape of a query the store ran (for the index check)."""

    collection: str
    equalities: tuple[str, ...]
    order_by: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Recorder:
    shapes: set[QueryShape] = field(default_factory=set)


def _count(round_trips: int = 0, reads: int = 0, writes: int = 0, deletes: int = 0) -> None:
    ops = current_ops.get()
    if ops is not None:
        ops.round_trips += round_trips
        ops.reads += reads
        ops.writes += writes
        ops.deletes += deletes


def _data(snap: DocumentSnapshot[Any]) -> dict[str, Any] | None:
    """A snapshot's fields without ``to_dict()``'s deep copy.

    The copy protects the snapshot from its caller; here the snapshot is
    dropped at once and validation builds new, frozen records from the data,
    so the copy would only cost time on every request.
    """
    data = getattr(snap, "_data", None)
    return data if isinstance(data, dict) else snap.to_dict()


def _reservation(key: str, found: Versioned[AttemptsRecord]) -> Reservation:
    """A counter as stored, as the ``Reservation`` a guess counted now would have seen."""
    record = found.record
    return Reservation(key, record.count, datetime.fromtimestamp(record.window_start, UTC), found.update_time)


def _parse(model: type[R], data: dict[str, Any] | None, path: str) -> R:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['type']}"
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        # Not chained: the ValidationError's text (and so any traceback that shows it) quotes the stored values.
        raise StoreCorrupt(path, model.__name__, problems) from None


def _translate(exc: BaseException) -> StoreError | None:
    """The store's own error for a failure of a Firestore call; ``None`` for anything else (let it through)."""
    from google.api_core import exceptions as gexc  # only on a failure: the success path imports nothing

    if isinstance(exc, gexc.AlreadyExists):
        return AlreadyExists(str(exc.message))
    if isinstance(exc, (gexc.FailedPrecondition, gexc.NotFound)):
        return PreconditionFailed(str(exc.message))
    if isinstance(
        exc,
        (
            TimeoutError,  # our deadline
            gexc.RetryError,  # the retry's deadline, over retryable errors only
            gexc.ServiceUnavailable,  # unreachable (gRPC UNAVAILABLE: connection refused or reset)
            gexc.GatewayTimeout,  # DeadlineExceeded
            gexc.BadGateway,
            gexc.TooManyRequests,  # ResourceExhausted: quota or overload
            gexc.Aborted,  # contention; retrying succeeds
            gexc.InternalServerError,  # Firestore asks clients to retry INTERNAL with backoff
        ),
    ):
        return StoreUnavailable(type(exc).__name__)
    if isinstance(exc, gexc.GoogleAPIError):  # InvalidArgument, PermissionDenied, ...: retrying cannot help
        return StoreRejected(type(exc).__name__, str(getattr(exc, "message", exc)))
    return None


class _Guard:
    """``async with``: bound a Firestore call by the deadline and translate its failures (``_translate``).

    A plain class rather than an ``@asynccontextmanager`` generator: it runs on every
    call, and the generator's machinery cost more than the work.
    """

    __slots__ = ("_deadline", "_timeout")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    async def __aenter__(self) -> None:
        self._timeout = asyncio.timeout(self._deadline)
        await self._timeout.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as expired:  # the deadline cancelled the call
            raise StoreUnavailable(type(expired).__name__) from expired
        if exc is not None:
            translated = _translate(exc)
            if translated is not None:
                raise translated from exc


@dataclass(frozen=True, slots=True)
class _Bound:
    """One event loop's client and its three collections, made once (the references are immutable)."""

    client: AsyncClient
    users: AsyncCollectionReference
    sessions: AsyncCollectionReference
    attempts: AsyncCollectionReference


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

    async def reserve_attempt(self, key: str, now: datetime, expires_at: datetime) -> Reservation:
        """Add one to counter ``key`` and return the value this call produced (atomic, never shared)."""
        ...

    async def reserve_attempts(self, counters: Sequence[tuple[str, datetime]], now: datetime) -> list[Reservation]:
        """``reserve_attempt`` on each ``(key, expires_at)`` in one atomic commit; the reservations in that order."""
        ...

    async def reserve_and_read_login(
        self, counters: Sequence[tuple[str, datetime]], now: datetime, username: str, device: str | None
    ) -> tuple[list[Reservation], AccountView]:
        """``reserve_attempts`` while the user, its ledger and (if ``device``) that device of it are read.

        One round trip; the counts are committed when this returns.
        """
        ...

    async def restart_attempts(self, reservation: Reservation, now: datetime, expires_at: datetime) -> Reservation:
        """Reset the counter to 1 from ``now``, only if unchanged since ``reservation``; else ``PreconditionFailed``."""
        ...

    async def read_attempts(self, key: str) -> Reservation | None:
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

    async def bump_epochs(self, usernames: list[str], now: datetime) -> int:
        """Add one to the ``auth_epoch`` of each user (a server-side increment, no precondition).

        Sets ``updated_at`` to ``now``, and the ledger's ``changed_at`` in the same commit, so that
        a commit opening a session under the ledger's precondition fails. A user that does not
        exist (any more) is skipped, never created. Returns how many were bumped. Atomic per user, not across users.
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

    async def close(self) -> None:
        """Release the running event loop's connection, if any."""
        ...


class FirestoreStore:
    """Users, sessions and failed-login counters in Firestore: the ``Store`` backend."""

    # Every query shape run by any instance: the index check reads this.
    recorded: ClassVar[_Recorder] = _Recorder()

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._deadline = settings.firestore_timeout_seconds
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bound] = weakref.WeakKeyDictionary()
        self._retry: Any = None
        self._write_retry: Any = None

    # --- plumbing -------------------------------------------------------------------

    def client(self) -> AsyncClient:
        """The client of the running event loop, created on first use."""
        return self._bound().client

    def _bound(self) -> _Bound:
        """The running event loop's client and collection references, created on first use."""
        loop = asyncio.get_running_loop()
        bound = self._clients.get(loop)
        if bound is None:
            from google.api_core import exceptions as gexc
            from google.api_core.retry import if_exception_type
            from google.api_core.retry_async import AsyncRetry
            from google.cloud.firestore import AsyncClient

            client = AsyncClient(project=self._settings.project, database=self._settings.database)
            settings = self._settings
            bound = _Bound(
                client,
                client.collection(settings.users_collection),
                client.collection(settings.sessions_collection),
                client.collection(settings.attempts_collection),
            )
            self._clients[loop] = bound
            if self._retry is None:
                backoff: dict[str, Any] = {
                    "initial": 0.05,
                    "maximum": 1.0,
                    "multiplier": 2.0,
                    "timeout": self._deadline,
                }
                # Reads are safe to repeat; a write is retried only when it surely never ran.
                self._retry = AsyncRetry(
                    predicate=if_exception_type(
                        gexc.ServiceUnavailable,
                        gexc.InternalServerError,
                        gexc.TooManyRequests,
                        gexc.DeadlineExceeded,
                        gexc.Aborted,
                    ),
                    **backoff,
                )
                self._write_retry = AsyncRetry(
                    predicate=if_exception_type(gexc.ServiceUnavailable, gexc.TooManyRequests),
                    **backoff,
                )
        return bound

    def _users(self, username: str) -> AsyncDocumentReference:
        return self._bound().users.document(username)

    def _sessions(self, token_hash: str) -> AsyncDocumentReference:
        return self._bound().sessions.document(token_hash)

    def _attempts(self, key: str) -> AsyncDocumentReference:
        return self._bound().attempts.document(key)

    def _device(self, username: str, device: str) -> AsyncDocumentReference:
        ref: AsyncDocumentReference = self._bound().users.document(username).collection(DEVICES).document(device)
        return ref

    def _ledger(self, username: str) -> AsyncDocumentReference:
        ref: AsyncDocumentReference = (
            self._bound().users.document(username).collection(LEDGER_COLLECTION).document(LEDGER_DOCUMENT)
        )
        return ref

    def _guard(self) -> _Guard:
        """Bound a Firestore call by the deadline and translate its failures (``async with``)."""
        return _Guard(self._deadline)

    async def _call(self, pending: Awaitable[T]) -> T:
        """Await one Firestore call under the deadline, translating its failures."""
        async with self._guard():
            return await pending

    async def _get_all(
        self, refs: list[AsyncDocumentReference], client: AsyncClient | None = None
    ) -> dict[str, DocumentSnapshot[Any]]:
        client = client or self.client()
        async with _Guard(self._deadline):
            snaps = [snap async for snap in client.get_all(refs, retry=self._retry, timeout=self._deadline)]
        _count(round_trips=1, reads=len(refs))
        return {snap.reference.path: snap for snap in snaps}

    async def _sessions_where(
        self, field: str, value: str, *, select: list[str] | None = None
    ) -> list[DocumentSnapshot[Any]]:
        """Every session document whose ``field`` equals ``value``, in any order (one round trip).

        An equality on one field alone, which Firestore's automatic single-field index
        serves: no composite index needed. ``select`` reads only those fields.
        """
        from google.cloud.firestore import FieldFilter

        collection = self._settings.sessions_collection
        query = self.client().collection(collection).where(filter=FieldFilter(field, "==", value))
        if select is not None:
            query = query.select(select)
        self.recorded.shapes.add(QueryShape(collection, (field,)))
        async with self._guard():
            snaps = await query.get(retry=self._retry, timeout=self._deadline)
        _count(round_trips=1, reads=max(1, len(snaps)))
        return list(snaps)

    def _precondition_time(self, update_time: datetime) -> Any:
        return self.client().write_option(last_update_time=update_time)

    # --- reads ------------------------------------------------------------------------

    async def read_auth(
        self, username: str, token_hash: str
    ) -> tuple[Versioned[SessionRecord] | None, Versioned[UserRecord] | None]:
        """The session and its user, in one round trip."""
        bound = self._bound()
        session_ref, user_ref = bound.sessions.document(token_hash), bound.users.document(username)
        snaps = await self._get_all([session_ref, user_ref], bound.client)
        return (
            self._versioned(SessionRecord, snaps.get(session_ref.path)),
            self._versioned(UserRecord, snaps.get(user_ref.path)),
        )

    async def read_user(self, username: str) -> Versioned[UserRecord] | None:
        ref = self._users(username)
        snaps = await self._get_all([ref])
        return self._versioned(UserRecord, snaps.get(ref.path))

    async def reserve_and_read_login(
        self, counters: Sequence[tuple[str, datetime]], now: datetime, username: str, device: str | None
    ) -> tuple[list[Reservation], AccountView]:
        """Count one guess on each counter while the user, its ledger and its device ``device`` are read.

        The commit and the batched read go out together (one round trip to wait for); the counts
        are committed before this returns.
        """
        refs = self._account_refs(username, (), device)
        reservations, snaps = await self._reserve_and_get(counters, now, list(refs.values()))
        return reservations, self._account_view(refs, snaps, device)

    async def read_account(
        self,
        username: str,
        *,
        sessions: Sequence[str] = (),
        device: str | None = None,
        counters: Sequence[str] = (),
    ) -> AccountView:
        refs = self._account_refs(username, sessions, device)
        refs.update({f"counter:{k}": self._attempts(k) for k in counters})
        return self._account_view(refs, await self._get_all(list(refs.values())), device)

    def _account_refs(
        self, username: str, sessions: Sequence[str], device: str | None
    ) -> dict[str, AsyncDocumentReference]:
        refs = {"user": self._users(username), "ledger": self._ledger(username)}
        refs.update({f"session:{h}": self._sessions(h) for h in sessions})
        if device is not None:
            refs["device"] = self._device(username, device)
        return refs

    def _account_view(
        self,
        refs: dict[str, AsyncDocumentReference],
        snaps: dict[str, DocumentSnapshot[Any]],
        device: str | None,
    ) -> AccountView:
        found: dict[str, Versioned[SessionRecord]] = {}
        counters: dict[str, Reservation] = {}
        for name, ref in refs.items():
            if name.startswith("session:"):
                session = self._versioned(SessionRecord, snaps.get(ref.path))
                if session is not None:
                    found[ref.id] = session
            elif name.startswith("counter:"):
                attempts = self._versioned(AttemptsRecord, snaps.get(ref.path))
                if attempts is not None:
                    counters[ref.id] = _reservation(ref.id, attempts)
        return AccountView(
            user=self._versioned(UserRecord, snaps.get(refs["user"].path)),
            ledger=self._versioned(LedgerRecord, snaps.get(refs["ledger"].path)),
            sessions=found,
            device=self._versioned(DeviceRecord, snaps.get(refs["device"].path)) if device is not None else None,
            counters=counters,
        )

    async def read_devices(self, username: str, device_hashes: Sequence[str]) -> dict[str, DeviceRecord]:
        if not device_hashes:
            return {}
        refs = [self._device(username, h) for h in device_hashes]
        snaps = await self._get_all(refs)
        found = {}
        for ref in refs:
            versioned = self._versioned(DeviceRecord, snaps.get(ref.path))
            if versioned is not None:
                found[ref.id] = versioned.record
        return found

    async def _reserve_and_get(
        self, counters: Sequence[tuple[str, datetime]], now: datetime, refs: list[AsyncDocumentReference]
    ) -> tuple[list[Reservation], dict[str, DocumentSnapshot[Any]]]:
        """``reserve_attempts`` and a batched read of ``refs``, sent together: one round trip to wait for.

        The counts are committed before this returns, whatever the read did.
        """
        reserve = asyncio.ensure_future(self.reserve_attempts(counters, now))
        try:
            snaps = await self._get_all(refs)
        finally:
            reservations = await reserve
        ops = current_ops.get()
        if ops is not None:
            ops.round_trips -= 1  # the two calls overlapped: one wait, not two
        return reservations, snaps

    async def read_ledger(self, username: str) -> Versioned[LedgerRecord] | None:
        ref = self._ledger(username)
        return self._versioned(LedgerRecord, (await self._get_all([ref])).get(ref.path))

    async def read_sessions(self, token_hashes: list[str]) -> dict[str, SessionRecord]:
        """The sessions of these keys that exist, by key, in one round trip."""
        if not token_hashes:
            return {}
        refs = [self._sessions(h) for h in token_hashes]
        snaps = await self._get_all(refs)
        found = {}
        for ref in refs:
            versioned = self._versioned(SessionRecord, snaps.get(ref.path))
            if versioned is not None:
                found[ref.id] = versioned.record
        return found

    @staticmethod
    def _versioned(model: type[R], snap: DocumentSnapshot[Any] | None) -> Versioned[R] | None:
        if snap is None or not snap.exists:
            return None
        assert snap.update_time is not None
        return Versioned(_parse(model, _data(snap), snap.reference.path), snap.update_time)

    async def list_sessions(
        self,
        user_id: str,
        *,
        limit: int | None = None,
        after: tuple[datetime, str] | None = None,
        ordered: bool = True,
    ) -> list[tuple[str, SessionRecord]]:
        """A user's session documents, newest first (expired ones included), from ``after`` on, at most ``limit``.

        ``ordered=False`` (the session ledger's first count): all of them, in any order, by a query
        on ``user_id`` alone, which Firestore's automatic single-field index serves, so it works
        while a newly deployed composite index is still building.

        Ordered by ``created_at`` then ``public_id``, both descending (a total order:
        the public id is unique). The page position is the ordering fields themselves,
        so a cursor never needs the document id (the token's hash).
        """
        from google.cloud.firestore import FieldFilter, Query

        if not ordered:
            found = await self._sessions_where("user_id", user_id)
            return [(s.id, _parse(SessionRecord, _data(s), s.reference.path)) for s in found]
        collection = self._settings.sessions_collection
        query = self.client().collection(collection).where(filter=FieldFilter("user_id", "==", user_id))
        query = query.order_by("created_at", direction=Query.DESCENDING).order_by(
            "public_id", direction=Query.DESCENDING
        )
        if after is not None:
            query = query.start_after({"created_at": after[0], "public_id": after[1]})
        if limit is not None:
            query = query.limit(limit)
        self.recorded.shapes.add(
            QueryShape(collection, ("user_id",), (("created_at", "DESCENDING"), ("public_id", "DESCENDING")))
        )
        async with self._guard():
            snaps = await query.get(retry=self._retry, timeout=self._deadline)
        _count(round_trips=1, reads=max(1, len(snaps)))
        return [(s.id, _parse(SessionRecord, _data(s), s.reference.path)) for s in snaps]

    async def find_session(self, public_id: str) -> tuple[str, SessionRecord] | None:
        """The session with this public id, if any."""
        from google.cloud.firestore import FieldFilter

        collection = self._settings.sessions_collection
        query = self.client().collection(collection).where(filter=FieldFilter("public_id", "==", public_id)).limit(1)
        self.recorded.shapes.add(QueryShape(collection, ("public_id",)))
        async with self._guard():
            snaps = await query.get(retry=self._retry, timeout=self._deadline)
        _count(round_trips=1, reads=1)
        if not snaps:
            return None
        snap = snaps[0]
        return snap.id, _parse(SessionRecord, _data(snap), snap.reference.path)

    # --- writes -----------------------------------------------------------------------

    async def create_user(self, record: UserRecord, ledger: LedgerRecord) -> None:
        """Insert a user and its ledger in one commit; raises ``AlreadyExists`` when the username is taken (atomic).

        The ledger replaces a deleted namesake's, if one was left behind.
        """
        user = Write(Doc.user(record.username), "create", record.model_dump())
        await self.commit(Plan((user, Write(Doc.ledger(record.username), "set", ledger.model_dump()))))

    async def update_user(self, current: Versioned[UserRecord], changes: UserChange) -> Versioned[UserRecord]:
        """Apply ``changes`` only if the user is unchanged since ``current`` was read (``PreconditionFailed``)."""
        fields = changes.model_dump(exclude_unset=True)
        ref = self._users(current.record.username)
        option = self._precondition_time(current.update_time)
        try:
            result = await self._call(
                ref.update(fields, option=option, retry=self._write_retry, timeout=self._deadline)
            )
        finally:
            _count(round_trips=1, writes=1)
        return Versioned(current.record.model_copy(update=fields), result.update_time)

    async def commit(self, plan: Plan) -> None:
        """Carry out ``plan`` in one batch; its operations are counted from the plan."""
        from google.cloud.firestore import Increment

        client = self.client()
        batch = client.batch()
        for write in plan.writes:
            ref = self._ref(write.doc)
            option = None
            if write.unchanged_since is not None:
                option = self._precondition_time(write.unchanged_since)
            elif write.must_exist:
                option = client.write_option(exists=True)
            if write.action == "create":
                batch.create(ref, dict(write.fields))
            elif write.action == "set":
                batch.set(ref, dict(write.fields))
            elif write.action == "update":
                batch.update(ref, dict(write.fields), option=option)
            elif write.action == "delete":
                batch.delete(ref, option=option)
            else:  # decrement: update's implicit exists precondition never recreates a gone counter
                batch.update(ref, {"count": Increment(-1)})
        try:
            await self._call(batch.commit(retry=self._write_retry, timeout=self._deadline))
        finally:
            _count(round_trips=1)
        _count(writes=plan.write_count, deletes=plan.delete_count)

    def _ref(self, doc: Doc) -> AsyncDocumentReference:
        if doc.kind is Kind.USER:
            return self._users(doc.key)
        if doc.kind is Kind.SESSION:
            return self._sessions(doc.key)
        if doc.kind is Kind.COUNTER:
            return self._attempts(doc.key)
        if doc.kind is Kind.DEVICE:
            return self._device(doc.username, doc.key)
        return self._ledger(doc.username)

    async def touch_session(self, token_hash: str, last_seen_at: datetime, expires_at: datetime) -> bool:
        """Extend a session's idle deadline. False if it was deleted meanwhile: never recreates it.

        Firestore's ``update`` carries an implicit exists precondition, so a
        touch that lands after a concurrent logout fails instead of writing.
        """
        ref = self._sessions(token_hash)
        try:
            await self._call(
                ref.update(
                    {"last_seen_at": last_seen_at, "expires_at": expires_at},
                    retry=self._write_retry,
                    timeout=self._deadline,
                )
            )
        except PreconditionFailed:
            return False
        finally:
            _count(round_trips=1, writes=1)
        return True

    async def delete_session(self, token_hash: str) -> None:
        """Delete one session; deleting a missing one is not an error."""
        ref = self._sessions(token_hash)
        await self._call(ref.delete(retry=self._write_retry, timeout=self._deadline))
        _count(round_trips=1, deletes=1)

    async def delete_user_sessions(self, user_id: str, keep: str | None = None, up_to_epoch: int | None = None) -> int:
        """Delete every session of a user except ``keep``; returns how many were deleted.

        With ``up_to_epoch``, only sessions committed at that ``auth_epoch`` or an older
        one: a revocation that raced a newer change must not delete what that change opened.
        """
        snaps = await self._sessions_where("user_id", user_id, select=["auth_epoch"])
        refs = [
            s.reference
            for s in snaps
            if s.id != keep and (up_to_epoch is None or int((_data(s) or {}).get("auth_epoch", 0)) <= up_to_epoch)
        ]
        return await self._delete_in_batches(refs)

    async def _delete_in_batches(self, refs: list[AsyncDocumentReference]) -> int:
        """Delete ``refs``, ``BATCH`` per commit (a missing document is not an error); returns ``len(refs)``."""
        for start in range(0, len(refs), BATCH):
            batch = self.client().batch()
            chunk = refs[start : start + BATCH]
            for ref in chunk:
                batch.delete(ref)
            await self._call(batch.commit(retry=self._write_retry, timeout=self._deadline))
            _count(round_trips=1, deletes=len(chunk))
        return len(refs)

    async def list_users(self, limit: int, after: str | None = None) -> list[UserRecord]:
        """Users in document id (username) order, after ``after``: the built-in name index, no composite one."""
        collection = self._settings.users_collection
        query = self.client().collection(collection).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after({"__name__": after})
        self.recorded.shapes.add(QueryShape(collection, (), (("__name__", "ASCENDING"),)))
        async with self._guard():
            snaps = await query.get(retry=self._retry, timeout=self._deadline)
        _count(round_trips=1, reads=max(1, len(snaps)))
        return [_parse(UserRecord, _data(s), s.reference.path) for s in snaps]

    async def list_usernames(self, limit: int, after: str | None = None) -> list[str]:
        """Usernames in document id order, after ``after``.

        A keys-only projection (``__name__``, as the library's own recursive delete uses): only names travel.
        """
        collection = self._settings.users_collection
        query = self.client().collection(collection).order_by("__name__").select(["__name__"]).limit(limit)
        if after is not None:
            query = query.start_after({"__name__": after})
        self.recorded.shapes.add(QueryShape(collection, (), (("__name__", "ASCENDING"),)))
        async with self._guard():
            snaps = await query.get(retry=self._retry, timeout=self._deadline)
        _count(round_trips=1, reads=max(1, len(snaps)))
        return [s.id for s in snaps]

    async def read_users(self, usernames: list[str]) -> dict[str, UserRecord]:
        """The existing users of ``usernames``, read in one batched get."""
        if not usernames:
            return {}
        bound = self._bound()
        snaps = await self._get_all([bound.users.document(name) for name in dict.fromkeys(usernames)], bound.client)
        found = {}
        for snap in snaps.values():
            versioned = self._versioned(UserRecord, snap)
            if versioned is not None:
                found[snap.id] = versioned.record
        return found

    async def bump_epochs(self, usernames: list[str], now: datetime) -> int:
        """One commit of ``Increment(1)`` updates, ``BATCH`` users per commit.

        ``update`` carries an exists precondition, so a deleted user is never recreated;
        but one missing user fails its whole batch, which is then done one user at a time.
        """
        from google.cloud.firestore import Increment

        changes = {"auth_epoch": Increment(1), "updated_at": now}
        bumped = 0
        for start in range(0, len(usernames), BATCH // 2):
            chunk = usernames[start : start + BATCH // 2]
            if await self._bump(chunk, changes, now):
                bumped += len(chunk)
                continue
            for name in chunk:  # one missing user fails its whole batch: one at a time
                bumped += await self._bump([name], changes, now)
        return bumped

    async def _bump(self, usernames: list[str], changes: dict[str, Any], now: datetime) -> int:
        """One commit: each user's epoch change and its ledger's ``changed_at``; 0 when one user is gone."""
        batch = self.client().batch()
        for name in usernames:
            batch.update(self._users(name), changes)
            batch.set(self._ledger(name), {"changed_at": now}, merge=True)
        try:
            await self._call(batch.commit(retry=self._write_retry, timeout=self._deadline))
        except PreconditionFailed:  # deleted meanwhile: nothing to end
            return 0
        finally:
            _count(round_trips=1, writes=2 * len(usernames))
        return len(usernames)

    async def scan_sessions(self, limit: int, after: str | None = None) -> list[tuple[str, SessionRecord]]:
        """Session documents of every user in document id order, after ``after``."""
        collection = self._settings.sessions_collection
        query = self.client().collection(collection).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after({"__name__": after})
        self.recorded.shapes.add(QueryShape(collection, (), (("__name__", "ASCENDING"),)))
        async with self._guard():
            snaps = await query.get(retry=self._retry, timeout=self._deadline)
        _count(round_trips=1, reads=max(1, len(snaps)))
        return [(s.id, _parse(SessionRecord, _data(s), s.reference.path)) for s in snaps]

    async def delete_sessions(self, keys: list[str]) -> int:
        """Delete the sessions of ``keys`` in batches of ``BATCH``."""
        return await self._delete_in_batches([self._sessions(k) for k in keys])

    async def delete_username_sessions(self, username: str) -> int:
        """Delete every session document whose ``username`` is ``username`` (the automatic single-field index)."""
        snaps = await self._sessions_where("username", username, select=["__name__"])
        return await self._delete_in_batches([s.reference for s in snaps])

    async def delete_user(self, current: Versioned[UserRecord]) -> None:
        """Delete the user document if it is unchanged since ``current`` was read; else ``PreconditionFailed``."""
        name = current.record.username
        user = Write(Doc.user(name), "delete", unchanged_since=current.update_time)
        await self.commit(Plan((user, Write(Doc.ledger(name), "delete"))))

    async def delete_user_descendants(self, username: str) -> int:
        """Delete every document below ``users/{username}``, depth first, ``BATCH`` per commit.

        Firestore has no cascading delete: each subcollection is found with
        ``collections()`` (which works on a missing document too) and each of its
        documents, including "missing" ones that only hold subcollections, with
        ``list_documents()``.
        """
        return await self._delete_below(self._users(username))

    async def _delete_below(self, ref: AsyncDocumentReference) -> int:
        deleted = 0
        async with self._guard():
            collections = [c async for c in ref.collections(retry=self._retry, timeout=self._deadline)]
        _count(round_trips=1)
        for collection in collections:
            async with self._guard():
                docs = [d async for d in collection.list_documents(retry=self._retry, timeout=self._deadline)]
            _count(round_trips=1, reads=max(1, len(docs)))
            for doc in docs:
                deleted += await self._delete_below(doc)
            deleted += await self._delete_in_batches(docs)
        return deleted

    async def delete_attempts(self, key: str) -> None:
        """Delete counter ``key``; a missing one is not an error."""
        await self._call(self._attempts(key).delete(retry=self._write_retry, timeout=self._deadline))
        _count(round_trips=1, deletes=1)

    async def reserve_attempt(self, key: str, now: datetime, expires_at: datetime) -> Reservation:
        """Count one guess on counter ``key`` and return the count this guess got, atomically (``reserve_attempts``)."""
        (reservation,) = await self.reserve_attempts([(key, expires_at)], now)
        return reservation

    async def reserve_attempts(self, counters: Sequence[tuple[str, datetime]], now: datetime) -> list[Reservation]:
        """Count one guess on each counter ``(key, expires_at)`` and return the counts they got, in one commit.

        Per counter, two server-side transforms: ``count`` is incremented and
        ``window_start`` (seconds since the epoch) becomes the minimum of its value
        and ``now``; the commit returns both results. A missing counter is created.
        """
        from google.cloud.firestore import Increment, Minimum
        from google.cloud.firestore_v1 import _helpers

        batch = self.client().batch()
        for key, expires_at in counters:
            batch.set(
                self._attempts(key),
                {"count": Increment(1), "window_start": Minimum(now.timestamp()), "expires_at": expires_at},
                merge=True,
            )
        try:
            results = await self._call(batch.commit(retry=self._write_retry, timeout=self._deadline))
        finally:
            _count(round_trips=1, writes=len(counters))
        reservations = []
        for (key, _), result in zip(counters, results, strict=True):
            # Transform results come in the order of their field paths: count, window_start.
            values: list[Any] = [_helpers.decode_value(v, self.client()) for v in result.transform_results]
            count, window_start = values
            start = datetime.fromtimestamp(float(window_start), UTC)
            reservations.append(Reservation(key, int(count), start, result.update_time))
        return reservations

    async def restart_attempts(self, reservation: Reservation, now: datetime, expires_at: datetime) -> Reservation:
        """Start a new window with this guess as its first, if nobody counted since ``reservation``.

        Raises ``PreconditionFailed`` when somebody did.
        """
        ref = self._attempts(reservation.key)
        option = self._precondition_time(reservation.update_time)
        record = AttemptsRecord(count=1, window_start=now.timestamp(), expires_at=expires_at)
        try:
            result = await self._call(
                ref.update(record.model_dump(), option=option, retry=self._write_retry, timeout=self._deadline)
            )
        finally:
            _count(round_trips=1, writes=1)
        return Reservation(reservation.key, 1, now, result.update_time)

    async def read_attempts(self, key: str) -> Reservation | None:
        """Counter ``key`` as it is now, without counting; ``None`` if there is none."""
        ref = self._attempts(key)
        snap = (await self._get_all([ref])).get(ref.path)
        found = self._versioned(AttemptsRecord, snap)
        return _reservation(key, found) if found is not None else None

    async def close(self) -> None:
        """Close the running loop's client, if any."""
        loop = asyncio.get_running_loop()
        bound = self._clients.pop(loop, None)
        if bound is not None:
            bound.client.close()  # type: ignore[no-untyped-call]
