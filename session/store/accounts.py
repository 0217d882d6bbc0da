"""Users, their ledgers and devices: one consistent read of an account, and the user's own writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from session.models import AttemptsRecord, DeviceRecord, LedgerRecord, SessionRecord, UserChange, UserRecord
from session.plan import Doc, Plan, Write
from session.store.base import (
    DEVICES,
    AccountView,
    CountedGuess,
    QueryShape,
    Versioned,
    counted_guess_of,
)
from session.store.client import _data, _parse
from session.store.ops import count as _count

if TYPE_CHECKING:
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
from session.store.sessions import Sessions


class Accounts(Sessions):
    """Users, their ledgers and devices: one consistent read of an account, and the user's own writes."""

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
    ) -> tuple[list[CountedGuess], AccountView]:
        """Count one guess on each counter while the user, its ledger and its device ``device`` are read.

        The commit and the batched read go out together (one round trip to wait for); the counts
        are committed before this returns.
        """
        refs = self._account_refs(username, (), device)
        guesses, snaps = await self._reserve_and_get(counters, now, list(refs.values()))
        return guesses, self._account_view(refs, snaps, device)

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
        counters: dict[str, CountedGuess] = {}
        for name, ref in refs.items():
            if name.startswith("session:"):
                session = self._versioned(SessionRecord, snaps.get(ref.path))
                if session is not None:
                    found[ref.id] = session
            elif name.startswith("counter:"):
                attempts = self._versioned(AttemptsRecord, snaps.get(ref.path))
                if attempts is not None:
                    counters[ref.id] = counted_guess_of(ref.id, attempts)
        return AccountView(
            user=self._versioned(UserRecord, snaps.get(refs["user"].path)),
            ledger=self._versioned(LedgerRecord, snaps.get(refs["ledger"].path)),
            sessions=found,
            device=self._versioned(DeviceRecord, snaps.get(refs["device"].path)) if device is not None else None,
            counters=counters,
        )

    async def read_devices(self, username: str, device_hashes: Sequence[str]) -> dict[str, DeviceRecord]:
        return await self._read_existing(DeviceRecord, [self._device(username, h) for h in device_hashes])

    async def list_devices(self, username: str) -> list[tuple[str, DeviceRecord]]:
        """Every device document of the user, with its key, in key order (one query on the built-in name index)."""
        from google.cloud.firestore import Query

        devices = self._users(username).collection(DEVICES)
        query = devices.order_by("__name__", direction=Query.ASCENDING)
        snaps = await self._run(query, QueryShape(DEVICES, (), (("__name__", "ASCENDING"),)))
        return [(snap.id, _parse(DeviceRecord, _data(snap), snap.reference.path)) for snap in snaps]

    async def read_ledger(self, username: str) -> Versioned[LedgerRecord] | None:
        ref = self._ledger(username)
        return self._versioned(LedgerRecord, (await self._get_all([ref])).get(ref.path))

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

    async def delete_user(self, current: Versioned[UserRecord]) -> None:
        """Delete the user document if it is unchanged since ``current`` was read; else ``PreconditionFailed``."""
        name = current.record.username
        user = Write(Doc.user(name), "delete", unchanged_since=current.update_time)
        await self.commit(Plan((user, Write(Doc.ledger(name), "delete"))))

    async def list_users(self, limit: int, after: str | None = None) -> list[UserRecord]:
        """Users in document id (username) order, after ``after``: the built-in name index, no composite one."""
        collection = self._settings.users_collection
        query = self.client().collection(collection).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after({"__name__": after})
        snaps = await self._run(query, QueryShape(collection, (), (("__name__", "ASCENDING"),)))
        return [_parse(UserRecord, _data(s), s.reference.path) for s in snaps]

    async def list_usernames(self, limit: int, after: str | None = None) -> list[str]:
        """Usernames in document id order, after ``after``.

        A keys-only projection (``__name__``, as the library's own recursive delete uses): only names travel.
        """
        collection = self._settings.users_collection
        query = self.client().collection(collection).order_by("__name__").select(["__name__"]).limit(limit)
        if after is not None:
            query = query.start_after({"__name__": after})
        snaps = await self._run(query, QueryShape(collection, (), (("__name__", "ASCENDING"),)))
        return [s.id for s in snaps]

    async def read_users(self, usernames: list[str]) -> dict[str, UserRecord]:
        """The existing users of ``usernames``, read in one batched get."""
        return await self._read_existing(UserRecord, [self._users(name) for name in dict.fromkeys(usernames)])
