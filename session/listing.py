"""A user's sessions: listing them a page at a time, revoking one, revoking all."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from session import errors, liveness, pages, plan, tokens
from session.authn import Authn
from session.context import NOWHERE, AuthContext, Basis, Origin
from session.events import EventRecord
from session.lockout import Lockout
from session.models import SessionRecord, SessionsOut, UserChange, UserRecord
from session.opening import Opener
from session.plan import Doc, Plan, Write
from session.proofs import revoked
from session.reauth import require_recent_auth
from session.retry import CONFLICT_TRIES, retrying
from session.security_log import event
from session.store import AccountView, PreconditionFailed, StoreUnavailable
from session.views import session_out

# Sessions per page of GET /sessions when the client names no limit, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class Listing:
    """Lists and revocations of a user's sessions."""

    def __init__(self, basis: Basis, authn: Authn, lockout: Lockout, opener: Opener) -> None:
        self.basis = basis
        self.authn = authn
        self.lockout = lockout
        self.opener = opener
        self.activity = opener.activity
        self._device_lifetime = timedelta(days=basis.settings.device_cookie_days)

    def _recent(self, ctx: AuthContext) -> None:
        require_recent_auth(ctx, self.basis.clock(), self.basis.settings.reauth_seconds)

    async def list_sessions(
        self, ctx: AuthContext, *, limit: int = DEFAULT_PAGE_SIZE, after: tuple[datetime, str] | None = None
    ) -> SessionsOut:
        """One page of the caller's live sessions, newest first, and the token of the next page (or ``None``).

        Raises ``ReauthenticationRequired`` (the list shows the other sessions). ``after``: the
        position a page token names (``pages.sessions_position``).
        """
        ctx = await self.authn.strong(ctx)
        self._recent(ctx)
        sessions, next_token = await self.live_sessions_page(ctx.user.record, limit=limit, after=after)
        return SessionsOut(
            sessions=[session_out(s, current=h == ctx.token_hash) for h, s in sessions], next_page_token=next_token
        )

    async def live_sessions(self, user: UserRecord) -> list[tuple[str, SessionRecord]]:
        """The user's sessions that ``authenticate`` would accept now, newest first, with their keys."""
        now = self.basis.clock()
        stored = await self.basis.store.list_sessions(user.user_id)
        return [(h, s) for h, s in stored if liveness.is_live(s, user, now)]

    async def live_sessions_page(
        self, user: UserRecord, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        """Up to ``limit`` of the user's live sessions after position ``after``, and the next page's token.

        Liveness is judged after the query, so the store is read in rounds of ``limit + 1``
        documents until the page holds ``limit`` live sessions and one more live one is known to
        follow, or the documents run out: a page is short only when it is the last, and a next
        token always leads to a non-empty page (as of the read). Dead documents cost a read each
        but never fill a page.
        """
        now = self.basis.clock()
        live: list[tuple[str, SessionRecord]] = []
        position = after
        while len(live) <= limit:
            batch = await self.basis.store.list_sessions(user.user_id, limit=limit + 1, after=position)
            live += [(h, s) for h, s in batch if liveness.is_live(s, user, now)]
            if len(batch) < limit + 1:
                break
            last = batch[-1][1]
            position = (last.created_at, last.public_id)
        if len(live) <= limit:
            return live, None
        last = live[limit - 1][1]
        return live[:limit], pages.encode_sessions(last.created_at, last.public_id)

    async def revoke_session(self, ctx: AuthContext, session_id: str, *, origin: Origin = NOWHERE) -> bool:
        """Revoke one of the caller's sessions by public id; True if it was the current one.

        Raises ``NotFound`` for an unknown id or another user's, ``ReauthenticationRequired``
        for any but the current session (decided before the lookup: no answer about other ids).
        The delete and its ``session_revoked`` event are one commit; a session already gone
        (a logout, another revoke) is not an error, and records nothing.
        """
        if not tokens.is_public_id(session_id):
            raise errors.NotFound("no such session")
        ctx = await self.authn.strong(ctx)
        if session_id != ctx.session.public_id:
            self._recent(ctx)
        found = await self.basis.store.find_session(session_id)
        if found is None or found[1].user_id != ctx.principal.user_id:
            raise errors.NotFound("no such session")
        change = Plan((plan.delete(Doc.session(found[0]), must_exist=True),))
        revoked_event = self.activity.event(ctx.user.record, "session_revoked", origin, session_hash=found[0])
        try:
            await self.activity.commit(change, revoked_event)
        except PreconditionFailed:
            pass  # gone meanwhile: ended by someone else, whose own event (if any) says so
        finally:
            self.authn.forget(found[0])
        event("session_revoked", user_id=ctx.principal.user_id, sid=tokens.log_id(found[0]))
        return found[0] == ctx.token_hash

    async def revoke_all(
        self, ctx: AuthContext, *, include_current: bool, device: str | None = None, origin: Origin = NOWHERE
    ) -> int:
        """Revoke every session of the caller, except the current one unless asked.

        Deletes the documents, then bumps the user's ``auth_epoch`` in one commit under the ledger's
        precondition that also re-stamps the current session when it stays, resets the ledger (the
        caller's session and device) and re-stamps the caller's device (``device``, if it is one of the
        user's): that commit is the moment the revocation takes effect, so a session committed by a
        login that read the account before it is void, and every other device loses its trust. Raises
        ``Unauthenticated`` when the caller's own session was ended meanwhile, and
        ``ReauthenticationRequired``. The ``sessions_revoked`` event is in that commit.
        """
        ctx = await self.authn.strong(ctx)
        self._recent(ctx)
        keep = None if include_current else ctx.token_hash
        # Only what the caller's epoch covers: a password change that committed meanwhile opened a newer session.
        count = await self.basis.store.delete_user_sessions(
            ctx.principal.user_id, keep=keep, up_to_epoch=ctx.session.auth_epoch
        )
        presented = self.lockout.presented(ctx.principal.username, device)
        device_hash = presented.device_hash if presented is not None else None

        async def read() -> AccountView:
            username = ctx.principal.username
            return await self.basis.store.read_account(username, sessions=[ctx.token_hash], device=device_hash)

        # The ledger's changed_at each try wrote, and its event: a try that landed is recognised by it.
        written: dict[datetime, EventRecord] = {}
        landed: list[EventRecord] = []  # the event of the try that landed

        async def bump(view: AccountView) -> None:
            ledger = view.ledger.record if view.ledger is not None else None
            if ledger is not None and ledger.changed_at is not None and ledger.changed_at in written:
                landed.append(written[ledger.changed_at])
                return  # an earlier try landed though its answer was lost (the client library resent it)
            revocation = self._revocation(ctx, view, keep, device_hash, origin)
            written[revocation.changed_at] = revocation.event
            try:
                await self.basis.store.commit(revocation.plan)
            except StoreUnavailable:
                at = await _landed(read, written)
                if at is None:
                    raise
                landed.append(written[at])
                return
            landed.append(revocation.event)

        try:
            await retrying(await read(), bump, read, tries=CONFLICT_TRIES)
        finally:
            self.authn.forget_user(ctx.principal.user_id)
        await self.activity.publish(landed[-1:])
        event(
            "sessions_revoked_all",
            logging.WARNING,
            user_id=ctx.principal.user_id,
            count=count,
            include_current=include_current,
        )
        return count

    def _revocation(
        self, ctx: AuthContext, view: AccountView, keep: str | None, device_hash: str | None, origin: Origin
    ) -> _Revocation:
        """Revoke-all's commit, from the account as read; raises ``Unauthenticated`` if the caller lost it."""
        session, user = view.sessions.get(ctx.token_hash), view.user
        now = self.basis.clock()
        if user is None:
            raise revoked()
        if keep is not None:
            # The kept session must still be live as stored now: a parallel revoke-all from it re-stamped it,
            # a password change voided it.
            if session is None or not liveness.is_live(session.record, user.record, now):
                raise revoked()
        elif not liveness.same_credentials(ctx.user.record, user.record):
            raise revoked()  # ending its own session too: only under the credentials it was read with
        epoch = user.record.auth_epoch + 1
        known = view.device is not None and liveness.device_known(view.device.record, user.record, now)
        kept_device = device_hash if known else None
        username = user.record.username
        restamp: Write | None = None
        if kept_device is not None:
            fields = {"auth_epoch": epoch, "expires_at": now + self._device_lifetime}
            restamp = plan.update(Doc.device(username, kept_device), fields)
        reset = self.opener.reset_ledger(user.record, view.ledger, keep, kept_device)
        changed_at = reset[0].fields["changed_at"]
        assert isinstance(changed_at, datetime)
        revoked_event = self.activity.event(
            user.record, "sessions_revoked", origin, session_hash=keep, detail={"include_current": keep is None}
        )
        writes = Plan().then(
            plan.update(Doc.user(username), UserChange(auth_epoch=epoch, updated_at=now)),
            plan.update(Doc.session(keep), {"auth_epoch": epoch}) if keep else None,
            *reset,
            restamp,
            self.activity.write(revoked_event),
        )
        return _Revocation(writes, changed_at, revoked_event)


@dataclass(frozen=True, slots=True)
class _Revocation:
    plan: Plan
    changed_at: datetime  # written to the ledger: how a try that landed is recognised
    event: EventRecord


async def _landed(read: Callable[[], Awaitable[AccountView]], written: Mapping[datetime, object]) -> datetime | None:
    """The try that landed, by the ledger's ``changed_at`` (an answer lost on the way back); ``None`` if none did."""
    view = await read()
    ledger = view.ledger.record if view.ledger is not None else None
    return ledger.changed_at if ledger is not None and ledger.changed_at in written else None
