"""The security activity of an account (issue 22): events made for the commits that record them, listed, published.

An event is written **in the same commit as the change it records** (``Activity.write``: one more
``plan.create`` in that change's ``Plan``), so an event exists if and only if its change happened.
After the commit, the part that made it hands the event to ``Activity.publish``: with
``SESSION_EVENTS_TOPIC`` set it goes to Pub/Sub within a short deadline, and is marked
``published: true``; what is not published by then (Pub/Sub down, the instance gone) stays
``published: false`` for ``python -m session events publish-pending``. Delivery is at least once.

Events hold no secret (``session.events`` refuses one in ``detail``): the device name, the /24 or
/48 network and the trusted geo header's place come from ``context.Origin``, never the address.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from session import pages, plan, tokens
from session.clock import Clock
from session.config import Settings
from session.context import NOWHERE, Origin
from session.events import EventRecord, EventType, SecurityEventsOut, new_event_id
from session.models import UserRecord
from session.plan import Doc, Plan, Write
from session.publish import PUBLISH_DEADLINE_SECONDS, EventPublisher
from session.store import AlreadyExists, PreconditionFailed, Store, StoreError, StoreUnavailable

# The longest a request waits to mark its published events so (after the publish's own deadline); an event not
# marked by then is published once more by `events publish-pending` (at least once).
MARK_DEADLINE_SECONDS = 1.0
# Events per page of `events publish-pending` (one query, one Publish call, one commit marking them).
PENDING_PAGE = 200
MAX_PENDING_PAGE = 500  # within one Publish call's 1,000 messages, and one commit
log = logging.getLogger("session.events")

Detail = Mapping[str, str | int | bool | None]


class Owner(Protocol):
    """Whose event it is: a user, or a session (which names its user)."""

    @property
    def user_id(self) -> str: ...

    @property
    def username(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PublishedPending:
    """What ``Activity.publish_pending`` did."""

    found: int  # pending events read
    published: int  # accepted by Pub/Sub and marked
    left: int  # not accepted (or not marked): still pending


class Activity:
    """Makes the events of an account's changes, lists them, and publishes them after their commits."""

    def __init__(self, settings: Settings, store: Store, clock: Clock, publisher: EventPublisher | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.publisher = publisher or EventPublisher(settings)  # imports nothing until its first publish
        self._keep = timedelta(days=settings.events_days)

    def event(
        self,
        user: Owner,
        type: EventType,
        origin: Origin = NOWHERE,
        *,
        session_hash: str | None = None,
        detail: Detail | None = None,
        event_id: str | None = None,
    ) -> EventRecord:
        """An event of ``user``, not yet written: ``write`` it in the commit of the change it records.

        ``session_hash``: the key of the session concerned (shown by its public id, never the key).
        The place a trusted geo header named goes into ``detail`` as ``place``.
        """
        now = self.clock()
        facts = dict(detail or {})
        if origin.place is not None:
            facts["place"] = origin.place
        return EventRecord(
            id=event_id or new_event_id(),
            type=type,
            at=now,
            session_id=tokens.public_id(session_hash) if session_hash else None,
            device=origin.device,
            network=origin.network,
            detail=facts,
            user_id=user.user_id,
            username=user.username,
            expires_at=now + self._keep,
            published=False if self.publisher.enabled else None,
        )

    @staticmethod
    def write(event: EventRecord) -> Write:
        """The event's write, for the plan of the change it records (a create: a commit applied twice fails)."""
        return plan.create(Doc.event(event.username, event.id), event)

    async def commit(self, change: Plan, event: EventRecord) -> None:
        """Commit ``change`` with ``event`` in it, then publish the event.

        The event is the commit's witness: when the answer is lost, or a resend by the client
        library fails on the commit's own writes (the event's create, an exists precondition), the
        event is read, and if it is stored the change happened. Otherwise the error stands
        (``PreconditionFailed``: the change did not happen; ``StoreUnavailable``: not known).
        """
        try:
            await self.store.commit(change.then(self.write(event)))
        except (StoreUnavailable, AlreadyExists, PreconditionFailed):
            if await self.store.read_event(event.username, event.id) is None:
                raise
        await self.publish([event])

    async def publish(self, events: Sequence[EventRecord]) -> None:
        """Publish events whose commit landed, and mark them published; never raises, bounded by short deadlines.

        Without a topic this does nothing. An event Pub/Sub did not accept in time, or not marked in
        time, stays ``published: false`` for ``events publish-pending``.
        """
        if not self.publisher.enabled or not events:
            return
        accepted = await self.publisher.publish([e.message() for e in events])
        done = [e for e, ok in zip(events, accepted, strict=True) if ok]
        if not done:
            return
        try:
            async with asyncio.timeout(MARK_DEADLINE_SECONDS):
                await self.store.mark_published(done)
        except (TimeoutError, StoreError) as exc:
            log.warning(
                "events_not_marked",
                extra={"json_fields": {"event": "events_not_marked", "error": type(exc).__name__, "count": len(done)}},
            )

    async def page(
        self, user: UserRecord, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> SecurityEventsOut:
        """One page of the user's events, newest first, and the next page's token (``None`` on the last page).

        Reads ``limit + 1`` events to know whether another page follows. An event of a deleted
        namesake (its ``user_id`` another) is never shown: ``users delete`` removes a user's events, so
        one could only be left by a delete interrupted before it finished.
        """
        found = await self.store.list_events(user.username, limit=limit + 1, after=after)
        more = len(found) > limit
        found = found[:limit]
        shown = [e.public() for e in found if e.user_id == user.user_id]
        last = found[-1] if found else None
        return SecurityEventsOut(
            events=shown, next_page_token=pages.encode_events(last.at, last.id) if more and last else None
        )

    async def publish_pending(
        self, *, page: int = PENDING_PAGE, progress: Callable[[str], None] = lambda _: None
    ) -> PublishedPending:
        """Publish every event still ``published: false``, a page at a time, and mark each one accepted.

        Stops at the first page Pub/Sub does not take wholly (it is down: run again later). Safe to
        run at any time and more than once: a subscriber may see an event twice (at least once).
        """
        found = published = 0
        while True:
            pending = await self.store.pending_events(page)
            if not pending:
                break
            found += len(pending)
            accepted = await self.publisher.publish([e.message() for e in pending])
            done = [e for e, ok in zip(pending, accepted, strict=True) if ok]
            marked = await self.store.mark_published(done) if done else 0
            published += marked
            progress(f"events: {published} published, {found - published} left so far")
            if len(done) < len(pending) or len(pending) < page:
                break
        return PublishedPending(found, published, found - published)


def lockout_event_id(counter_key: str, window_start: datetime) -> str:
    """The id of the one lockout event of a counter's window: a second writer finds it there already."""
    return _derived_id("lockout", counter_key, f"{window_start.timestamp():.6f}")


def bucket_event_id(kind: str, key: str, at: datetime, seconds: int) -> str:
    """The id of the one event of ``kind`` about ``key`` in the ``seconds``-long bucket holding ``at``.

    What a client can repeat at will (a refused proof) writes at most one event per bucket: a second
    writer's create finds it there already.
    """
    return _derived_id(kind, key, str(int(at.timestamp()) // seconds))


def _derived_id(*parts: str) -> str:
    """24 URL-safe characters after a fixed "d": never a ``__name__`` id, which Firestore reserves."""
    return "d" + tokens.b64encode(hashlib.sha256("\x00".join(parts).encode()).digest()[:18])


__all__ = [
    "MARK_DEADLINE_SECONDS",
    "MAX_PENDING_PAGE",
    "PENDING_PAGE",
    "PUBLISH_DEADLINE_SECONDS",
    "Activity",
    "Owner",
    "PublishedPending",
    "bucket_event_id",
    "lockout_event_id",
]
