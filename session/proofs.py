"""Proofs of the password that open a session: a login, a password change, a re-authentication.

Each is one path: the guess is counted and judged (``session.lockout``), the password verified,
then one commit opens the session (``session.opening``). A guess judged wrong stays counted;
every other ending without a session (a lost race, 503, a fault) gives it back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from session import errors, liveness, tokens
from session.activity import lockout_event_id
from session.authn import Authn
from session.clock import seconds_until
from session.context import NOWHERE, AuthContext, Basis, LoginResult, Origin
from session.errors import UnauthenticatedReason as Reason
from session.lockout import Counted, Lockout
from session.models import LoginRequest, PasswordChangeRequest, ReauthenticateRequest, UserRecord
from session.opening import CredentialsChanged, DeviceUse, Guess, LedgerPlan, Opened, Opener, Opening
from session.plan import Plan
from session.security_log import event
from session.store import AlreadyExists, StoreError, Versioned
from session.views import login_result

# Builds the commit of a proof once its guess is judged; raises ``Wrong`` for a password judged wrong.
Decide = Callable[[Counted, Guess], Awaitable[Opening]]


class Wrong(Exception):
    """A password judged wrong: its guess stays counted, and ``error`` is the answer."""

    def __init__(self, error: errors.SessionError) -> None:
        self.error = error


def revoked() -> errors.SessionError:
    return errors.Unauthenticated(Reason.REVOKED)


class Proofs:
    """Login, password change and re-authentication."""

    def __init__(self, basis: Basis, authn: Authn, lockout: Lockout, opener: Opener) -> None:
        self.basis = basis
        self.authn = authn
        self.lockout = lockout
        self.opener = opener
        self.activity = opener.activity

    async def login(
        self,
        req: LoginRequest,
        *,
        origin: Origin = NOWHERE,
        device: str | None = None,
        address: str | None = None,
    ) -> LoginResult:
        """Verify a password and open a new session.

        Raises ``TooManyAttempts`` beyond the limit (no password is verified then), ``InvalidCredentials``
        for an unknown user or a wrong password (same answer, same work) and for a login whose credentials
        changed (password, disable, revoke-all) while it was verified, ``AccountDisabled`` for a disabled
        user with the right password. ``device`` (the device cookie) of a device the user trusts makes the
        guess count on that device's counter alone; ``address`` is counted too when the per-address limit
        is on. A success returns the device cookie to set: the one presented, renewed and re-stamped with
        the current credentials, or a new one. ``origin`` is stored on the session and its event.
        """
        passwords = self.basis.passwords

        async def decide(counted: Counted, guess: Guess) -> Opening:
            user = counted.view.user
            if user is None:
                ok = await passwords.verify_dummy_async(req.password)
            else:
                ok = await passwords.verify_async(user.record.password_hash, req.password)
            if not ok or user is None:
                key, count = guess.counted.key[:12], guess.counted.count
                event("login_failed", logging.WARNING, username_key=key, attempt=count, trusted_device=counted.trusted)
                raise Wrong(errors.InvalidCredentials("invalid username or password"))
            if user.record.disabled:
                event("login_refused_disabled", logging.WARNING, user_id=user.record.user_id)
                raise errors.AccountDisabled()
            rehash = None
            if passwords.needs_rehash(user.record.password_hash):
                rehash = await passwords.hash_async(req.password)
            use = self._device_use(counted, mint=True)
            return Opening(user, counted.view.ledger, origin, guess, device=use, rehash=rehash)

        def lost(counted: Counted) -> errors.SessionError:
            event(
                "login_lost_race",
                logging.WARNING,
                user_id=counted.view.user.record.user_id if counted.view.user else None,
            )
            return errors.InvalidCredentials("invalid username or password")

        counted, opening, opened = await self._prove(req.username, device, address, decide, lost)
        user, new = opening.user.record, opened.new
        event(
            "login_succeeded", user_id=user.user_id, sid=tokens.log_id(new.token_hash), trusted_device=counted.trusted
        )
        token = opening.device.token if opening.device is not None else None
        return login_result(user, new, token, opened.device_expires_at)

    async def change_password(
        self, ctx: AuthContext, req: PasswordChangeRequest, *, origin: Origin = NOWHERE, device: str | None = None
    ) -> LoginResult:
        """Change the password, end every other session and device of the user, and open a new session.

        The current password is a guess like a login's, judged on the trusted device's counter when
        ``device`` is one. The new hash, the new epoch, the caller's new session and its device
        re-stamped are one commit under the ledger's precondition, which profile edits never disturb.
        Raises ``TooManyAttempts`` past the limit (even for the right password), ``WrongCurrentPassword``
        (403) when it is wrong, ``Unauthenticated`` when the caller's session was ended meanwhile.
        """
        ctx = await self.authn.strong(ctx)

        async def decide(counted: Counted, guess: Guess) -> Opening:
            user = self._same_account(ctx, counted)
            if not await self.basis.passwords.verify_async(user.record.password_hash, req.current_password):
                event("password_change_rejected", logging.WARNING, user_id=ctx.principal.user_id)
                raise Wrong(errors.WrongCurrentPassword("the current password is wrong"))
            new_hash = await self.basis.passwords.hash_async(req.new_password)
            use = self._device_use(counted, mint=False)
            return Opening(user, counted.view.ledger, origin, guess, device=use, new_password_hash=new_hash)

        try:
            _, _, opened = await self._prove(ctx.principal.username, device, None, decide, lambda _: revoked())
            new = opened.new
        finally:
            self.authn.forget_user(ctx.principal.user_id)
        revoked_count = await self.basis.store.delete_user_sessions(
            ctx.principal.user_id, keep=new.token_hash, up_to_epoch=new.record.auth_epoch - 1
        )
        event("password_changed", logging.WARNING, user_id=ctx.principal.user_id, sessions_revoked=revoked_count)
        return login_result(ctx.user.record, new)

    async def reauthenticate(
        self, ctx: AuthContext, req: ReauthenticateRequest, *, origin: Origin = NOWHERE, device: str | None = None
    ) -> LoginResult:
        """Prove the password again: the caller's session is replaced by a new one with ``auth_time`` now.

        The new session is opened like a login's (new token, fresh deadlines, the old session's user
        agent and device name; the request's network and place), the old one deleted in the same commit
        with an exists precondition, and the browser's device (if it presents one of the user's)
        re-stamped with the current credentials. Raises
        ``TooManyAttempts``, ``WrongCurrentPassword`` (403) when it is wrong, ``Unauthenticated`` when
        the session was ended meanwhile, including by a parallel re-authentication (only one can win).
        """
        ctx = await self.authn.strong(ctx)

        async def decide(counted: Counted, guess: Guess) -> Opening:
            user = self._same_account(ctx, counted)
            if not await self.basis.passwords.verify_async(user.record.password_hash, req.password):
                event("reauthentication_rejected", logging.WARNING, user_id=ctx.principal.user_id)
                raise Wrong(errors.WrongCurrentPassword("the password is wrong"))
            use = self._device_use(counted, mint=False)
            old = ctx.session
            where = Origin(old.user_agent, old.device, origin.network, origin.place)
            return Opening(user, counted.view.ledger, where, guess, device=use, replaces=ctx.token_hash)

        try:
            _, _, opened = await self._prove(ctx.principal.username, device, None, decide, lambda _: revoked())
            new = opened.new
        finally:
            self.authn.forget(ctx.token_hash)
        event(
            "reauthenticated",
            user_id=ctx.principal.user_id,
            sid=tokens.log_id(ctx.token_hash),
            new_sid=tokens.log_id(new.token_hash),
        )
        return login_result(ctx.user.record, new)

    async def _prove(
        self,
        username: str,
        cookie: str | None,
        address: str | None,
        decide: Decide,
        lost: Callable[[Counted], errors.SessionError],
    ) -> tuple[Counted, Opening, Opened]:
        """Count and judge a guess, let ``decide`` verify it, then commit the session it builds.

        The user and the account's ledger are read in one snapshot while the guess is counted: the
        password is verified against that user, and the commit's precondition is on that ledger. A
        password judged wrong keeps its guess; anything else without a session gives it back.
        ``lost`` is the answer when the credentials changed before the commit. The session's event is
        in its commit, and published after it; a wrong guess that reached the username's limit writes
        the account's ``lockout`` event.
        """
        now = self.basis.clock()
        counted = await self.lockout.count(username, cookie, address, now)
        guess = await self.lockout.judge(counted, now)
        try:
            opening = await decide(counted, guess)
            opened = await self.opener.open(opening)
        except Wrong as wrong:
            await self._lockout_event(counted, guess)
            raise wrong.error from None
        except CredentialsChanged:
            await self.lockout.give_back(guess)
            raise lost(counted) from None
        except Exception:
            await self.lockout.give_back(guess)
            raise
        self._evicted(opening.user.record, opened.ledger)
        await self.activity.publish([opened.event])
        return counted, opening, opened

    async def _lockout_event(self, counted: Counted, guess: Guess) -> None:
        """The ``lockout`` event, when this wrong guess reached the username's limit (never for a device's counter).

        Its id is the counter's window's, so the guess that reached the limit writes it once: a create,
        which a second writer (a count given back and reached again in the same window) finds done.
        Best effort: a store failure here does not change the answer (the lockout itself stands).
        """
        user = counted.view.user
        limit = self.basis.settings.login_max_failures
        if counted.trusted or user is None or guess.counted.count < limit:
            return
        window_end = guess.counted.window_start + timedelta(seconds=self.basis.settings.login_window_seconds)
        lockout = self.activity.event(
            user.record,
            "lockout",
            event_id=lockout_event_id(guess.counted.key, guess.counted.window_start),
            detail={"failures": guess.counted.count, "retry_after": seconds_until(window_end - self.basis.clock())},
        )
        try:
            await self.basis.store.commit(Plan((self.activity.write(lockout),)))
        except (AlreadyExists, StoreError):
            return
        await self.activity.publish([lockout])

    @staticmethod
    def _same_account(ctx: AuthContext, counted: Counted) -> Versioned[UserRecord]:
        """The user read with the guess, if it still stands behind the caller's session; else 401."""
        user = counted.view.user
        if user is None or not liveness.same_credentials(ctx.user.record, user.record):
            raise revoked()
        return user

    def _device_use(self, counted: Counted, *, mint: bool) -> DeviceUse | None:
        """The device a successful proof trusts: the presented one of this user, renewed; else (``mint``) a new one."""
        if counted.device is not None and counted.view.device is not None:
            stored = counted.view.device.record
            return DeviceUse(counted.device.token, counted.device.device_hash, stored.created_at, stored=stored)
        if not mint or counted.view.user is None:
            return None
        token = tokens.mint(counted.view.user.record.username)
        return DeviceUse(token, tokens.device_hash(token), self.basis.clock(), stored=None)

    def _evicted(self, user: UserRecord, ledger: LedgerPlan) -> None:
        """Forget and log the sessions (and devices) a new session's commit ended to stay within the bounds."""
        for token_hash in ledger.evicted_sessions:
            self.authn.forget(token_hash)
            event("session_evicted", user_id=user.user_id, sid=tokens.log_id(token_hash))
        for device_hash in ledger.evicted_devices:
            event("device_untrusted", user_id=user.user_id, device=tokens.log_id(device_hash))
