"""Operations for administrators (the CLI): users and their sessions, by username.

They reuse the rules of ``session.service`` (the same liveness rule, the same
epoch bump that ends sessions, the same retry around a precondition write) and
add none of their own. Every command is strong: it reads and writes Firestore.
"""

from __future__ import annotations

import logging
from typing import Any

from session import errors
from session.models import SessionOut, UserRecord
from session.service import SessionService, event, retrying, session_out
from session.store import Versioned


class AdminService:
    """What the admin CLI can do, over the same store and rules as the session service."""

    def __init__(self, service: SessionService) -> None:
        self.service = service
        self.store = service.store

    async def user(self, username: str) -> Versioned[UserRecord]:
        """The user named ``username``; raises ``NotFound``."""
        user = await self.store.read_user(username.lower())
        if user is None:
            raise errors.NotFound(f"no user {username.lower()!r}")
        return user

    async def update(self, username: str, changes: dict[str, Any], *, end_sessions: bool = False) -> UserRecord:
        """Apply ``changes`` to a user (with a precondition, retried on races).

        ``end_sessions`` also bumps ``auth_epoch`` in the same write: every session,
        including one being committed right now, is void from then on.
        """

        async def write(user: Versioned[UserRecord]) -> UserRecord:
            update = {**changes, "updated_at": self.service.clock()}
            if end_sessions:
                update["auth_epoch"] = user.record.auth_epoch + 1
            try:
                return (await self.store.update_user(user, update)).record
            finally:  # this instance's cached sessions of the user must not outlive the change
                self.service.forget_user(user.record.user_id)

        return await retrying(
            await self.user(username),
            write,
            lambda: self.user(username),
            lambda: errors.VersionConflict("the user kept changing; try again"),
        )

    async def set_disabled(self, username: str, disabled: bool) -> int:
        """Disable (ending every session) or enable a user; returns sessions revoked."""
        record = await self.update(username, {"disabled": disabled}, end_sessions=disabled)
        revoked = await self.store.delete_user_sessions(record.user_id) if disabled else 0
        event(
            "user_disabled" if disabled else "user_enabled",
            logging.WARNING,
            user_id=record.user_id,
            sessions_revoked=revoked,
        )
        return revoked

    async def sessions(self, username: str) -> list[SessionOut]:
        """The user's live sessions, newest first (never tokens)."""
        user = await self.user(username)
        return [session_out(s, current=False) for _, s in await self.service.live_sessions(user.record)]

    async def revoke_all(self, username: str) -> int:
        """End every session of a user, including any being opened right now; returns how many were deleted.

        The documents go first; the epoch bump after them is what voids a session committed meanwhile.
        """
        user = await self.user(username)
        revoked = await self.store.delete_user_sessions(user.record.user_id, up_to_epoch=user.record.auth_epoch)
        record = await self.update(username, {}, end_sessions=True)
        event("sessions_revoked_all", logging.WARNING, user_id=record.user_id, count=revoked, by="admin")
        return revoked
