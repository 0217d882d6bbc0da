"""Reading a session: authenticate a token, touch it, and the instance's cache of what was read.

With ``SESSION_CACHE_SECONDS`` = N > 0, a session this instance read within the last N seconds is
accepted without a round trip (``fresh=False``); every operation that changes security state, lists
sessions or judges a password starts from ``strong``, which reads it again. Every write that changes
who may act (a revocation, a change of credentials) goes through ``forget`` / ``forget_user`` here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from session import binding, errors, liveness, tokens
from session.cache import SessionCache
from session.clock import seconds_until
from session.context import AuthContext, Basis, Principal
from session.errors import UnauthenticatedReason as Reason
from session.models import SessionRecord, UserRecord
from session.store import Versioned


class Authn:
    """Authentication and the cache of one instance."""

    def __init__(self, basis: Basis) -> None:
        self.basis = basis
        settings = basis.settings
        self._idle = timedelta(seconds=settings.idle_seconds)
        self._touch = timedelta(seconds=settings.touch_seconds)
        self._cache_seconds = settings.cache_seconds
        # Per instance; None in the strong mode (SESSION_CACHE_SECONDS=0).
        self.cache: SessionCache | None = SessionCache(settings.cache_size) if settings.cache_seconds > 0 else None

    async def authenticate(
        self, token: str, *, fresh: bool = False, presented: binding.Presented = binding.BEARER
    ) -> AuthContext:
        """Check a presented token: one round trip for the session and its user (none from the cache).

        Extends the idle deadline at most once per touch interval, with a precondition so that a
        concurrently revoked session stays revoked. Raises ``Unauthenticated`` for anything but a
        live session of an enabled user, and for a session bound to a browser's key (DBSC) that
        ``presented`` does not satisfy (``binding.refusal``: checked before the touch, so a request
        without the bound credential never extends the session).
        """
        parsed = tokens.parse(token)
        if parsed is None:
            raise errors.Unauthenticated(Reason.MALFORMED)
        if not fresh and self.cache is not None:
            cached = await self._cached(self.cache, parsed.token_hash, presented)
            if cached is not None:
                return cached
        return await self.read(parsed.username, parsed.token_hash, presented)

    async def read(self, username: str, token_hash: str, presented: binding.Presented | None = None) -> AuthContext:
        """``authenticate`` from the store; keeps what it read in the cache, if there is one.

        ``presented``: the request's bound credential, checked against a bound session (``None``: a
        re-read of a session this request was already admitted with).
        """
        cache = self.cache
        # Taken before the read is sent: the snapshot is at least this recent, and a revocation
        # through this instance from now on keeps this read out of the cache.
        read_at, revision = (cache.monotonic(), cache.revision) if cache is not None else (0.0, 0)
        session, user = await self.basis.store.read_auth(username, token_hash)
        now = self.basis.clock()
        reason = Reason.UNKNOWN if session is None else liveness.why_not_live(session.record, _record(user), now)
        if session is None or user is None or reason is not None:
            if cache is not None:
                cache.drop(token_hash)
            raise errors.Unauthenticated(reason or Reason.REVOKED)
        if presented is not None:
            refused = binding.refusal(self.basis.settings, session.record, presented, now)
            if refused is not None:
                raise errors.Unauthenticated(refused)
        ctx = await self._accept(token_hash, session.record, user, now, fresh=True)
        if cache is not None:
            cache.put(token_hash, ctx.session, user, read_at, revision)
        return ctx

    async def _cached(self, cache: SessionCache, token_hash: str, presented: binding.Presented) -> AuthContext | None:
        """The session of ``token_hash`` from the cache, if this instance read it less than N seconds ago.

        ``None`` (read the store) when there is no entry, it is N seconds old or more, or
        by what it holds the session has expired (another instance may have extended it), or
        the bound credential presented is not one it holds (another instance may have issued it).
        Raises ``Unauthenticated`` when a bound session's credential is missing (or a Bearer use).
        """
        entry = cache.get(token_hash)
        if entry is None:
            return None
        now = self.basis.clock()
        if cache.monotonic() - entry.read_at >= self._cache_seconds or not liveness.is_live(
            entry.session, entry.user.record, now
        ):
            cache.drop(token_hash)
            return None
        if binding.may_become_bound(self.basis.settings, entry.session, now):
            return None  # its registration may have been accepted elsewhere: only the store can say
        refused = binding.refusal(self.basis.settings, entry.session, presented, now)
        if refused in (Reason.BOUND_CREDENTIAL_MISSING, Reason.BOUND_SESSION_BEARER):
            raise errors.Unauthenticated(refused)  # a bound session stays bound: no read can change that
        if refused is not None:
            return None
        return await self._accept(token_hash, entry.session, entry.user, now, fresh=False)

    async def _accept(
        self, token_hash: str, record: SessionRecord, user: Versioned[UserRecord], now: datetime, *, fresh: bool
    ) -> AuthContext:
        """A live session's ``AuthContext``, touching it first if its touch interval has passed.

        The touch is a write with an exists-precondition and no read; when it finds the
        session gone, the cache forgets it and ``Unauthenticated`` is raised.
        """
        extended_for = None
        if now - record.last_seen_at >= self._touch:
            expires_at = min(now + self._idle, record.absolute_expires_at)
            if not await self.basis.store.touch_session(token_hash, now, expires_at):
                self.forget(token_hash)
                raise errors.Unauthenticated(Reason.UNKNOWN)
            record = record.model_copy(update={"last_seen_at": now, "expires_at": expires_at})
            extended_for = seconds_until(expires_at - now)
            if not fresh and self.cache is not None:
                self.cache.touched(token_hash, now, expires_at)
        principal = Principal(
            user_id=user.record.user_id,
            username=user.record.username,
            permissions=frozenset(user.record.permissions),
            session_id=record.public_id,
            expires_at=record.expires_at,
        )
        return AuthContext(principal, token_hash, record, user, extended_for=extended_for, fresh=fresh)

    async def strong(self, ctx: AuthContext) -> AuthContext:
        """``ctx`` if it was read from the store for this request; else the session checked again there.

        Every operation that changes security state, lists sessions or judges a password
        starts here, so a cached ``AuthContext`` can never decide one. Raises ``Unauthenticated``.
        """
        if ctx.fresh:
            return ctx
        return await self.read(ctx.principal.username, ctx.token_hash)

    async def still_allowed(self, ctx: AuthContext) -> Versioned[UserRecord] | None:
        """The caller's user read again, if it still accepts the caller's session as stored now; else ``None``.

        The session is read again too: a revoke-all made with it re-stamps it with the new epoch.
        """
        session, user = await self.basis.store.read_auth(ctx.principal.username, ctx.token_hash)
        if session is None or user is None or not liveness.is_live(session.record, user.record, self.basis.clock()):
            return None
        return user

    def forget_user(self, user_id: str) -> None:
        """Drop the user's cached sessions: a change made through this instance takes effect on it at once."""
        if self.cache is not None:
            self.cache.forget_user(user_id)

    def forget(self, token_hash: str) -> None:
        """Drop one cached session (it was revoked, replaced or evicted through this instance)."""
        if self.cache is not None:
            self.cache.forget(token_hash)

    async def logout(self, token: str) -> str | None:
        """Revoke the session of ``token``; idempotent. Returns the session's log id, if well-formed."""
        parsed = tokens.parse(token)
        if parsed is None:
            return None
        self.forget(parsed.token_hash)
        try:
            await self.basis.store.delete_session(parsed.token_hash)
        finally:  # again: a read that was in flight during the delete must not be kept
            self.forget(parsed.token_hash)
        return tokens.log_id(parsed.token_hash)


def _record(user: Versioned[UserRecord] | None) -> UserRecord | None:
    return user.record if user is not None else None
