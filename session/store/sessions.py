"""Session documents: read, listed a page at a time, touched, deleted."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from session.models import SessionRecord
from session.store.base import (
    BATCH,
    PreconditionFailed,
    QueryShape,
)
from session.store.client import _data, _parse
from session.store.ops import count as _count

if TYPE_CHECKING:
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
from session.store.counters import Counters


class Sessions(Counters):
    """Session documents: read, listed a page at a time, touched, deleted."""

    async def read_sessions(self, token_hashes: list[str]) -> dict[str, SessionRecord]:
        """The sessions of these keys that exist, by key, in one round trip."""
        return await self._read_existing(SessionRecord, [self._sessions(h) for h in token_hashes])

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
        snaps = await self._run(
            query, QueryShape(collection, ("user_id",), (("created_at", "DESCENDING"), ("public_id", "DESCENDING")))
        )
        return [(s.id, _parse(SessionRecord, _data(s), s.reference.path)) for s in snaps]

    async def find_session(self, public_id: str) -> tuple[str, SessionRecord] | None:
        """The session with this public id, if any."""
        from google.cloud.firestore import FieldFilter

        collection = self._settings.sessions_collection
        query = self.client().collection(collection).where(filter=FieldFilter("public_id", "==", public_id)).limit(1)
        snaps = await self._run(query, QueryShape(collection, ("public_id",)))
        if not snaps:
            return None
        snap = snaps[0]
        return snap.id, _parse(SessionRecord, _data(snap), snap.reference.path)

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
        snaps = await self._run(query, QueryShape(collection, (field,)))
        return list(snaps)

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

    async def scan_sessions(self, limit: int, after: str | None = None) -> list[tuple[str, SessionRecord]]:
        """Session documents of every user in document id order, after ``after``."""
        collection = self._settings.sessions_collection
        query = self.client().collection(collection).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after({"__name__": after})
        snaps = await self._run(query, QueryShape(collection, (), (("__name__", "ASCENDING"),)))
        return [(s.id, _parse(SessionRecord, _data(s), s.reference.path)) for s in snaps]

    async def delete_sessions(self, keys: list[str]) -> int:
        """Delete the sessions of ``keys`` in batches of ``BATCH``."""
        return await self._delete_in_batches([self._sessions(k) for k in keys])

    async def delete_username_sessions(self, username: str) -> int:
        """Delete every session document whose ``username`` is ``username`` (the automatic single-field index)."""
        snaps = await self._sessions_where("username", username, select=["__name__"])
        return await self._delete_in_batches([s.reference for s in snaps])
