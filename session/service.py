"""The session rules: register, login, authenticate, logout, and what a signed-in user may do.

No web framework and no google.cloud here: requests come in as validated models, results go out
as models or small dataclasses, failures as ``session.errors``. Time comes from the injected clock.
Operations for administrators live in ``session.admin`` and reuse the rules written here.

The rules this facade composes each have one home:

- ``session.liveness``: whether a session or a device is accepted by its account, now (pure);
- ``session.lockout``: the counting rule (a guess is counted before it is judged, and given back
  unless judged wrong);
- ``session.opening``: a session is committed only while its credentials are current (the ledger's
  precondition), within the caps on sessions and devices;
- ``session.retry``: the one loop around a write that a concurrent change can make fail;
- ``SessionService._cached`` / ``SessionService._strong``: when a session may be accepted from this
  instance's cache (``SESSION_CACHE_SECONDS``), and the operations that always read it again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from session import errors, liveness, pages, plan, tokens
from session.cache import SessionCache
from session.clock import Clock, seconds_until, utc_now
from session.config import Settings
from session.errors import UnauthenticatedReason as Reason
from session.lockout import Counted, Lockout
from session.models import (
    LedgerRecord,
    LoginOut,
    LoginRequest,
    PasswordChangeRequest,
    ProfileOut,
    ProfileUpdateRequest,
    ReauthenticateRequest,
    RegisterRequest,
    SessionInfo,
    SessionOut,
    SessionRecord,
    SessionsOut,
    UserChange,
    UserOut,
    UserRecord,
)
from session.opening import CredentialsChanged, DeviceUse, Guess, LedgerPlan, NewSession, Opener, Opening
from session.passwords import Passwords
from session.plan import Doc, Plan
from session.retry import TRIES, retrying
from session.security_log import event
from session.store import AccountView, AlreadyExists, Store, Versioned

# Sessions per page of GET /sessions when the client names no limit, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an authenticated request comes from. Immutable."""

    user_id: str
    username: str
    permissions: frozenset[str]
    session_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuthContext:
    """An authenticated request: the principal plus what the service needs to act on it."""

    principal: Principal
    token_hash: str
    session: SessionRecord
    user: Versioned[UserRecord]
    # Seconds the session now has left, when this request extended it (a touch); else None.
    extended_for: int | None = None
    # True when the session and user were read from the store for this request; False: from the cache.
    fresh: bool = True


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A new session: the response body, the raw token, and the cookie lifetime."""

    body: LoginOut
    token: str
    max_age: int
    epoch: int = 0  # the auth_epoch the session was committed under
    # The device cookie a login sets (a new one, or the trusted one it presented), and its lifetime.
    device_token: str | None = None
    device_max_age: int = 0


class _Wrong(Exception):
    """A proof of the password judged wrong: its guess stays counted."""

    def __init__(self, error: errors.SessionError) -> None:
        self.error = error


def _revoked() -> errors.SessionError:
    return errors.Unauthenticated(Reason.REVOKED)


class SessionService:
    """The session rules over a store. One per instance; safe to share across requests."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        passwords: Passwords | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.passwords = passwords or Passwords(settings)
        self.clock = clock
        self._ttl = timedelta(seconds=settings.ttl_seconds)
        self._idle = timedelta(seconds=settings.idle_seconds)
        self._touch = timedelta(seconds=settings.touch_seconds)
        self._device_lifetime = timedelta(days=settings.device_cookie_days)
        self._reauth = timedelta(seconds=settings.reauth_seconds)
        self._cache_seconds = settings.cache_seconds
        # Per instance; None in the strong mode (SESSION_CACHE_SECONDS=0).
        self.lockout = Lockout(settings, store, lambda: self.clock())
        self.opener = Opener(settings, store, lambda: self.clock())
        self.cache: SessionCache | None = SessionCache(settings.cache_size) if settings.cache_seconds > 0 else None

    # --- accounts ------------------------------------------------------------------------

    async def register(self, req: RegisterRequest, *, permissions: list[str] | None = None) -> UserOut:
        """Create a user. Raises ``RegistrationDisabled`` or ``UsernameTaken`` (atomically).

        ``permissions`` (the admin CLI) bypasses ``SESSION_ALLOW_REGISTRATION``.
        """
        if permissions is None and not self.settings.allow_registration:
            raise errors.RegistrationDisabled()
        password_hash = await self.passwords.hash_async(req.password)
        now = self.clock()
        record = UserRecord(
            user_id=uuid.uuid4().hex,
            username=req.username,
            password_hash=password_hash,
            display_name=req.display_name,
            email=req.email,
            permissions=list(self.settings.default_permissions if permissions is None else permissions),
            created_at=now,
            updated_at=now,
        )
        # The account's ledger is made with the user: every later commit that opens a session is checked on it.
        ledger = LedgerRecord(user_id=record.user_id, sessions_counted=self.settings.max_sessions_per_user > 0)
        try:
            await self.store.create_user(record, ledger)
        except AlreadyExists:
            raise errors.UsernameTaken(f"the username {req.username!r} is taken") from None
        event("user_registered", user_id=record.user_id)
        return _user_out(record)

    # --- login -----------------------------------------------------------------------------

    async def login(
        self, req: LoginRequest, *, user_agent: str | None = None, device: str | None = None, address: str | None = None
    ) -> LoginResult:
        """Verify a password and open a new session.

        The guess is counted before it is judged (``session.lockout``: the counting rule), in the
        same round trip as the user read. Raises ``TooManyAttempts`` beyond the limit (no password
        is verified then), ``InvalidCredentials`` for an unknown user or a wrong password (same
        answer, same work) and for a login whose credentials changed (password, disable, revoke-all)
        while it was verified, ``AccountDisabled`` for a disabled user with the right password.

        ``device`` (the device cookie) of a device the user trusts makes the guess count on that
        device's own counter instead, and only there; ``address`` (the client's) is counted too,
        when ``address_max_failures`` is set, for every login without a trusted device. A success
        returns the device cookie to set (``LoginResult.device_token``): the one presented, renewed
        (and re-stamped with the current credentials), or a new one.
        """
        now = self.clock()
        counted = await self.lockout.count(req.username, device, address, now)
        guess = await self.lockout.judge(counted, now)
        user = counted.view.user
        judged_wrong = False
        try:
            if user is None:
                ok = await self.passwords.verify_dummy_async(req.password)
            else:
                ok = await self.passwords.verify_async(user.record.password_hash, req.password)
            if not ok:
                judged_wrong = True
                event(
                    "login_failed",
                    logging.WARNING,
                    username_key=guess.counted.key[:12],
                    attempt=guess.counted.count,
                    trusted_device=counted.trusted,
                )
                raise errors.InvalidCredentials("invalid username or password")
            assert user is not None
            if user.record.disabled:
                event("login_refused_disabled", logging.WARNING, user_id=user.record.user_id)
                raise errors.AccountDisabled()
            rehash = None
            if self.passwords.needs_rehash(user.record.password_hash):
                rehash = await self.passwords.hash_async(req.password)
            use = self._device_use(counted, mint=True)
            opening = Opening(user, counted.view.ledger, user_agent, guess, device=use, rehash=rehash)
            try:
                new, ledger = await self.opener.open(opening)
            except CredentialsChanged:
                event("login_lost_race", logging.WARNING, user_id=user.record.user_id)
                raise errors.InvalidCredentials("invalid username or password") from None
        except Exception:
            if not judged_wrong:  # no verdict on this guess: it goes back (the counting rule)
                await self.lockout.give_back(guess)
            raise
        self._evicted(user.record, ledger)
        event(
            "login_succeeded",
            user_id=user.record.user_id,
            sid=tokens.log_id(new.token_hash),
            trusted_device=counted.trusted,
        )
        assert use is not None
        return self._result(user.record, new, device_token=use.token)

    def _device_use(self, counted: Counted, *, mint: bool) -> DeviceUse | None:
        """The device a successful proof trusts: the presented one of this user, renewed; else (``mint``) a new one."""
        if counted.device is not None and counted.view.device is not None:
            stored = counted.view.device.record
            return DeviceUse(counted.device.token, counted.device.device_hash, stored.created_at, stored=True)
        if not mint or counted.view.user is None:
            return None
        token = tokens.mint(counted.view.user.record.username)
        return DeviceUse(token, tokens.device_hash(token), self.clock(), stored=False)

    def _result(self, user: UserRecord, new: NewSession, *, device_token: str | None = None) -> LoginResult:
        now = new.record.created_at
        body = LoginOut(
            token=new.token,
            user_id=user.user_id,
            username=user.username,
            permissions=user.permissions,
            logged_in_at=now,
            expires_at=new.record.expires_at,
        )
        return LoginResult(
            body=body,
            token=new.token,
            max_age=seconds_until(new.record.expires_at - now),
            epoch=new.record.auth_epoch,
            device_token=device_token,
            device_max_age=seconds_until(self._device_lifetime) if device_token else 0,
        )

    def _evicted(self, user: UserRecord, ledger: LedgerPlan) -> None:
        """Forget and log the sessions a new session's commit ended to stay under the cap."""
        for token_hash in ledger.evicted_sessions:
            self._forget(token_hash)
            event("session_evicted", user_id=user.user_id, sid=tokens.log_id(token_hash))
        for device_hash in ledger.evicted_devices:
            event("device_untrusted", user_id=user.user_id, device=tokens.log_id(device_hash))

    # --- authentication ------------------------------------------------------------------

    async def authenticate(self, token: str, *, fresh: bool = False) -> AuthContext:
        """Check a presented token: one round trip for the session and its user.

        With ``SESSION_CACHE_SECONDS`` = N > 0 and not ``fresh``, a session this
        instance read within the last N seconds is accepted without a round trip
        (``_cached``); the result then has ``fresh=False``, and every operation that
        changes security state reads it again (``_strong``). Extends the idle
        deadline at most once per touch interval, with a precondition so that a
        concurrently revoked session stays revoked. Raises ``Unauthenticated`` for
        anything but a live session of an enabled user.
        """
        parsed = tokens.parse(token)
        if parsed is None:
            raise errors.Unauthenticated(Reason.MALFORMED)
        if not fresh and self.cache is not None:
            cached = await self._cached(self.cache, parsed.token_hash)
            if cached is not None:
                return cached
        return await self._read(parsed.username, parsed.token_hash)

    async def _read(self, username: str, token_hash: str) -> AuthContext:
        """``authenticate`` from the store; keeps what it read in the cache, if there is one."""
        cache = self.cache
        # Taken before the read is sent: the snapshot is at least this recent, and a revocation
        # through this instance from now on keeps this read out of the cache.
        read_at, revision = (cache.monotonic(), cache.revision) if cache is not None else (0.0, 0)
        session, user = await self.store.read_auth(username, token_hash)
        now = self.clock()
        reason = (
            Reason.UNKNOWN
            if session is None
            else liveness.why_not_live(session.record, user.record if user else None, now)
        )
        if session is None or user is None or reason is not None:
            if cache is not None:
                cache.drop(token_hash)
            raise errors.Unauthenticated(reason or Reason.REVOKED)
        ctx = await self._accept(token_hash, session.record, user, now, fresh=True)
        if cache is not None:
            cache.put(token_hash, ctx.session, user, read_at, revision)
        return ctx

    async def _cached(self, cache: SessionCache, token_hash: str) -> AuthContext | None:
        """The session of ``token_hash`` from the cache, if this instance read it less than N seconds ago.

        ``None`` (read the store) when there is no entry, it is N seconds old or more, or
        by what it holds the session has expired (another instance may have extended it).
        """
        entry = cache.get(token_hash)
        if entry is None:
            return None
        now = self.clock()
        if (
            cache.monotonic() - entry.read_at >= self._cache_seconds
            or liveness.why_not_live(entry.session, entry.user.record, now) is not None
        ):
            cache.drop(token_hash)
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
            if not await self.store.touch_session(token_hash, now, expires_at):
                self._forget(token_hash)
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
        return AuthContext(
            principal=principal,
            token_hash=token_hash,
            session=record,
            user=user,
            extended_for=extended_for,
            fresh=fresh,
        )

    async def _strong(self, ctx: AuthContext) -> AuthContext:
        """``ctx`` if it was read from the store for this request; else the session checked again there.

        Every operation that changes security state, lists sessions or judges a password
        starts here, so a cached ``AuthContext`` can never decide one. Raises ``Unauthenticated``.
        """
        if ctx.fresh:
            return ctx
        return await self._read(ctx.principal.username, ctx.token_hash)

    def forget_user(self, user_id: str) -> None:
        """Drop the user's cached sessions: a change made through this instance takes effect on it at once."""
        if self.cache is not None:
            self.cache.forget_user(user_id)

    def _forget(self, token_hash: str) -> None:
        if self.cache is not None:
            self.cache.forget(token_hash)

    async def logout(self, token: str) -> str | None:
        """Revoke the session of ``token``; idempotent. Returns the session's log id, if well-formed."""
        parsed = tokens.parse(token)
        if parsed is None:
            return None
        self._forget(parsed.token_hash)
        try:
            await self.store.delete_session(parsed.token_hash)
        finally:  # again: a read that was in flight during the delete must not be kept
            self._forget(parsed.token_hash)
        return tokens.log_id(parsed.token_hash)

    # --- profile ---------------------------------------------------------------------------

    def profile(self, ctx: AuthContext) -> ProfileOut:
        """The caller's profile and session (no store access: ``authenticate`` read it all)."""
        return _profile_out(ctx.user.record, ctx.session)

    async def update_profile(self, ctx: AuthContext, req: ProfileUpdateRequest, *, if_match: int | None) -> ProfileOut:
        """Apply a profile change, bumping ``version`` atomically.

        Raises ``VersionConflict`` when ``if_match`` is not the stored version,
        including when a concurrent update got there first, ``Unauthenticated``
        when the caller's session was revoked meanwhile, and ``ReauthenticationRequired``
        when it changes the email address (to a value other than the stored one).
        """
        ctx = await self._strong(ctx)
        changes: dict[str, Any] = {name: getattr(req, name) for name in req.model_fields_set}

        async def write(current: Versioned[UserRecord] | None) -> ProfileOut:
            if current is None:
                raise _revoked()
            if "email" in changes and changes["email"] != current.record.email:
                self._require_recent_auth(ctx)
            if if_match is not None and current.record.version != if_match:
                raise errors.VersionConflict(f"the profile is at version {current.record.version}, not {if_match}")
            if not changes:
                return _profile_out(current.record, ctx.session)
            update = UserChange(**changes, version=current.record.version + 1, updated_at=self.clock())
            try:
                updated = await self.store.update_user(current, update)
            finally:  # cached entries hold the user as it was
                self.forget_user(ctx.principal.user_id)
            event("profile_updated", user_id=ctx.principal.user_id, version=updated.record.version)
            return _profile_out(updated.record, ctx.session)

        first: Versioned[UserRecord] | None = ctx.user
        return await retrying(
            first,
            write,
            lambda: self._still_allowed(ctx),
            lambda: errors.VersionConflict("the profile kept changing; try again"),
            # Without If-Match the client asked for no precondition: try harder before a 412 it did not ask for.
            tries=TRIES if if_match is not None else 4 * TRIES,
        )

    async def _still_allowed(self, ctx: AuthContext) -> Versioned[UserRecord] | None:
        """The caller's user read again, if it still accepts the caller's session as stored now; else ``None``.

        The session is read again too: a revoke-all made with it re-stamps it with the new epoch.
        """
        session, user = await self.store.read_auth(ctx.principal.username, ctx.token_hash)
        if (
            session is None
            or user is None
            or liveness.why_not_live(session.record, user.record, self.clock()) is not None
        ):
            return None
        return user

    async def change_password(
        self,
        ctx: AuthContext,
        req: PasswordChangeRequest,
        *,
        user_agent: str | None = None,
        device: str | None = None,
    ) -> LoginResult:
        """Change the password, end every other session and device of the user, and open a new session.

        The current password is a guess like a login's (``session.lockout``), judged on the trusted
        device's counter when ``device`` is one. The new hash, the new epoch, the caller's new session
        and its device re-stamped are one commit under the ledger's precondition, which profile edits
        never disturb. Raises ``TooManyAttempts`` past the limit (even for the right password),
        ``WrongCurrentPassword`` (403) when it is wrong, ``Unauthenticated`` when the caller's session
        was ended meanwhile (by another change, say).
        """
        ctx = await self._strong(ctx)

        async def opening(user: Versioned[UserRecord], counted: Counted, guess: Guess) -> Opening:
            if not await self.passwords.verify_async(user.record.password_hash, req.current_password):
                event("password_change_rejected", logging.WARNING, user_id=ctx.principal.user_id)
                raise _Wrong(errors.WrongCurrentPassword("the current password is wrong"))
            new_hash = await self.passwords.hash_async(req.new_password)
            device_use = self._device_use(counted, mint=False)
            return Opening(user, counted.view.ledger, user_agent, guess, device=device_use, new_password_hash=new_hash)

        try:
            new = await self._prove_and_open(ctx, device, opening)
        finally:
            self.forget_user(ctx.principal.user_id)
        revoked = await self.store.delete_user_sessions(
            ctx.principal.user_id, keep=new.token_hash, up_to_epoch=new.record.auth_epoch - 1
        )
        event("password_changed", logging.WARNING, user_id=ctx.principal.user_id, sessions_revoked=revoked)
        return self._result(ctx.user.record, new)

    async def reauthenticate(
        self, ctx: AuthContext, req: ReauthenticateRequest, *, device: str | None = None
    ) -> LoginResult:
        """Prove the password again: the caller's session is replaced by a new one with ``auth_time`` now.

        The password is a guess like a login's. The new session is opened like a login's (new
        token, fresh deadlines, the old session's user agent), the old one deleted in the same
        commit with an exists precondition, and the browser's device (if it presents one of the
        user's) re-stamped with the current credentials. Raises ``TooManyAttempts`` past the limit
        (even for the right password), ``WrongCurrentPassword`` (403) when it is wrong,
        ``Unauthenticated`` when the session was ended meanwhile, including by a parallel
        reauthentication with the same token (only one can win).
        """
        ctx = await self._strong(ctx)

        async def opening(user: Versioned[UserRecord], counted: Counted, guess: Guess) -> Opening:
            if not await self.passwords.verify_async(user.record.password_hash, req.password):
                event("reauthentication_rejected", logging.WARNING, user_id=ctx.principal.user_id)
                raise _Wrong(errors.WrongCurrentPassword("the password is wrong"))
            device_use = self._device_use(counted, mint=False)
            ledger = counted.view.ledger
            return Opening(user, ledger, ctx.session.user_agent, guess, device=device_use, replaces=ctx.token_hash)

        try:
            new = await self._prove_and_open(ctx, device, opening)
        finally:
            self._forget(ctx.token_hash)
        event(
            "reauthenticated",
            user_id=ctx.principal.user_id,
            sid=tokens.log_id(ctx.token_hash),
            new_sid=tokens.log_id(new.token_hash),
        )
        return self._result(ctx.user.record, new)

    async def _prove_and_open(
        self,
        ctx: AuthContext,
        device: str | None,
        opening: Callable[[Versioned[UserRecord], Counted, Guess], Awaitable[Opening]],
    ) -> NewSession:
        """A signed-in user's proof of the password: counted, judged, verified by ``opening``, then committed.

        The user is read again with the ledger while the guess is counted (one round trip): the
        proof is verified against that user, and the commit's precondition is on that ledger. A
        wrong password keeps its guess; anything else without a verdict gives it back.
        """
        now = self.clock()
        counted = await self.lockout.count(ctx.principal.username, device, None, now)
        guess = await self.lockout.judge(counted, now)
        user = counted.view.user
        try:
            if user is None or not liveness.same_credentials(ctx.user.record, user.record):
                raise _revoked()
            new, ledger = await self.opener.open(await opening(user, counted, guess))
        except _Wrong as wrong:
            raise wrong.error from None
        except CredentialsChanged:
            await self.lockout.give_back(guess)
            raise _revoked() from None
        except Exception:
            await self.lockout.give_back(guess)
            raise
        self._evicted(user.record, ledger)
        return new

    def _require_recent_auth(self, ctx: AuthContext) -> None:
        """Raise ``ReauthenticationRequired`` unless the password was proved within ``SESSION_REAUTH_SECONDS``.

        Call it on a ``ctx`` from ``_strong``. A cached ``auth_time`` would do as well: a
        session's ``auth_time`` never changes (a reauthentication makes a new session), but
        every caller reads the session again anyway, for its own reasons.
        """
        if self.clock() - ctx.session.auth_time > self._reauth:
            event("reauthentication_required", user_id=ctx.principal.user_id, sid=tokens.log_id(ctx.token_hash))
            raise errors.ReauthenticationRequired(self.settings.reauth_seconds)

    # --- sessions --------------------------------------------------------------------------

    async def list_sessions(
        self, ctx: AuthContext, *, limit: int = DEFAULT_PAGE_SIZE, after: tuple[datetime, str] | None = None
    ) -> SessionsOut:
        """One page of the caller's live sessions, newest first, and the token of the next page (or ``None``).

        Raises ``ReauthenticationRequired`` (the list shows the other sessions).

        ``after``: the position a page token names (``page_position``).
        """
        ctx = await self._strong(ctx)
        self._require_recent_auth(ctx)
        sessions, next_token = await self.live_sessions_page(ctx.user.record, limit=limit, after=after)
        return SessionsOut(
            sessions=[session_out(s, current=h == ctx.token_hash) for h, s in sessions], next_page_token=next_token
        )

    @staticmethod
    def page_position(page_token: str | None) -> tuple[datetime, str] | None:
        """The position a sessions page token names; raises ``pages.BadPageToken`` (an ``InvalidRequest``)."""
        return pages.sessions_position(page_token)

    async def live_sessions(self, user: UserRecord) -> list[tuple[str, SessionRecord]]:
        """The user's sessions that ``authenticate`` would accept now, newest first, with their keys."""
        now = self.clock()
        return [
            (h, s)
            for h, s in await self.store.list_sessions(user.user_id)
            if liveness.why_not_live(s, user, now) is None
        ]

    async def live_sessions_page(
        self, user: UserRecord, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        """Up to ``limit`` of the user's live sessions after position ``after``, and the next page's token.

        Liveness is judged after the query, so the store is read in rounds of
        ``limit + 1`` documents until the page holds ``limit`` live sessions and one
        more live one is known to follow, or the documents run out: a page is short
        only when it is the last, and a next token always leads to a non-empty page
        (as of the read). Dead documents (expired but not yet removed by TTL, revoked)
        cost a read each but never fill a page.
        """
        now = self.clock()
        live: list[tuple[str, SessionRecord]] = []
        position = after
        while len(live) <= limit:
            batch = await self.store.list_sessions(user.user_id, limit=limit + 1, after=position)
            for h, s in batch:
                if liveness.why_not_live(s, user, now) is None:
                    live.append((h, s))
                    if len(live) > limit:
                        break
            if len(batch) < limit + 1:
                break
            last = batch[-1][1]
            position = (last.created_at, last.public_id)
        if len(live) <= limit:
            return live, None
        last = live[limit - 1][1]
        return live[:limit], pages.encode_sessions(last.created_at, last.public_id)

    async def revoke_session(self, ctx: AuthContext, session_id: str) -> bool:
        """Revoke one of the caller's sessions by public id; True if it was the current one.

        Raises ``NotFound`` for an unknown id or another user's, ``ReauthenticationRequired``
        for any but the current session (decided before the lookup: no answer about other ids).
        """
        if not tokens.is_public_id(session_id):
            raise errors.NotFound("no such session")
        ctx = await self._strong(ctx)
        if session_id != ctx.session.public_id:
            self._require_recent_auth(ctx)
        found = await self.store.find_session(session_id)
        if found is None or found[1].user_id != ctx.principal.user_id:
            raise errors.NotFound("no such session")
        try:
            await self.store.delete_session(found[0])
        finally:
            self._forget(found[0])
        event("session_revoked", user_id=ctx.principal.user_id, sid=tokens.log_id(found[0]))
        return found[0] == ctx.token_hash

    async def revoke_all(self, ctx: AuthContext, *, include_current: bool, device: str | None = None) -> int:
        """Revoke every session of the caller, except the current one unless asked.

        Deletes the documents, then bumps the user's ``auth_epoch`` in one commit that also
        re-stamps the current session when it stays, resets the ledger (the caller's session
        and device) and re-stamps the caller's device (``device``, if it is one of the user's):
        that commit is the moment the revocation takes effect, so a session committed by a login
        that read the account before it is void, and every other device loses its trust. Raises
        ``Unauthenticated`` when the caller's own session was ended meanwhile, and
        ``ReauthenticationRequired``.
        """
        ctx = await self._strong(ctx)
        self._require_recent_auth(ctx)
        keep = None if include_current else ctx.token_hash
        # Only what the caller's epoch covers: a password change that committed meanwhile opened a newer session.
        revoked = await self.store.delete_user_sessions(
            ctx.principal.user_id, keep=keep, up_to_epoch=ctx.session.auth_epoch
        )
        presented = self.lockout.presented(ctx.principal.username, device)
        device_hash = presented.device_hash if presented is not None else None

        async def read() -> AccountView:
            return await self.store.read_account(ctx.principal.username, sessions=[ctx.token_hash], device=device_hash)

        async def bump(view: AccountView) -> None:
            session, user = view.sessions.get(ctx.token_hash), view.user
            now = self.clock()
            if user is None or not liveness.same_credentials(ctx.user.record, user.record):
                raise _revoked()  # another change of credentials got there first: this session is void
            if keep is not None and (session is None or not liveness.is_live(session.record, user.record, now)):
                raise _revoked()
            epoch = user.record.auth_epoch + 1
            known = view.device is not None and liveness.device_known(view.device.record, user.record, now)
            kept_device = device_hash if known else None
            writes = [
                plan.update(Doc.user(user.record.username), UserChange(auth_epoch=epoch, updated_at=now)),
                plan.update(Doc.session(keep), {"auth_epoch": epoch}) if keep else None,
                *self.opener.reset_ledger(user.record, view.ledger, keep, kept_device),
                plan.update(
                    Doc.device(user.record.username, kept_device),
                    {"auth_epoch": epoch, "expires_at": now + self._device_lifetime},
                )
                if kept_device
                else None,
            ]
            await self.store.commit(Plan().then(*writes))

        try:
            await retrying(await read(), bump, read)
        finally:
            self.forget_user(ctx.principal.user_id)
        event(
            "sessions_revoked_all",
            logging.WARNING,
            user_id=ctx.principal.user_id,
            count=revoked,
            include_current=include_current,
        )
        return revoked


def _user_out(user: UserRecord) -> UserOut:
    return UserOut(
        user_id=user.user_id,
        username=user.username,
        display_name=user.display_name,
        email=user.email,
        permissions=user.permissions,
        created_at=user.created_at,
    )


def _profile_out(user: UserRecord, session: SessionRecord) -> ProfileOut:
    return ProfileOut(
        user_id=user.user_id,
        username=user.username,
        display_name=user.display_name,
        email=user.email,
        permissions=user.permissions,
        version=user.version,
        session=SessionInfo(
            logged_in_at=session.created_at, expires_at=session.expires_at, auth_time=session.auth_time
        ),
    )


def session_out(s: SessionRecord, *, current: bool) -> SessionOut:
    """The public view of a stored session."""
    return SessionOut(
        id=s.public_id,
        created_at=s.created_at,
        last_seen_at=s.last_seen_at,
        expires_at=s.expires_at,
        user_agent=s.user_agent,
        current=current,
    )


__all__ = [
    "AuthContext",
    "Clock",
    "LoginResult",
    "Principal",
    "SessionService",
    "utc_now",
]
