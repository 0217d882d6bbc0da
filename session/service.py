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
    AttemptsRecord,
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
    StoreCorrupt,
    StoreUnavailable,
    Versioned,
)

Clock = Callable[[], datetime]
log = logging.getLogger("session.security")


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

        Raises ``TooManyAttempts`` while the username is locked out,
        ``InvalidCredentials`` for an unknown user or a wrong password (same
        answer, same work), ``AccountDisabled`` for a disabled user with the
        right password.
        """
        key = tokens.counter_key(req.username)
        user, attempts = await self.store.read_login(req.username, key)
        now = self.clock()
        live = attempts is not None and attempts.record.window_start + self._window > now
        if live and attempts is not None and attempts.record.count >= self.settings.login_max_failures:
            retry_after = _seconds(attempts.record.window_start + self._window - now)
            _event("login_locked_out", logging.WARNING, username_key=key[:12], retry_after=retry_after)
            raise errors.TooManyAttempts(retry_after, f"too many failed logins; try again in {retry_after} s")

        if user is None:
            ok = await self.passwords.verify_dummy_async(req.password)
        else:
            ok = await self.passwords.verify_async(user.record.password_hash, req.password)
        if not ok:
            window_start = attempts.record.window_start if live and attempts is not None else now
            fresh = AttemptsRecord(count=1, window_start=window_start, expires_at=window_start + self._window)
            await self.store.record_failure(key, attempts, fresh)
            _event("login_failed", logging.WARNING, username_key=key[:12])
            raise errors.InvalidCredentials("invalid username or password")
        assert user is not None
        if user.record.disabled:
            _event("login_refused_disabled", logging.WARNING, user_id=user.record.user_id)
            raise errors.AccountDisabled()

        if self.passwords.needs_rehash(user.record.password_hash):
            await self._rehash(user, req.password)
        result = await self._open_session(user.record, user_agent, clear_counter=key if attempts else None)
        _event("login_succeeded", user_id=user.record.user_id, sid=tokens.log_id(tokens.hash_token(result.token)))
        return result

    async def _rehash(self, user: Versioned[UserRecord], password: str) -> None:
        new_hash = await self.passwords.hash_async(password)
        try:
            await self.store.update_user(user, {"password_hash": new_hash, "updated_at": self.clock()})
        except PreconditionFailed:
            pass  # changed meanwhile; the next login rehashes

    async def _open_session(
        self, user: UserRecord, user_agent: str | None, *, clear_counter: str | None = None
    ) -> LoginResult:
        now = self.clock()
        token = tokens.mint(user.username)
        token_hash = tokens.hash_token(token)
        absolute = now + self._ttl
        record = SessionRecord(
            user_id=user.user_id,
            username=user.username,
            public_id=tokens.public_id(token_hash),
            created_at=now,
            last_seen_at=now,
            absolute_expires_at=absolute,
            expires_at=min(now + self._idle, absolute),
            user_agent=(user_agent or None) and user_agent[:512],
        )
        try:
            await self.store.create_session(token_hash, record, clear_counter=clear_counter)
        except AlreadyExists:  # a retried commit that had in fact landed: the hash is ours
            pass
        body = LoginOut(
            token=token,
            user_id=user.user_id,
            username=user.username,
            permissions=user.permissions,
            logged_in_at=now,
            expires_at=record.expires_at,
        )
        return LoginResult(body=body, token=token, max_age=_seconds(record.expires_at - now))

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
        if user is None or user.record.user_id != record.user_id or user.record.disabled:
            raise errors.Unauthenticated("the account no longer exists or is disabled")
        valid_after = user.record.sessions_valid_after
        if valid_after is not None and record.created_at < valid_after:
            raise errors.Unauthenticated("the session was revoked")

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
        for _ in range(5):
            if current is None or current.record.disabled or current.record.user_id != ctx.principal.user_id:
                raise errors.Unauthenticated("the account no longer exists or is disabled")
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
        """Change the password, revoke every session of the user, and open a new one.

        Raises ``WrongCurrentPassword`` (403) when the current password is wrong.
        """
        user = ctx.user
        ok = await self.passwords.verify_async(user.record.password_hash, req.current_password)
        if not ok:
            _event("password_change_rejected", logging.WARNING, user_id=ctx.principal.user_id)
            raise errors.WrongCurrentPassword("the current password is wrong")
        new_hash = await self.passwords.hash_async(req.new_password)
        current: Versioned[UserRecord] | None = user
        for _ in range(5):
            if current is None or current.record.user_id != ctx.principal.user_id or current.record.disabled:
                raise errors.Unauthenticated("the account no longer exists or is disabled")
            now = self.clock()
            try:
                current = await self.store.update_user(
                    current, {"password_hash": new_hash, "updated_at": now, "sessions_valid_after": now}
                )
                break
            except PreconditionFailed:
                current = await self.store.read_user(ctx.principal.username)
        else:
            raise errors.VersionConflict("the account kept changing; try again")
        revoked = await self.store.delete_user_sessions(ctx.principal.user_id)
        result = await self._open_session(current.record, user_agent)
        _event("password_changed", logging.WARNING, user_id=ctx.principal.user_id, sessions_revoked=revoked)
        return result

    # --- sessions --------------------------------------------------------------------------

    async def list_sessions(self, ctx: AuthContext) -> SessionsOut:
        """The caller's live sessions, newest first."""
        sessions = await self._live_sessions(ctx.user.record)
        return SessionsOut(sessions=[_session_out(s, current=h == ctx.token_hash) for h, s in sessions])

    async def _live_sessions(self, user: UserRecord) -> list[tuple[str, SessionRecord]]:
        now = self.clock()
        valid_after = user.sessions_valid_after
        return [
            (h, s)
            for h, s in await self.store.list_sessions(user.user_id)
            if s.expires_at > now and (valid_after is None or s.created_at >= valid_after)
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
        """Revoke every session of the caller, except the current one unless asked."""
        keep = None if include_current else ctx.token_hash
        revoked = await self.store.delete_user_sessions(ctx.principal.user_id, keep=keep)
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

    async def admin_update(self, username: str, changes: dict[str, Any]) -> UserRecord:
        """Apply ``changes`` to a user (with a precondition, retried on races)."""
        for _ in range(5):
            user = await self.admin_user(username)
            try:
                updated = await self.store.update_user(user, {**changes, "updated_at": self.clock()})
                return updated.record
            except PreconditionFailed:
                continue
        raise errors.VersionConflict("the user kept changing; try again")

    async def admin_set_disabled(self, username: str, disabled: bool) -> int:
        """Disable (ending every session) or enable a user; returns sessions revoked."""
        changes: dict[str, Any] = {"disabled": disabled}
        if disabled:
            changes["sessions_valid_after"] = self.clock()
        record = await self.admin_update(username, changes)
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
        user = await self.admin_user(username)
        revoked = await self.store.delete_user_sessions(user.record.user_id)
        _event("sessions_revoked_all", logging.WARNING, user_id=user.record.user_id, count=revoked, by="admin")
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
