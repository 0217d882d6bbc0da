"""The session rules: register, login, authenticate, logout, lifecycle and account changes.

No web framework and no google.cloud here: requests come in as validated
models, results go out as models or small dataclasses, failures as
``session.errors``. Time comes from the injected clock.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from session import errors, tokens
from session.config import Settings
from session.models import (
    LoginOut,
    LoginRequest,
    PasswordChangeRequest,
    ProfileOut,
    ProfileUpdateRequest,
    RegisterRequest,
    SessionInfo,
    SessionOut,
    SessionRecord,
    SessionsOut,
    UserOut,
    UserRecord,
)
from session.passwords import Passwords
from session.store import (
    AlreadyExists,
    FirestoreStore,
    PreconditionFailed,
    Reservation,
    StoreCorrupt,
    StoreUnavailable,
    Versioned,
)

Clock = Callable[[], datetime]
log = logging.getLogger("session.security")
# How often a precondition write is retried after a concurrent change before giving up.
_RETRIES = 5


class CredentialsChanged(Exception):
    """The user's password, enablement or session epoch changed while a session was being opened."""


def utc_now() -> datetime:
    """The default clock: aware UTC."""
    return datetime.now(UTC)


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


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A new session: the response body, the raw token, and the cookie lifetime."""

    body: LoginOut
    token: str
    max_age: int


def _event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """A named security event; never pass secrets in ``fields``."""
    log.log(level, name, extra={"json_fields": {"event": name, **fields}})


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


class SessionService:
    """The session rules over a store. One per instance; safe to share across requests."""

    def __init__(
        self,
        settings: Settings,
        store: FirestoreStore,
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
        self._window = timedelta(seconds=settings.login_window_seconds)

    # --- accounts ------------------------------------------------------------------------

    async def register(self, req: RegisterRequest, *, permissions: list[str] | None = None) -> UserOut:
        """Create a user. Raises ``RegistrationDisabled`` or ``UsernameTaken`` (atomically)."""
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
        try:
            await self.store.create_user(record)
        except AlreadyExists:
            raise errors.UsernameTaken(f"the username {req.username!r} is taken") from None
        _event("user_registered", user_id=record.user_id)
        return _user_out(record)

    # --- login -----------------------------------------------------------------------------

    async def login(self, req: LoginRequest, *, user_agent: str | None = None) -> LoginResult:
        """Verify a password and open a new session.

        The guess is counted before it is judged: one commit raises the username's
        counter and returns the count this guess got, in the same round trip as the
        user read. Raises ``TooManyAttempts`` beyond ``login_max_failures`` guesses in
        the window (no password is verified then), ``InvalidCredentials`` for an
        unknown user or a wrong password (same answer, same work) and for a login
        whose user was changed (password, disable, revoke-all) while it was verified,
        ``AccountDisabled`` for a disabled user with the right password.
        """
        now = self.clock()
        reservation, user = await self.store.reserve_and_read_user(
            tokens.counter_key(req.username), now, now + self._window, req.username
        )
        reservation = await self._judge_attempt(reservation, now)
        if user is None:
            ok = await self.passwords.verify_dummy_async(req.password)
        else:
            ok = await self.passwords.verify_async(user.record.password_hash, req.password)
        if not ok:
            _event("login_failed", logging.WARNING, username_key=reservation.key[:12], attempt=reservation.count)
            raise errors.InvalidCredentials("invalid username or password")
        assert user is not None
        if user.record.disabled:
            _event("login_refused_disabled", logging.WARNING, user_id=user.record.user_id)
            raise errors.AccountDisabled()

        changes = None
        if self.passwords.needs_rehash(user.record.password_hash):
            changes = {"password_hash": await self.passwords.hash_async(req.password), "updated_at": self.clock()}
        try:
            result = await self._open_session(user, user_agent, user_changes=changes, clear=reservation)
        except CredentialsChanged:
            _event("login_lost_race", logging.WARNING, user_id=user.record.user_id)
            raise errors.InvalidCredentials("invalid username or password") from None
        _event("login_succeeded", user_id=user.record.user_id, sid=tokens.log_id(tokens.hash_token(result.token)))
        return result

    async def _judge_attempt(self, reservation: Reservation, now: datetime) -> Reservation:
        """Decide on a counted guess: start a new window if the old one is over, refuse it past the limit.

        Raises ``TooManyAttempts`` (with the seconds until the window ends) when
        this guess is beyond ``login_max_failures`` in the window: it must not be judged.
        """
        for _ in range(_RETRIES):
            if reservation.window_start + self._window > now:
                break
            try:  # the window is over: this guess starts the next one, unless another request did
                reservation = await self.store.restart_attempts(reservation, now, now + self._window)
                break
            except PreconditionFailed:
                reservation = await self.store.reserve_attempt(reservation.key, now, now + self._window)
        if reservation.count > self.settings.login_max_failures or reservation.window_start + self._window <= now:
            retry_after = _seconds(reservation.window_start + self._window - now)
            _event("login_locked_out", logging.WARNING, username_key=reservation.key[:12], retry_after=retry_after)
            raise errors.TooManyAttempts(retry_after, f"too many failed logins; try again in {retry_after} s")
        return reservation

    async def _open_session(
        self,
        user: Versioned[UserRecord],
        user_agent: str | None,
        *,
        user_changes: dict[str, Any] | None = None,
        clear: Reservation | None = None,
    ) -> LoginResult:
        """Commit a new session, only while the credentials it was opened with are still current.

        The session is created in one commit with a precondition on the user
        document as it was read (and ``user_changes``, if any). If the user changed
        meanwhile, it is read again: a change that leaves the credentials as they
        were (a profile edit, a rehash) is retried; a password change, a disable or
        a revoke-all (``auth_epoch``) raises ``CredentialsChanged`` and no session exists.
        """
        epoch = int((user_changes or {}).get("auth_epoch", user.record.auth_epoch))
        current: Versioned[UserRecord] | None = user
        for _ in range(_RETRIES):
            if current is None or not _same_credentials(user.record, current.record):
                raise CredentialsChanged()
            now = self.clock()
            token = tokens.mint(current.record.username)
            token_hash = tokens.hash_token(token)
            absolute = now + self._ttl
            record = SessionRecord(
                user_id=current.record.user_id,
                username=current.record.username,
                public_id=tokens.public_id(token_hash),
                created_at=now,
                last_seen_at=now,
                absolute_expires_at=absolute,
                expires_at=min(now + self._idle, absolute),
                user_agent=(user_agent or None) and user_agent[:512],
                auth_epoch=epoch,
            )
            try:
                await self.store.create_session(
                    token_hash, record, user=current, user_changes=user_changes, clear=clear
                )
            except PreconditionFailed:
                # The user (or only the counter: then ``clear`` is dropped) changed since it was read.
                current, clear = await self.store.read_user(user.record.username), None
                continue
            except AlreadyExists:  # a retried commit that had in fact landed: the hash is ours
                pass
            body = LoginOut(
                token=token,
                user_id=current.record.user_id,
                username=current.record.username,
                permissions=current.record.permissions,
                logged_in_at=now,
                expires_at=record.expires_at,
            )
            return LoginResult(body=body, token=token, max_age=_seconds(record.expires_at - now))
        raise errors.ServiceUnavailable(1, "the account kept changing; try again")

    # --- authentication ------------------------------------------------------------------

    async def authenticate(self, token: str) -> AuthContext:
        """Check a presented token: one round trip for the session and its user.

        Extends the idle deadline at most once per touch interval, with a
        precondition so that a concurrently revoked session stays revoked.
        Raises ``Unauthenticated`` for anything but a live session of an
        enabled user.
        """
        parsed = tokens.parse(token)
        if parsed is None:
            raise errors.Unauthenticated("the token is malformed")
        session, user = await self.store.read_auth(parsed.username, parsed.token_hash)
        now = self.clock()
        if session is None:
            raise errors.Unauthenticated("the session does not exist or was revoked")
        record = session.record
        if record.expires_at <= now:
            raise errors.Unauthenticated("the session has expired")
        if user is None or not _account_allows(user.record, record):
            raise errors.Unauthenticated("the account no longer exists, is disabled, or revoked the session")

        extended_for = None
        if now - record.last_seen_at >= self._touch:
            expires_at = min(now + self._idle, record.absolute_expires_at)
            if not await self.store.touch_session(parsed.token_hash, now, expires_at):
                raise errors.Unauthenticated("the session was revoked")
            record = record.model_copy(update={"last_seen_at": now, "expires_at": expires_at})
            extended_for = _seconds(expires_at - now)

        principal = Principal(
            user_id=user.record.user_id,
            username=user.record.username,
            permissions=frozenset(user.record.permissions),
            session_id=record.public_id,
            expires_at=record.expires_at,
        )
        return AuthContext(
            principal=principal, token_hash=parsed.token_hash, session=record, user=user, extended_for=extended_for
        )

    async def logout(self, token: str) -> str | None:
        """Revoke the session of ``token``; idempotent. Returns the session's log id, if well-formed."""
        parsed = tokens.parse(token)
        if parsed is None:
            return None
        await self.store.delete_session(parsed.token_hash)
        return tokens.log_id(parsed.token_hash)

    # --- profile ---------------------------------------------------------------------------

    def profile(self, ctx: AuthContext) -> ProfileOut:
        """The caller's profile and session (no store access: ``authenticate`` read it all)."""
        return _profile_out(ctx.user.record, ctx.session)

    async def update_profile(self, ctx: AuthContext, req: ProfileUpdateRequest, *, if_match: int | None) -> ProfileOut:
        """Apply a profile change, bumping ``version`` atomically.

        Raises ``VersionConflict`` when ``if_match`` is not the stored version,
        including when a concurrent update got there first.
        """
        changes: dict[str, Any] = {name: getattr(req, name) for name in req.model_fields_set}
        current: Versioned[UserRecord] | None = ctx.user
        for _ in range(_RETRIES):
            if current is None or not _account_allows(current.record, ctx.session):
                raise errors.Unauthenticated("the account no longer exists, is disabled, or revoked the session")
            if if_match is not None and current.record.version != if_match:
                raise errors.VersionConflict(f"the profile is at version {current.record.version}, not {if_match}")
            if not changes:
                return _profile_out(current.record, ctx.session)
            update = {**changes, "version": current.record.version + 1, "updated_at": self.clock()}
            try:
                current = await self.store.update_user(current, update)
            except PreconditionFailed:
                current = await self.store.read_user(ctx.principal.username)
                continue
            _event("profile_updated", user_id=ctx.principal.user_id, version=current.record.version)
            return _profile_out(current.record, ctx.session)
        raise errors.VersionConflict("the profile kept changing; try again")

    async def change_password(
        self, ctx: AuthContext, req: PasswordChangeRequest, *, user_agent: str | None = None
    ) -> LoginResult:
        """Change the password, end every other session of the user, and open a new one.

        The current password is a guess like a login's: it is counted on the
        username's failed-login counter before it is judged. Raises
        ``TooManyAttempts`` past the limit (even for the right password),
        ``WrongCurrentPassword`` (403) when it is wrong, ``Unauthenticated`` when
        the caller's session was ended meanwhile (by another change, say).
        """
        now = self.clock()
        reservation = await self.store.reserve_attempt(
            tokens.counter_key(ctx.principal.username), now, now + self._window
        )
        reservation = await self._judge_attempt(reservation, now)
        user = ctx.user
        ok = await self.passwords.verify_async(user.record.password_hash, req.current_password)
        if not ok:
            _event("password_change_rejected", logging.WARNING, user_id=ctx.principal.user_id)
            raise errors.WrongCurrentPassword("the current password is wrong")
        new_hash = await self.passwords.hash_async(req.new_password)
        changes = {"password_hash": new_hash, "updated_at": self.clock(), "auth_epoch": user.record.auth_epoch + 1}
        try:
            # The new password, the new epoch (voiding every other session, even one being
            # committed right now) and the caller's new session: one atomic commit.
            result = await self._open_session(user, user_agent, user_changes=changes, clear=reservation)
        except CredentialsChanged:
            raise errors.Unauthenticated("the session was revoked") from None
        revoked = await self.store.delete_user_sessions(ctx.principal.user_id, keep=tokens.hash_token(result.token))
        _event("password_changed", logging.WARNING, user_id=ctx.principal.user_id, sessions_revoked=revoked)
        return result

    # --- sessions --------------------------------------------------------------------------

    async def list_sessions(self, ctx: AuthContext) -> SessionsOut:
        """The caller's live sessions, newest first."""
        sessions = await self._live_sessions(ctx.user.record)
        return SessionsOut(sessions=[_session_out(s, current=h == ctx.token_hash) for h, s in sessions])

    async def _live_sessions(self, user: UserRecord) -> list[tuple[str, SessionRecord]]:
        now = self.clock()
        return [
            (h, s)
            for h, s in await self.store.list_sessions(user.user_id)
            if s.expires_at > now and _account_allows(user, s)
        ]

    async def revoke_session(self, ctx: AuthContext, session_id: str) -> bool:
        """Revoke one of the caller's sessions by public id; True if it was the current one.

        Raises ``NotFound`` for an unknown id or another user's.
        """
        if not tokens.is_public_id(session_id):
            raise errors.NotFound("no such session")
        found = await self.store.find_session(session_id)
        if found is None or found[1].user_id != ctx.principal.user_id:
            raise errors.NotFound("no such session")
        await self.store.delete_session(found[0])
        _event("session_revoked", user_id=ctx.principal.user_id, sid=tokens.log_id(found[0]))
        return found[0] == ctx.token_hash

    async def revoke_all(self, ctx: AuthContext, *, include_current: bool) -> int:
        """Revoke every session of the caller, except the current one unless asked.

        Deletes the documents, then bumps the user's ``auth_epoch`` (re-stamping the
        current session in the same commit when it stays): that last write is the
        moment the revocation takes effect, so a session committed by a login that
        read the user before it, even after the deletion, is void. Raises
        ``Unauthenticated`` when the caller's own session was ended meanwhile.
        """
        keep = None if include_current else ctx.token_hash
        revoked = await self.store.delete_user_sessions(ctx.principal.user_id, keep=keep)
        current: Versioned[UserRecord] | None = ctx.user
        for _ in range(_RETRIES):
            if current is None or not _account_allows(current.record, ctx.session):
                raise errors.Unauthenticated("the account no longer exists, is disabled, or revoked the session")
            epoch = current.record.auth_epoch + 1
            try:
                await self.store.update_user(
                    current,
                    {"auth_epoch": epoch, "updated_at": self.clock()},
                    session_changes=(keep, {"auth_epoch": epoch}) if keep else None,
                )
                break
            except PreconditionFailed:
                session, current = await self.store.read_auth(ctx.principal.username, ctx.token_hash)
                if session is None:
                    raise errors.Unauthenticated("the session was revoked") from None
        else:
            raise errors.ServiceUnavailable(1, "the account kept changing; try again")
        _event(
            "sessions_revoked_all",
            logging.WARNING,
            user_id=ctx.principal.user_id,
            count=revoked,
            include_current=include_current,
        )
        return revoked

    # --- administration (the CLI) -----------------------------------------------------------

    async def admin_user(self, username: str) -> Versioned[UserRecord]:
        """The user named ``username``; raises ``NotFound``."""
        user = await self.store.read_user(username.lower())
        if user is None:
            raise errors.NotFound(f"no user {username.lower()!r}")
        return user

    async def admin_update(self, username: str, changes: dict[str, Any], *, end_sessions: bool = False) -> UserRecord:
        """Apply ``changes`` to a user (with a precondition, retried on races).

        ``end_sessions`` also bumps ``auth_epoch`` in the same write: every session,
        including one being committed right now, is void from then on.
        """
        for _ in range(_RETRIES):
            user = await self.admin_user(username)
            update = {**changes, "updated_at": self.clock()}
            if end_sessions:
                update["auth_epoch"] = user.record.auth_epoch + 1
            try:
                updated = await self.store.update_user(user, update)
                return updated.record
            except PreconditionFailed:
                continue
        raise errors.VersionConflict("the user kept changing; try again")

    async def admin_set_disabled(self, username: str, disabled: bool) -> int:
        """Disable (ending every session) or enable a user; returns sessions revoked."""
        record = await self.admin_update(username, {"disabled": disabled}, end_sessions=disabled)
        revoked = await self.store.delete_user_sessions(record.user_id) if disabled else 0
        _event(
            "user_disabled" if disabled else "user_enabled",
            logging.WARNING,
            user_id=record.user_id,
            sessions_revoked=revoked,
        )
        return revoked

    async def admin_sessions(self, username: str) -> list[SessionOut]:
        user = await self.admin_user(username)
        return [_session_out(s, current=False) for _, s in await self._live_sessions(user.record)]

    async def admin_revoke_all(self, username: str) -> int:
        """End every session of a user, including any being opened right now; returns how many were deleted.

        The documents go first; the epoch bump after them is what voids a session committed meanwhile.
        """
        user = await self.admin_user(username)
        revoked = await self.store.delete_user_sessions(user.record.user_id)
        record = await self.admin_update(username, {}, end_sessions=True)
        _event("sessions_revoked_all", logging.WARNING, user_id=record.user_id, count=revoked, by="admin")
        return revoked


def _account_allows(user: UserRecord, session: SessionRecord) -> bool:
    """The one rule for "this account still accepts this session" (expiry aside).

    The user must be the session's (not a namesake registered after a deletion),
    enabled, and at the ``auth_epoch`` the session was committed under: a password
    change, a disable and a revoke-all bump the epoch and so end every older session.
    """
    return user.user_id == session.user_id and not user.disabled and user.auth_epoch == session.auth_epoch


def _same_credentials(before: UserRecord, after: UserRecord) -> bool:
    """True when a re-read user still accepts what was verified against ``before``."""
    return after.user_id == before.user_id and not after.disabled and after.auth_epoch == before.auth_epoch


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
        session=SessionInfo(logged_in_at=session.created_at, expires_at=session.expires_at),
    )


def _session_out(s: SessionRecord, *, current: bool) -> SessionOut:
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
    "StoreCorrupt",
    "StoreUnavailable",
    "utc_now",
]
