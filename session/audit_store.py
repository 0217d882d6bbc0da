"""The Firestore reads (and the few repairs) of ``python -m session audit``; no rules here.

Kept apart from ``session.store`` for now (it will move into the store package):
it reuses the store's client (``FirestoreStore.client()``), its deadline guard and
its parsing (a document that fails its model becomes a ``Doc`` with no record, named
by collection and id only), and adds nothing the service needs. Every call is
bounded by ``SESSION_FIRESTORE_TIMEOUT_SECONDS``; reads are retried on transient
errors, repairs never (each carries a precondition, so a resent one could only fail).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from session.models import AttemptsRecord, DeviceRecord, LedgerRecord, SessionRecord, UserRecord
from session.store import (
    DEVICES,
    LEDGER_COLLECTION,
    LEDGER_DOCUMENT,
    FirestoreStore,
    PreconditionFailed,
    StoreCorrupt,
)
from session.store.client import _data, _Guard, _parse

if TYPE_CHECKING:
    from google.cloud.firestore import AsyncClient
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference
    from google.cloud.firestore_v1.base_document import DocumentSnapshot

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Doc(Generic[R]):
    """A document as read: its id and path, its record (``None`` when it fails its model) and update time."""

    id: str
    path: str
    record: R | None
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Users, ledgers and sessions read together in one batched get (one consistent read)."""

    users: dict[str, Doc[UserRecord]]
    ledgers: dict[str, Doc[LedgerRecord]]
    sessions: dict[str, Doc[SessionRecord]]


class AuditStore:
    """Page-by-page reads of every collection the service writes, over the service's own store and settings."""

    def __init__(self, store: FirestoreStore) -> None:
        self._store = store
        self._settings = store._settings
        self._deadline = store._settings.firestore_timeout_seconds
        self._retry: Any = None

    # --- plumbing ------------------------------------------------------------------------------------

    def _client(self) -> AsyncClient:
        return self._store.client()

    def _guard(self) -> _Guard:
        return _Guard(self._deadline)

    def _read_retry(self) -> Any:
        if self._retry is None:
            from google.api_core import exceptions as gexc
            from google.api_core.retry import if_exception_type
            from google.api_core.retry_async import AsyncRetry

            transient = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.Aborted)
            self._retry = AsyncRetry(
                predicate=if_exception_type(*transient), initial=0.05, maximum=1.0, timeout=self._deadline
            )
        return self._retry

    def _user(self, username: str) -> AsyncDocumentReference:
        return self._client().collection(self._settings.users_collection).document(username)

    def _ledger(self, username: str) -> AsyncDocumentReference:
        ref: AsyncDocumentReference = self._user(username).collection(LEDGER_COLLECTION).document(LEDGER_DOCUMENT)
        return ref

    def _session(self, key: str) -> AsyncDocumentReference:
        return self._client().collection(self._settings.sessions_collection).document(key)

    @staticmethod
    def _doc(model: type[R], snap: DocumentSnapshot[Any]) -> Doc[R] | None:
        if not snap.exists:
            return None
        assert snap.update_time is not None
        path = snap.reference.path
        try:
            record: R | None = _parse(model, _data(snap), path)
        except StoreCorrupt:
            record = None
        return Doc(snap.id, path, record, snap.update_time)

    async def _page(self, collection: str, model: type[R], limit: int, after: str | None) -> list[Doc[R]]:
        query = self._client().collection(collection).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after({"__name__": after})
        async with self._guard():
            snaps = await query.get(retry=self._read_retry(), timeout=self._deadline)
        return [d for d in (self._doc(model, s) for s in snaps) if d is not None]

    # --- reads ---------------------------------------------------------------------------------------

    async def sessions_page(self, limit: int, after: str | None) -> list[Doc[SessionRecord]]:
        """Up to ``limit`` session documents in key order, after key ``after``: one read each."""
        return await self._page(self._settings.sessions_collection, SessionRecord, limit, after)

    async def counters_page(self, limit: int, after: str | None) -> list[Doc[AttemptsRecord]]:
        """Up to ``limit`` failed-login counters in key order, after key ``after``: one read each."""
        return await self._page(self._settings.attempts_collection, AttemptsRecord, limit, after)

    async def usernames(self, page: int) -> AsyncIterator[list[str]]:
        """Every user document id, in pages, including "missing" documents that only hold subcollections.

        A deleted user's devices or ledger keep a missing parent document alive in the listing, which a
        query on the collection would not show. One read per document listed.
        """
        collection = self._client().collection(self._settings.users_collection)
        listing = aiter(collection.list_documents(page_size=page))
        while True:
            names: list[str] = []
            async with self._guard():  # one deadline per page, not for the whole listing
                async for ref in listing:
                    names.append(ref.id)
                    if len(names) == page:
                        break
            if names:
                yield names
            if len(names) < page:
                return

    async def snapshot(self, usernames: Sequence[str], session_keys: Sequence[str] = ()) -> Snapshot:
        """The users, their ledgers and the sessions of ``session_keys``: one batched get, one read each."""
        names, keys = list(dict.fromkeys(usernames)), list(dict.fromkeys(session_keys))
        refs = [
            *(self._user(n) for n in names),
            *(self._ledger(n) for n in names),
            *(self._session(k) for k in keys),
        ]
        if not refs:
            return Snapshot({}, {}, {})
        async with self._guard():
            snaps = [s async for s in self._client().get_all(refs, retry=self._read_retry(), timeout=self._deadline)]
        by_path = {s.reference.path: s for s in snaps}
        users, ledgers, sessions = {}, {}, {}
        for name in names:
            if (user := by_path.get(self._user(name).path)) and (doc := self._doc(UserRecord, user)):
                users[name] = doc
            if (ledger := by_path.get(self._ledger(name).path)) and (ldoc := self._doc(LedgerRecord, ledger)):
                ledgers[name] = ldoc
        for key in keys:
            if (session := by_path.get(self._session(key).path)) and (sdoc := self._doc(SessionRecord, session)):
                sessions[key] = sdoc
        return Snapshot(users, ledgers, sessions)

    async def devices(self, username: str) -> list[Doc[DeviceRecord]]:
        """The user's device documents (one query: one read per device, at least one)."""
        query = self._user(username).collection(DEVICES)
        async with self._guard():
            snaps = await query.get(retry=self._read_retry(), timeout=self._deadline)
        return [d for d in (self._doc(DeviceRecord, s) for s in snaps) if d is not None]

    # --- repairs: each only if the document is unchanged since it was read ------------------------

    async def delete(self, doc: Doc[Any]) -> bool:
        """Delete ``doc`` if it is still at the version read; False (nothing written) if it changed or went."""
        ref = self._client().document(doc.path)
        option = self._client().write_option(last_update_time=doc.update_time)
        try:
            async with self._guard():
                await ref.delete(option=option, retry=None, timeout=self._deadline)
        except PreconditionFailed:
            return False
        return True

    async def set_ledger(self, username: str, doc: Doc[LedgerRecord], sessions: list[str]) -> bool:
        """Replace the ledger's entries if it is still at the version read; False if it changed."""
        option = self._client().write_option(last_update_time=doc.update_time)
        try:
            async with self._guard():
                await self._ledger(username).update(
                    {"sessions": sessions}, option=option, retry=None, timeout=self._deadline
                )
        except PreconditionFailed:
            return False
        return True
