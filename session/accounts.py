"""Accounts: registration, the profile and its edits."""

from __future__ import annotations

import uuid
from typing import Any

from session import errors, plan
from session.activity import Activity
from session.authn import Authn
from session.context import NOWHERE, AuthContext, Basis, Origin
from session.events import EventRecord
from session.models import (
    LedgerRecord,
    ProfileOut,
    ProfileUpdateRequest,
    RegisterRequest,
    UserChange,
    UserOut,
    UserRecord,
)
from session.plan import Doc, Plan
from session.proofs import revoked
from session.reauth import require_recent_auth
from session.retry import TRIES, retrying
from session.security_log import event
from session.store import AlreadyExists, Versioned
from session.views import profile_out, user_out


class Accounts:
    """Registration and the profile."""

    def __init__(self, basis: Basis, authn: Authn, activity: Activity) -> None:
        self.basis = basis
        self.authn = authn
        self.activity = activity

    async def register(self, req: RegisterRequest, *, permissions: list[str] | None = None) -> UserOut:
        """Create a user. Raises ``RegistrationDisabled`` or ``UsernameTaken`` (atomically).

        ``permissions`` (the admin CLI) bypasses ``SESSION_ALLOW_REGISTRATION``.
        """
        settings = self.basis.settings
        if permissions is None and not settings.allow_registration:
            raise errors.RegistrationDisabled()
        password_hash = await self.basis.passwords.hash_async(req.password)
        now = self.basis.clock()
        record = UserRecord(
            user_id=uuid.uuid4().hex,
            username=req.username,
            password_hash=password_hash,
            display_name=req.display_name,
            email=req.email,
            permissions=list(settings.default_permissions if permissions is None else permissions),
            created_at=now,
            updated_at=now,
        )
        # The account's ledger is made with the user: every later commit that opens a session is checked on it.
        ledger = LedgerRecord(user_id=record.user_id, sessions_counted=settings.max_sessions_per_user > 0)
        try:
            await self.basis.store.create_user(record, ledger)
        except AlreadyExists:
            # The client library resends a commit whose answer was lost; if it had landed, the user is ours.
            stored = await self.basis.store.read_user(record.username)
            if stored is None or stored.record.user_id != record.user_id:
                raise errors.UsernameTaken(f"the username {req.username!r} is taken") from None
        event("user_registered", user_id=record.user_id)
        return user_out(record)

    @staticmethod
    def profile(ctx: AuthContext) -> ProfileOut:
        """The caller's profile and session (no store access: ``authenticate`` read it all)."""
        return profile_out(ctx.user.record, ctx.session)

    async def update_profile(
        self, ctx: AuthContext, req: ProfileUpdateRequest, *, if_match: int | None, origin: Origin = NOWHERE
    ) -> ProfileOut:
        """Apply a profile change, bumping ``version`` atomically.

        Raises ``VersionConflict`` when ``if_match`` is not the stored version, including when a
        concurrent update got there first, ``Unauthenticated`` when the caller's session was revoked
        meanwhile, and ``ReauthenticationRequired`` when it changes the email address (to a value
        other than the stored one). A change of the email address writes its ``email_changed`` event
        in the same commit.
        """
        ctx = await self.authn.strong(ctx)
        changes: dict[str, Any] = {name: getattr(req, name) for name in req.model_fields_set}
        # Each try's change and its event: a try that landed is recognised by its change.
        written: list[tuple[UserChange, EventRecord | None]] = []

        async def write(current: Versioned[UserRecord] | None) -> ProfileOut:
            if current is None:
                raise revoked()
            for change, recorded in written:
                if _landed(current.record, change):  # its answer was lost, and the library resent it
                    await self.activity.publish([recorded] if recorded else [])
                    return profile_out(current.record, ctx.session)
            if "email" in changes and changes["email"] != current.record.email:
                require_recent_auth(ctx, self.basis.clock(), self.basis.settings.reauth_seconds)
            if if_match is not None and current.record.version != if_match:
                raise errors.VersionConflict(f"the profile is at version {current.record.version}, not {if_match}")
            if not changes:
                return profile_out(current.record, ctx.session)
            update = UserChange(**changes, version=current.record.version + 1, updated_at=self.basis.clock())
            recorded = None
            if "email" in changes and changes["email"] != current.record.email:
                recorded = self.activity.event(current.record, "email_changed", origin, session_hash=ctx.token_hash)
            written.append((update, recorded))
            try:
                if recorded is None:
                    updated = (await self.basis.store.update_user(current, update)).record
                else:
                    user = Doc.user(current.record.username)
                    edit = plan.update(user, update, current.update_time)
                    await self.basis.store.commit(Plan((edit, self.activity.write(recorded))))
                    updated = current.record.model_copy(update=update.model_dump(exclude_unset=True))
            finally:  # cached entries hold the user as it was
                self.authn.forget_user(ctx.principal.user_id)
            event("profile_updated", user_id=ctx.principal.user_id, version=updated.version)
            await self.activity.publish([recorded] if recorded else [])
            return profile_out(updated, ctx.session)

        first: Versioned[UserRecord] | None = ctx.user
        return await retrying(
            first,
            write,
            lambda: self.authn.still_allowed(ctx),
            lambda: errors.VersionConflict("the profile kept changing; try again"),
            # Without If-Match the client asked for no precondition: try harder before a 412 it did not ask for.
            tries=TRIES if if_match is not None else 4 * TRIES,
        )


def _landed(stored: UserRecord, change: UserChange) -> bool:
    """True when ``stored`` is exactly what ``change`` wrote: its version and its own ``updated_at`` instant."""
    return stored.version == change.version and stored.updated_at == change.updated_at
