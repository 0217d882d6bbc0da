"""The Firestore client of each event loop, the one guard that translates its errors, and the one query helper."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from session.config import Settings
from session.plan import Doc, Kind, Plan
from session.store.base import (
    DEVICES,
    EVENTS,
    LEDGER_COLLECTION,
    LEDGER_DOCUMENT,
    AlreadyExists,
    PreconditionFailed,
    QueryShape,
    StoreCorrupt,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    Versioned,
)
from session.store.ops import count as _count

if TYPE_CHECKING:  # the client library is heavy: import it on first use only
    from google.cloud.firestore import AsyncClient
    from google.cloud.firestore_v1.async_collection import AsyncCollectionReference
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference
    from google.cloud.firestore_v1.async_query import AsyncQuery
    from google.cloud.firestore_v1.base_document import DocumentSnapshot

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


def _data(snap: DocumentSnapshot[Any]) -> dict[str, Any] | None:
    """A snapshot's fields without ``to_dict()``'s deep copy.

    The copy protects the snapshot from its caller; here the snapshot is
    dropped at once and validation builds new, frozen records from the data,
    so the copy would only cost time on every request.
    """
    data = getattr(snap, "_data", None)
    return data if isinstance(data, dict) else snap.to_dict()


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
class _LoopClient:
    """One event loop's client and its three collections, made once (the references are immutable)."""

    client: AsyncClient
    users: AsyncCollectionReference
    sessions: AsyncCollectionReference
    attempts: AsyncCollectionReference


class Client:
    """One event loop's client, made on first use, and what every collection's code shares."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._deadline = settings.firestore_timeout_seconds
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
        self._retry: Any = None
        self._write_retry: Any = None

    def client(self) -> AsyncClient:
        """The client of the running event loop, created on first use."""
        return self._bound().client

    def _bound(self) -> _LoopClient:
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
            bound = _LoopClient(
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

    def _event(self, username: str, event_id: str) -> AsyncDocumentReference:
        ref: AsyncDocumentReference = self._bound().users.document(username).collection(EVENTS).document(event_id)
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

    async def _read_existing(self, model: type[R], refs: list[AsyncDocumentReference]) -> dict[str, R]:
        """The documents of ``refs`` that exist, parsed, by document id (one round trip; none for no refs)."""
        if not refs:
            return {}
        snaps = await self._get_all(refs)
        found = {}
        for ref in refs:
            versioned = self._versioned(model, snaps.get(ref.path))
            if versioned is not None:
                found[ref.id] = versioned.record
        return found

    async def _run(self, query: AsyncQuery, shape: QueryShape) -> list[DocumentSnapshot[Any]]:
        """Run one query under the deadline (the one place every query goes through); ``shape`` names its index."""
        async with self._guard():
            snaps = await query.get(retry=self._retry, timeout=self._deadline)
        _count(round_trips=1, reads=max(1, len(snaps)))
        return list(snaps)

    def _precondition_time(self, update_time: datetime) -> Any:
        return self.client().write_option(last_update_time=update_time)

    @staticmethod
    def _versioned(model: type[R], snap: DocumentSnapshot[Any] | None) -> Versioned[R] | None:
        if snap is None or not snap.exists:
            return None
        assert snap.update_time is not None
        return Versioned(_parse(model, _data(snap), snap.reference.path), snap.update_time)

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
                batch.update(ref, {"count": Increment(-1), **write.fields}, option=option)
        try:
            # A decrement applied twice gives back two guesses: a plan with one is resent only when it also
            # creates a document (a resend that had landed then fails on it, and the caller recognises it).
            await self._call(batch.commit(retry=self._write_retry if plan.resendable else None, timeout=self._deadline))
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
        if doc.kind is Kind.EVENT:
            return self._event(doc.username, doc.key)
        return self._ledger(doc.username)

    async def close(self) -> None:
        """Close the running loop's client, if any."""
        loop = asyncio.get_running_loop()
        bound = self._clients.pop(loop, None)
        if bound is not None:
            bound.client.close()  # type: ignore[no-untyped-call]
