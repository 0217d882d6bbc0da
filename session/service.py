"""The session rules: register, login, authenticate, logout, and what a signed-in user may do.

No web framework and no google.cloud here: requests come in as validated
models, results go out as models or small dataclasses, failures as
``session.errors``. Time comes from the injected clock. Operations for
administrators live in ``session.admin`` and reuse the rules written here.

Every rule has one home in this module:

- ``_is_live``: whether a stored session is accepted (expiry, and ``_account_allows``);
- ``_account_allows``: whether the user still accepts a session (same user, enabled, same ``auth_epoch``);
- ``SessionService._judge_attempt``: the lockout (a guess is counted before it is judged);
- ``SessionService._open_session``: a session is committed only while its credentials are current;
- ``retrying``: the one loop around a precondition write that a concurrent change can make fail;
- ``SessionService._cached`` / ``SessionService._strong``: when a session may be accepted from this
  instance's cache (``SESSION_CACHE_SECONDS``), and the operations that always read it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from session import errors, pages, tokens
from session.cache import SessionCache
from session.config import Settings
from session.errors import UnauthenticatedReason as Reason
from session.models import (
    DeviceRecord,
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
    UserOut,
    UserRecord,
)
from session.passwords import Passwords
from session.store import (
    AlreadyExists,
    LedgerChange,
    PreconditionFailed,
    Reservation,
    Store,
    Versioned,
)

Clock = Callable[[], datetime]
S = TypeVar("S")
T = TypeVar("T")
log = logging.getLogger("session.security")
# How often a precondition write is retried after a concurrent change before giving up.
RETRIES = 5
# How often a session's commit may find the user's ledger changed by other logins of the same user:
# each round of a burst lets one of them through, so this is the burst a cap absorbs without a 503.
LEDGER_RETRIES = 64
# Sessions per page of GET /sessions when the client names no limit, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


def utc_now() -> datetime:
    """The default clock: aware UTC."""
    return datetime.now(UTC)


class CredentialsChanged(Exception):
    """The user's password, enablement or session epoch changed while a session was being opened."""


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


@dataclass(frozen=True, slots=True)
class _TrustedDevice:
    """A presented device cookie that is a live device of the user logging in."""

    token: str
    device_hash: str
    record: Versioned[DeviceRecord]


@dataclass(frozen=True, slots=True)
class _NewSession:
    token_hash: str
    record: SessionRecord
    login: LoginResult


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """A named security event; never pass secrets in ``fields``."""
    log.log(level, name, extra={"json_fields": {"event": name, **fields}})


def seconds_until(delta: timedelta) -> int:
    """Whole seconds, at least 1: for ``Retry-After`` and cookie ``Max-Age``."""
    return max(1, math.ceil(delta.total_seconds()))


async def retrying(
    state: S,
    write: Callable[[S], Awaitable[T]],
    reread: Callable[[], Awaitable[S]],
    give_up: Callable[[], errors.SessionError],
    *,
    attempts: int = RETRIES,
) -> T:
    """Run ``write(state)``; when a concurrent change fails its precondition, read again and retry.

    ``write`` re-checks every rule against the state it is given, so a retry is
    decided on what is stored now, never on what was read before the conflict.
    Between tries it waits a random few milliseconds (more each time), so that
    writers colliding on one document spread out. Raises ``give_up()`` after
    ``attempts`` conflicts in a row.
    """
    for attempt in range(attempts):
        try:
            return await write(state)
        except PreconditionFailed:
            await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
            state = await reread()
    raise give_up()


def _account_allows(user: UserRecord, session: SessionRecord) -> bool:
    """The one rule for "this account still accepts this session" (expiry aside).

    The user must be the session's (not a namesake registered after a deletion),
    enabled, and at the ``auth_epoch`` the session was committed under: a password
    change, a disable and a revoke-all bump the epoch and so end every older session.
    """
    if user.user_id != session.user_id or user.disabled or user.auth_epoch != session.auth_epoch:
        return False
    # Revocations made before auth_epoch existed set this instead.
    return user.sessions_valid_after is None or session.created_at >= user.sessions_valid_after


def _is_live(session: SessionRecord, user: UserRecord | None, now: datetime) -> Reason | None:
    """``None`` when ``session`` is accepted at ``now``; otherwise why not."""
    if session.expires_at <= now:
        return Reason.EXPIRED
    if user is None or not _account_allows(user, session):
        return Reason.REVOKED
    return None


def _gone(session: SessionRecord, user: UserRecord, now: datetime) -> bool:
    """True when ``session`` can never be accepted again: expired, or voided by its account.

    A session at a newer epoch than ``user`` was read at (a revoke-all re-stamped it since)
    is not judged gone: it may well be live.
    """
    return _is_live(session, user, now) is not None and session.auth_epoch <= user.auth_epoch


def _ledger_turns(ledger: Versioned[LedgerRecord] | None) -> int:
    """A rough count of the logins a burst has let through (for the retry's wait): the ledger's length."""
    return len(ledger.record.sessions) if ledger is not None else 0


async def _nothing() -> None:
    return None


def _same_credentials(before: UserRecord, after: UserRecord) -> bool:
    """True when a re-read user still accepts what was verified against ``before``."""
    return after.user_id == before.user_id and not after.disabled and after.auth_epoch == before.auth_epoch


def _trusted(device: Versioned[DeviceRecord] | None, user: Versioned[UserRecord] | None, now: datetime) -> bool:
    """True when a presented device cookie's document makes it a trusted device of ``user`` at ``now``."""
    return (
        device is not None
        and user is not None
        and device.record.user_id == user.record.user_id
        and device.record.expires_at > now
    )


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
        self._window = timedelta(seconds=settings.login_window_seconds)
        self._address_window = timedelta(seconds=settings.address_window_seconds)
        self._device_lifetime = timedelta(days=settings.device_cookie_days)
        self._reauth = timedelta(seconds=settings.reauth_seconds)
        self._cache_seconds = settings.cache_seconds
        # Per instance; None in the strong mode (SESSION_CACHE_SECONDS=0).
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
        # With a cap on sessions, the user's (empty) session ledger is made with it: its first login costs no more.
        ledger = LedgerRecord(user_id=record.user_id) if self.settings.max_sessions_per_user else None
        try:
            await self.store.create_user(record, ledger=ledger)
        except AlreadyExists:
            raise errors.UsernameTaken(f"the username {req.username!r} is taken") from None
        event("user_registered", user_id=record.user_id)
        return _user_out(record)

    # --- login -----------------------------------------------------------------------------

    async def login(
        self, req: LoginRequest, *, user_agent: str | None = None, device: str | None = None, address: str | None = None
    ) -> LoginResult:
        """Verify a password and open a new session.

        The guess is counted before it is judged: one commit raises the username's
        counter and returns the count this guess got, in the same round trip as the
        user read. Raises ``TooManyAttempts`` beyond ``login_max_failures`` guesses in
        the window (no password is verified then), ``InvalidCredentials`` for an
        unknown user or a wrong password (same answer, same work) and for a login
        whose user was changed (password, disable, revoke-all) while it was verified,
        ``AccountDisabled`` for a disabled user with the right password.

        ``device`` (the device cookie) of a trusted device of this user makes the guess
        count on that device's own counter instead (``device_max_failures``), and only
        there; ``address`` (the client's) is counted too, when ``address_max_failures``
        is set, for every login without a trusted device (``_reserve``). A success
        returns the device cookie to set (``LoginResult.device_token``).
        """
        now = self.clock()
        reservations, user, trusted, ledger = await self._reserve(req.username, device, address, now)
        reservation = await self._judge_first(reservations, trusted is not None, now)
        by_address = None
        if len(reservations) > 1:  # judged after the username's: each guess refused by either is refused
            by_address = await self._judge_attempt(
                reservations[1],
                now,
                limit=self.settings.address_max_failures,
                window=self._address_window,
                counter="address",
            )
        if user is None:
            ok = await self.passwords.verify_dummy_async(req.password)
        else:
            ok = await self.passwords.verify_async(user.record.password_hash, req.password)
        if not ok:
            event(
                "login_failed",
                logging.WARNING,
                username_key=reservation.key[:12],
                attempt=reservation.count,
                trusted_device=trusted is not None,
            )
            raise errors.InvalidCredentials("invalid username or password")
        assert user is not None
        if user.record.disabled:
            event("login_refused_disabled", logging.WARNING, user_id=user.record.user_id)
            raise errors.AccountDisabled()

        rehash: dict[str, Any] | None = None
        if self.passwords.needs_rehash(user.record.password_hash):
            rehash = {"password_hash": await self.passwords.hash_async(req.password), "updated_at": self.clock()}
        verified = user.record

        async def still_verified() -> Versioned[UserRecord] | None:
            again = await self.store.read_user(verified.username)
            return again if again is not None and _same_credentials(verified, again.record) else None

        # The device cookie: the trusted one presented (its life renewed), else a new one bound to this user.
        if trusted is not None:
            device_token, device_hash, created_at = trusted.token, trusted.device_hash, trusted.record.record.created_at
        else:
            device_token = tokens.mint(verified.username)
            device_hash, created_at = tokens.device_hash(device_token), self.clock()
        expires_at = self.clock() + self._device_lifetime
        record = DeviceRecord(user_id=verified.user_id, created_at=created_at, expires_at=expires_at)
        try:
            result = await self._open_session(
                user,
                user_agent,
                changes=lambda _: rehash,
                reread=still_verified,
                reservation=reservation,
                ledger=ledger,
                lenient=True,
                release_also=by_address,
                device=(device_hash, record),
            )
        except CredentialsChanged:
            event("login_lost_race", logging.WARNING, user_id=user.record.user_id)
            raise errors.InvalidCredentials("invalid username or password") from None
        event(
            "login_succeeded",
            user_id=user.record.user_id,
            sid=tokens.log_id(tokens.hash_token(result.token)),
            trusted_device=trusted is not None,
        )
        max_age = seconds_until(self._device_lifetime)
        return dataclasses.replace(result, device_token=device_token, device_max_age=max_age)

    async def _reserve(
        self, username: str, device: str | None, address: str | None, now: datetime
    ) -> tuple[list[Reservation], Versioned[UserRecord] | None, _TrustedDevice | None, Versioned[LedgerRecord] | None]:
        """Count a login's guess on the counters that will judge it; read the user (and the presented device).

        Returns the reservations (the username's or the trusted device's first, then the
        address's if that limit is on), the user, the trusted device (``None`` if none was
        presented, or it is unknown, expired or another user's) and, with a cap on sessions, the
        user's session ledger.

        Without a device cookie naming ``username``: one round trip counts on the username's
        counter (and the address's) and reads the user. With one: one round trip counts on
        that device's counter and reads the user and the device; only if the device turns out
        not to be trusted, a second counts on the username's (and the address's) counters,
        still before anything is judged. A trusted device is judged by its own counter alone.
        """
        shared = [(tokens.counter_key(username), now + self._window)]
        if address is not None and self.settings.address_max_failures > 0:
            shared.append((tokens.address_counter_key(address), now + self._address_window))
        with_ledger = self.settings.max_sessions_per_user > 0
        on_device = await self._reserve_on_device(username, device, shared, now, with_ledger=with_ledger)
        if on_device is not None:
            return on_device
        reservations, user, _, ledger = await self.store.reserve_and_read_login(
            shared, now, username, None, with_ledger=with_ledger
        )
        return reservations, user, None, ledger

    async def _reserve_on_device(
        self,
        username: str,
        device: str | None,
        shared: list[tuple[str, datetime]],
        now: datetime,
        *,
        with_ledger: bool,
    ) -> (
        tuple[list[Reservation], Versioned[UserRecord] | None, _TrustedDevice | None, Versioned[LedgerRecord] | None]
        | None
    ):
        """``_reserve`` for a request that presents a device cookie naming ``username``; ``None`` without one.

        One round trip counts on the device's counter and reads the user, the device and (``with_ledger``)
        the ledger; if the device is not a trusted one of the user, the ``shared`` counters are counted too.
        """
        presented = tokens.parse_device(device) if device else None
        if device is None or presented is None or presented.username != username:  # another user's: as none
            return None
        own = [(tokens.device_counter_key(presented.token_hash), now + self._window)]
        reservations, user, found, ledger = await self.store.reserve_and_read_login(
            own, now, username, presented.token_hash, with_ledger=with_ledger
        )
        if found is not None and _trusted(found, user, now):
            return reservations, user, _TrustedDevice(device, presented.token_hash, found), ledger
        return await self.store.reserve_attempts(shared, now), user, None, ledger

    async def _judge_first(self, reservations: list[Reservation], trusted: bool, now: datetime) -> Reservation:
        """Judge the guess on its first counter: a trusted device's by the device limit, else the username's."""
        if trusted:
            return await self._judge_attempt(
                reservations[0], now, limit=self.settings.device_max_failures, counter="device"
            )
        return await self._judge_attempt(reservations[0], now)

    async def _judge_attempt(
        self,
        reservation: Reservation,
        now: datetime,
        *,
        limit: int | None = None,
        window: timedelta | None = None,
        counter: str = "username",
    ) -> Reservation:
        """Decide on a counted guess: start a new window if the old one is over, refuse it past the limit.

        Raises ``TooManyAttempts`` (with the seconds until the window ends) when this
        guess is beyond ``limit`` (default ``login_max_failures``) in the ``window``
        (default ``login_window_seconds``): it must not be judged. ``counter`` names the
        kind of counter in the log (username, device, address).
        """
        limit = self.settings.login_max_failures if limit is None else limit
        window = self._window if window is None else window
        basis: Reservation | None = reservation
        for _ in range(RETRIES):
            if reservation.window_start + window > now:
                break
            try:  # the window is over: this guess starts the next one, unless another request did
                if basis is not None:
                    reservation = await self.store.restart_attempts(basis, now, now + window)
                    break
            except PreconditionFailed:
                pass
            # Somebody wrote since: look (without counting again, which would fail every other restart);
            # count this guess again only once a new window has begun.
            basis = await self.store.read_attempts(reservation.key)
            if basis is None or basis.window_start + window > now:
                reservation = await self.store.reserve_attempt(reservation.key, now, now + window)
                basis = reservation
        if reservation.count > limit or reservation.window_start + window <= now:
            retry_after = seconds_until(reservation.window_start + window - now)
            event(
                "login_locked_out",
                logging.WARNING,
                username_key=reservation.key[:12],
                retry_after=retry_after,
                counter=counter,
            )
            raise errors.TooManyAttempts(retry_after, f"too many failed logins; try again in {retry_after} s")
        return reservation

    def _new_session(self, user: UserRecord, user_agent: str | None, epoch: int) -> _NewSession:
        """A fresh token and its session record, not yet stored."""
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
            user_agent=user_agent or None,  # cleaned and capped at the HTTP edge (Call.user_agent)
            auth_epoch=epoch,
            auth_time=now,  # every new session is opened by a proof of the password
        )
        body = LoginOut(
            token=token,
            user_id=user.user_id,
            username=user.username,
            permissions=user.permissions,
            logged_in_at=now,
            expires_at=record.expires_at,
        )
        login = LoginResult(body=body, token=token, max_age=seconds_until(record.expires_at - now), epoch=epoch)
        return _NewSession(token_hash, record, login)

    async def _open_session(
        self,
        user: Versioned[UserRecord],
        user_agent: str | None,
        *,
        changes: Callable[[UserRecord], dict[str, Any] | None],
        reread: Callable[[], Awaitable[Versioned[UserRecord] | None]],
        reservation: Reservation,
        ledger: Versioned[LedgerRecord] | None = None,
        lenient: bool = False,
        reset_ledger: bool = False,
        release_also: Reservation | None = None,
        device: tuple[str, DeviceRecord] | None = None,
        replaces: str | None = None,
    ) -> LoginResult:
        """Commit a new session, only while the credentials it was opened with are still current.

        The session is created in one commit with a precondition on the user
        document as it was read, together with ``changes(user)`` (a rehash, or a
        password change's new hash and epoch). If the user changed meanwhile,
        ``reread`` reads it again and returns it only if what was verified still
        holds (a profile edit or a rehash leave it so); then the commit is retried.
        Otherwise (a password change, a disable, a revoke-all) ``CredentialsChanged``
        is raised and no session exists.

        ``lenient`` (a login): once the user is seen changed in a way that keeps what was
        verified, the retried commit carries no precondition on the user; the user is read
        again after it instead, and the session deleted if the credentials changed meanwhile.
        So parallel profile edits cannot starve a login, and a login racing a change still
        cannot keep a session.

        With a cap on sessions, the commit also writes the user's ledger (``_ledger_change``)
        under a precondition, so parallel logins of one user take turns: each retry reads
        the ledger again. ``reset_ledger`` (a password change, which voids every other
        session in the same commit) writes it outright.

        The guess ``reservation`` counted is given back in the same commit: the
        counter is deleted if nobody counted since (a success clears it), or else one
        is taken off it, so right passwords never use up the limit. ``release_also`` (the
        address's guess) is taken off its counter, and ``device`` written, in that commit too.

        ``replaces`` (a reauthentication) is the token hash of a session deleted in the
        same commit, only if it still exists: ``reread`` must then return ``None`` once
        it is gone, so that of two rotations of one session only one commits.
        """
        current = user
        strict = True  # the commit carries the precondition on the user as read
        user_conflicts = 0
        clear: Reservation | None = reservation  # delete the counter: nobody counted since the guess
        release: Reservation | None = None  # take the guess off it: others counted since
        for _ in range(LEDGER_RETRIES):
            user_changes = changes(current.record) if strict else None
            new = self._new_session(
                current.record, user_agent, int((user_changes or {}).get("auth_epoch", current.record.auth_epoch))
            )
            change, ledger = await self._ledger_change(
                current.record, ledger, new.token_hash, reset=reset_ledger, replaces=replaces
            )
            try:
                await self.store.create_session(
                    new.token_hash,
                    new.record,
                    user=current if strict else None,
                    user_changes=user_changes,
                    clear=clear,
                    release=release,
                    ledger=change,
                    release_also=release_also,  # a failed commit wrote nothing: each try gives it back
                    device=device,
                    replaces=replaces,
                )
            except AlreadyExists:  # a resent commit that had in fact landed: the hash is ours
                pass
            except PreconditionFailed:
                await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * (user_conflicts + 1 + _ledger_turns(ledger)))))
                again, ledger, counter = await asyncio.gather(
                    reread(),
                    self._reread_ledger(current.record.username, change),
                    self.store.read_attempts(reservation.key) if clear or release else _nothing(),
                )
                # A resent commit (the client library resends on UNAVAILABLE) fails the ledger's precondition
                # if the first attempt landed: the entry of this new, random key can only come from that commit.
                if ledger is not None and new.token_hash in ledger.record.sessions:
                    pass
                elif again is None:
                    raise CredentialsChanged() from None
                else:
                    if again.update_time != current.update_time:
                        user_conflicts += 1
                        if lenient:
                            strict = False
                        elif user_conflicts >= RETRIES:
                            break
                    current = again
                    clear = (
                        reservation if counter is not None and counter.update_time == reservation.update_time else None
                    )
                    release = counter if counter is not None and clear is None else None
                    continue
            if not strict and await reread() is None:
                await self.store.delete_session(new.token_hash)
                raise CredentialsChanged()
            self._evicted(current.record, change)
            return new.login
        raise errors.ServiceUnavailable(1, "the account kept changing; try again")

    async def _ledger_change(
        self,
        user: UserRecord,
        ledger: Versioned[LedgerRecord] | None,
        new_hash: str,
        *,
        reset: bool,
        replaces: str | None = None,
    ) -> tuple[LedgerChange | None, Versioned[LedgerRecord] | None]:
        """The user's ledger with ``new_hash`` added, making room under ``SESSION_MAX_PER_USER`` if it is full.

        ``replaces`` (a rotation) leaves the ledger with the session it ends, which the commit deletes itself.

        The cap holds because every session is committed with its ledger entry, under a
        precondition on the ledger as read here: at most ``cap`` entries, so at most ``cap``
        sessions. ``None`` without a cap. A user with no ledger yet (the first login, or
        sessions from before the cap) gets one made from the sessions stored now.
        """
        cap = self.settings.max_sessions_per_user
        if cap == 0:
            return None, ledger
        if reset:
            record = LedgerRecord(user_id=user.user_id, sessions=[new_hash])
            return LedgerChange(user.username, record, base=ledger, force=True), ledger
        if ledger is None:  # not read yet (a reauthentication), or none made yet
            ledger = await self.store.read_ledger(user.username) or await self._make_ledger(user)
        if ledger.record.user_id == user.user_id:
            members = [h for h in ledger.record.sessions if h != replaces]
        else:
            # A namesake's ledger (the user was deleted and the name registered again) lists only dead sessions;
            # the new user's own, opened while the cap was off (no ledger at registration), are counted as for a
            # first ledger. The commit's precondition on the namesake's ledger keeps this safe as in _make_ledger.
            members = [h for h in await self._countable_sessions(user) if h != replaces]
        evict: list[str] = []
        if len(members) >= cap:
            members, evict = await self._make_room(user, members, cap)
        record = LedgerRecord(user_id=user.user_id, sessions=[*members, new_hash])
        return LedgerChange(user.username, record, base=ledger, evict=tuple(evict)), ledger

    def _reset_ledger(self, user: UserRecord, keep: str | None) -> LedgerChange | None:
        """The ledger after a revoke-all: just the kept session (``None`` without a cap).

        Written outright in the epoch bump's commit, so that a login in flight (whose commit, once
        lenient, carries no precondition on the user) fails on the ledger instead of evicting the kept one.
        """
        if not self.settings.max_sessions_per_user:
            return None
        record = LedgerRecord(user_id=user.user_id, sessions=[keep] if keep else [])
        return LedgerChange(user.username, record, base=None, force=True)

    async def _make_ledger(self, user: UserRecord) -> Versioned[LedgerRecord]:
        """The user's first ledger: every session stored now that could still be accepted."""
        record = LedgerRecord(user_id=user.user_id, sessions=await self._countable_sessions(user))
        try:
            return await self.store.create_ledger(user.username, record)
        except AlreadyExists:  # a parallel login made it first
            made = await self.store.read_ledger(user.username)
            if made is None:  # made and deleted again at once (an account deletion): nothing to cap
                raise CredentialsChanged() from None
            return made

    async def _countable_sessions(self, user: UserRecord) -> list[str]:
        """The keys of the user's sessions stored now that could still be accepted (one query)."""
        now = self.clock()
        stored = await self.store.list_sessions(user.user_id, ordered=False)
        return [h for h, s in stored if not _gone(s, user, now)]

    async def _make_room(self, user: UserRecord, members: list[str], cap: int) -> tuple[list[str], list[str]]:
        """Split a full ledger into the entries kept and the sessions to delete, leaving room for one more.

        Entries whose session is gone are dropped; sessions that can never be accepted again
        are deleted (an expired one too, so that a touch in flight cannot bring it back); then,
        while still full, the least recently used sessions (``last_seen_at``) are ended. Raises
        ``CredentialsChanged`` when one of the user's sessions is at a newer epoch than ``user``.
        """
        stored = await self.store.read_sessions(members)
        if any(s.user_id == user.user_id and s.auth_epoch > user.auth_epoch for s in stored.values()):
            # A revoke-all re-stamped a session past the epoch this login verified: it can only lose, and
            # must not end that session (its commit, once lenient, has no user precondition to stop it).
            raise CredentialsChanged()
        now = self.clock()
        live = [h for h in members if h in stored and not _gone(stored[h], user, now)]
        evict = [h for h in members if h in stored and _gone(stored[h], user, now)]
        excess = len(live) - cap + 1
        if excess > 0:
            by_use = sorted(live, key=lambda h: (stored[h].last_seen_at, stored[h].created_at, h))
            ended = set(by_use[:excess])
            evict += by_use[:excess]
            live = [h for h in live if h not in ended]
        return live, evict

    async def _reread_ledger(self, username: str, change: LedgerChange | None) -> Versioned[LedgerRecord] | None:
        if change is None or change.force:
            return None
        return await self.store.read_ledger(username)

    def _evicted(self, user: UserRecord, change: LedgerChange | None) -> None:
        """Forget and log the sessions a new session's commit ended to stay under the cap."""
        for token_hash in change.evict if change is not None else ():
            self._forget(token_hash)
            event("session_evicted", user_id=user.user_id, sid=tokens.log_id(token_hash))

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
        reason = Reason.UNKNOWN if session is None else _is_live(session.record, user.record if user else None, now)
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
            or _is_live(entry.session, entry.user.record, now) is not None
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
            update = {**changes, "version": current.record.version + 1, "updated_at": self.clock()}
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
            attempts=RETRIES if if_match is not None else 4 * RETRIES,
        )

    async def _still_allowed(self, ctx: AuthContext) -> Versioned[UserRecord] | None:
        """The caller's user read again, if it still accepts the caller's session as stored now; else ``None``.

        The session is read again too: a revoke-all made with it re-stamps it with the new epoch.
        """
        session, user = await self.store.read_auth(ctx.principal.username, ctx.token_hash)
        if session is None or user is None or _is_live(session.record, user.record, self.clock()) is not None:
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
        """Change the password, end every other session of the user, and open a new one.

        The current password is a guess like a login's: it is counted before it is
        judged, on the username's failed-login counter, or on the device's own when
        ``device`` is a trusted device cookie of the user (``_count_proof``). Raises
        ``TooManyAttempts`` past the limit (even for the right password),
        ``WrongCurrentPassword`` (403) when it is wrong, ``Unauthenticated`` when
        the caller's session was ended meanwhile (by another change, say).
        """
        ctx = await self._strong(ctx)
        now = self.clock()
        reservation, _ = await self._count_proof(ctx, device, now, with_ledger=False)  # the change resets the ledger
        user = ctx.user
        ok = await self.passwords.verify_async(user.record.password_hash, req.current_password)
        if not ok:
            event("password_change_rejected", logging.WARNING, user_id=ctx.principal.user_id)
            raise errors.WrongCurrentPassword("the current password is wrong")
        new_hash = await self.passwords.hash_async(req.new_password)

        def changes(current: UserRecord) -> dict[str, Any]:
            return {"password_hash": new_hash, "updated_at": self.clock(), "auth_epoch": current.auth_epoch + 1}

        try:
            # The new password, the new epoch (voiding every other session, even one being
            # committed right now) and the caller's new session: one atomic commit.
            result = await self._open_session(
                user,
                user_agent,
                changes=changes,
                reread=lambda: self._still_allowed(ctx),
                reservation=reservation,
                reset_ledger=True,
            )
        except CredentialsChanged:
            raise _revoked() from None
        finally:
            self.forget_user(ctx.principal.user_id)
        new_epoch = result.epoch
        revoked = await self.store.delete_user_sessions(
            ctx.principal.user_id, keep=tokens.hash_token(result.token), up_to_epoch=new_epoch - 1
        )
        event("password_changed", logging.WARNING, user_id=ctx.principal.user_id, sessions_revoked=revoked)
        return result

    async def reauthenticate(
        self, ctx: AuthContext, req: ReauthenticateRequest, *, device: str | None = None
    ) -> LoginResult:
        """Prove the password again: the caller's session is replaced by a new one with ``auth_time`` now.

        The password is a guess like a login's, counted on the username's
        failed-login counter before it is judged. The new session is opened like a
        login's (new token, fresh deadlines, the old session's user agent) and the
        old one deleted in the same commit, with an exists precondition on it and
        the precondition on the user. Raises ``TooManyAttempts`` past the limit
        (even for the right password), ``WrongCurrentPassword`` (403) when it is
        wrong, ``Unauthenticated`` when the session was ended meanwhile, including
        by a parallel reauthentication with the same token (only one can win).
        """
        ctx = await self._strong(ctx)
        now = self.clock()
        reservation, ledger = await self._count_proof(
            ctx, device, now, with_ledger=self.settings.max_sessions_per_user > 0
        )
        user = ctx.user
        if not await self.passwords.verify_async(user.record.password_hash, req.password):
            event("reauthentication_rejected", logging.WARNING, user_id=ctx.principal.user_id)
            raise errors.WrongCurrentPassword("the password is wrong")
        try:
            result = await self._open_session(
                user,
                ctx.session.user_agent,
                changes=lambda _: None,
                reread=lambda: self._still_allowed(ctx),
                reservation=reservation,
                ledger=ledger,
                replaces=ctx.token_hash,
            )
        except CredentialsChanged:
            raise _revoked() from None
        finally:
            self._forget(ctx.token_hash)
        event(
            "reauthenticated",
            user_id=ctx.principal.user_id,
            sid=tokens.log_id(ctx.token_hash),
            new_sid=tokens.log_id(tokens.hash_token(result.token)),
        )
        return result

    async def _count_proof(
        self, ctx: AuthContext, device: str | None, now: datetime, *, with_ledger: bool
    ) -> tuple[Reservation, Versioned[LedgerRecord] | None]:
        """Count and judge a signed-in user's password guess (a password change, a re-authentication).

        As for a login: on the username's counter, or, when ``device`` is a trusted device
        cookie of this user, on that device's own counter alone, so an attacker who has
        locked the username cannot keep its owner from proving the password. The user's
        session ledger is read in the same round trip when asked. Raises ``TooManyAttempts``.
        """
        username = ctx.principal.username
        key = tokens.counter_key(username)
        shared = [(key, now + self._window)]
        on_device = await self._reserve_on_device(username, device, shared, now, with_ledger=with_ledger)
        if on_device is not None:
            reservations, _, trusted, ledger = on_device
            return await self._judge_first(reservations, trusted is not None, now), ledger
        ledger = None
        if with_ledger:  # the ledger is read while the guess is counted: no extra wait
            reservation, ledger = await self.store.reserve_and_read_ledger(key, now, now + self._window, username)
        else:
            reservation = await self.store.reserve_attempt(key, now, now + self._window)
        return await self._judge_attempt(reservation, now), ledger

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
        """The position a sessions page token names; raises ``InvalidRequest`` for one that is not such a token."""
        if page_token is None:
            return None
        try:
            return pages.decode_sessions(page_token)
        except pages.BadPageToken:
            raise errors.InvalidRequest(
                [{"loc": ["query", "page_token"], "msg": "not a page token of this listing; start again without it"}]
            ) from None

    async def live_sessions(self, user: UserRecord) -> list[tuple[str, SessionRecord]]:
        """The user's sessions that ``authenticate`` would accept now, newest first, with their keys."""
        now = self.clock()
        return [(h, s) for h, s in await self.store.list_sessions(user.user_id) if _is_live(s, user, now) is None]

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
                if _is_live(s, user, now) is None:
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

    async def revoke_all(self, ctx: AuthContext, *, include_current: bool) -> int:
        """Revoke every session of the caller, except the current one unless asked.

        Deletes the documents, then bumps the user's ``auth_epoch`` (re-stamping the
        current session in the same commit when it stays): that last write is the
        moment the revocation takes effect, so a session committed by a login that
        read the user before it, even after the deletion, is void. Raises
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

        async def bump(current: Versioned[UserRecord] | None) -> None:
            if current is None:
                raise _revoked()
            epoch = current.record.auth_epoch + 1
            await self.store.update_user(
                current,
                {"auth_epoch": epoch, "updated_at": self.clock()},
                session_changes=(keep, {"auth_epoch": epoch}) if keep else None,
                ledger=self._reset_ledger(current.record, keep),
            )

        first: Versioned[UserRecord] | None = ctx.user
        try:
            await retrying(
                first,
                bump,
                lambda: self._still_allowed(ctx),
                lambda: errors.ServiceUnavailable(1, "the account kept changing; try again"),
            )
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
