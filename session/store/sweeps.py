"""Sweeps over many users: every epoch bumped (revoke-everyone), everything below a user deleted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from session.events import EventRecord
from session.store.base import (
    BATCH,
    AlreadyExists,
    PreconditionFailed,
)
from session.store.ops import count as _count

if TYPE_CHECKING:
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference
from session.store.accounts import Accounts


class Sweeps(Accounts):
    """Sweeps over many users: every epoch bumped (revoke-everyone), everything below a user deleted."""

    async def bump_epochs(self, usernames: list[str], now: datetime, events: Sequence[EventRecord] = ()) -> int:
        """One commit of ``Increment(1)`` updates (and each user's event), ``BATCH // 3`` users per commit.

        ``update`` carries an exists precondition, so a deleted user is never recreated;
        but one missing user fails its whole batch, which is then done one user at a time.
        """
        from google.cloud.firestore import Increment

        changes = {"auth_epoch": Increment(1), "updated_at": now}
        by_user = {e.username: e for e in events}
        bumped = 0
        for start in range(0, len(usernames), BATCH // 3):
            chunk = usernames[start : start + BATCH // 3]
            if await self._bump(chunk, changes, now, by_user):
                bumped += len(chunk)
                continue
            for name in chunk:  # one missing user fails its whole batch: one at a time
                bumped += await self._bump([name], changes, now, by_user)
        return bumped

    async def _bump(
        self, usernames: list[str], changes: dict[str, Any], now: datetime, events: Mapping[str, EventRecord]
    ) -> int:
        """One commit: each user's epoch change, its ledger's ``changed_at`` and its event; 0 when one user is gone.

        A resend by the client library of a commit that had landed fails on its events' creates
        (``AlreadyExists``): their ids are random and this commit's own, so it landed.
        """
        batch = self.client().batch()
        writes = 0
        for name in usernames:
            batch.update(self._users(name), changes)
            batch.set(self._ledger(name), {"changed_at": now}, merge=True)
            writes += 2
            if name in events:
                batch.create(self._event(name, events[name].id), events[name].model_dump())
                writes += 1
        try:
            await self._call(batch.commit(retry=self._write_retry, timeout=self._deadline))
        except PreconditionFailed:  # deleted meanwhile: nothing to end
            return 0
        except AlreadyExists:  # the library resent a commit that had landed (see above)
            pass
        finally:
            _count(round_trips=1, writes=writes)
        return len(usernames)

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
