"""The accounts' security events: listed newest first below a user, found where not yet published, marked published.

An event is written by the commit of the change it records (a ``plan.create`` of ``Doc.event``),
never here; what is here only reads them and marks them published.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from session.events import EventRecord
from session.store.base import BATCH, EVENTS, PreconditionFailed, QueryShape
from session.store.client import _data, _parse
from session.store.ops import count as _count
from session.store.sweeps import Sweeps


class Events(Sweeps):
    """The accounts' security events."""

    async def list_events(
        self, username: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[EventRecord]:
        """Up to ``limit`` of the user's events after position ``after`` (``at``, id), newest first.

        Ordered by ``at`` then the document id, both descending: Firestore's automatic single-field
        index of ``at`` serves it (the id is the index's own tie-break), so no composite index.
        """
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.field_path import FieldPath

        events = self._users(username).collection(EVENTS)
        query = events.order_by("at", direction=Query.DESCENDING).order_by(
            FieldPath.document_id(), direction=Query.DESCENDING
        )
        if after is not None:
            query = query.start_after({"at": after[0], FieldPath.document_id(): events.document(after[1])})
        snaps = await self._run(
            query.limit(limit), QueryShape(EVENTS, (), (("at", "DESCENDING"), ("__name__", "DESCENDING")))
        )
        return [_parse(EventRecord, _data(s), s.reference.path) for s in snaps]

    async def read_event(self, username: str, event_id: str) -> EventRecord | None:
        """One event, if it exists: how a commit carrying it is known to have landed though its answer was lost."""
        ref = self._event(username, event_id)
        found = self._versioned(EventRecord, (await self._get_all([ref])).get(ref.path))
        return found.record if found is not None else None

    async def pending_events(self, limit: int) -> list[EventRecord]:
        """Up to ``limit`` events of any user still ``published: false``, oldest first.

        One collection-group query, served by the composite index (``published``, ``at``) of
        collection-group scope that firestore.indexes.json declares: one user's events are
        published in the order they happened.
        """
        from google.cloud.firestore import FieldFilter

        query = self.client().collection_group(EVENTS).where(filter=FieldFilter("published", "==", False))
        query = query.order_by("at").limit(limit)
        snaps = await self._run(query, QueryShape(EVENTS, ("published",), (("at", "ASCENDING"),), group=True))
        return [_parse(EventRecord, _data(s), s.reference.path) for s in snaps]

    async def mark_published(self, events: Sequence[EventRecord]) -> int:
        """Set ``published: true`` on each of ``events`` that still exists; returns how many were marked.

        ``update`` never recreates an event deleted meanwhile (its user deleted); one such event fails
        its whole commit, which is then done one event at a time.
        """
        marked = 0
        for start in range(0, len(events), BATCH):
            chunk = events[start : start + BATCH]
            if await self._mark(chunk):
                marked += len(chunk)
                continue
            for one in chunk:
                marked += await self._mark([one])
        return marked

    async def _mark(self, events: Sequence[EventRecord]) -> bool:
        batch = self.client().batch()
        for e in events:
            batch.update(self._event(e.username, e.id), {"published": True})
        try:
            await self._call(batch.commit(retry=self._write_retry, timeout=self._deadline))
        except PreconditionFailed:
            return False
        finally:
            _count(round_trips=1, writes=len(events))
        return True
