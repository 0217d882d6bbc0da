"""The session rules, behind one facade: what ``session.http``, the guard and the CLI call.

No web framework and no google.cloud here: requests come in as validated models, results go out
as models or small dataclasses, failures as ``session.errors``. Each rule has one home, and this
module only builds the parts and hands each call to the part that owns it:

- ``session.liveness``: whether a session or a device is accepted by its account, now (pure);
- ``session.lockout``: the counting rule (a guess is counted before it is judged, and given back
  unless judged wrong);
- ``session.opening``: a session is committed only while its credentials are current (the account
  ledger's precondition), within the caps on sessions and devices;
- ``session.proofs``: login, password change and re-authentication;
- ``session.authn``: reading a session, the touch and the cache (and forgetting what a write ended);
- ``session.reauth``: the freshness window;
- ``session.listing``: lists and revocations; ``session.accounts``: registration and the profile;
- ``session.retry``: the one loop around a write that a concurrent change can make fail.
"""

from __future__ import annotations

from datetime import datetime

from session import binding, pages
from session.accounts import Accounts
from session.activity import Activity
from session.authn import Authn
from session.cache import SessionCache
from session.clock import Clock, utc_now
from session.config import Settings
from session.context import NOWHERE, AuthContext, Basis, LoginResult, Origin, Principal
from session.events import SecurityEventsOut
from session.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Listing
from session.lockout import Lockout
from session.models import (
    DevicesOut,
    LoginRequest,
    PasswordChangeRequest,
    ProfileOut,
    ProfileUpdateRequest,
    ReauthenticateRequest,
    RegisterRequest,
    SessionRecord,
    SessionsOut,
    UserOut,
    UserRecord,
)
from session.opening import Opener
from session.passwords import Passwords
from session.proofs import Proofs
from session.reauth import require_recent_auth
from session.store import Store
from session.trusted import Devices
from session.views import session_out


class SessionService:
    """The session rules over a store. One per instance; safe to share across requests.

    ``clock`` is the one clock of every part (tests move it by setting this attribute).
    """

    def __init__(
        self, settings: Settings, store: Store, passwords: Passwords | None = None, clock: Clock = utc_now
    ) -> None:
        self.settings = settings
        self.store = store
        self.passwords = passwords or Passwords(settings)
        self.clock = clock
        basis = Basis(settings, store, self.passwords, lambda: self.clock())
        self.authn = Authn(basis)
        self.activity = Activity(settings, store, basis.clock)
        self.lockout = Lockout(settings, store, basis.clock)
        self.opener = Opener(settings, store, basis.clock, self.activity)
        self.proofs = Proofs(basis, self.authn, self.lockout, self.opener)
        self.listing = Listing(basis, self.authn, self.lockout, self.opener)
        self.accounts = Accounts(basis, self.authn, self.activity)
        self.devices = Devices(basis, self.authn, self.lockout, self.activity)
        self.binder = binding.Binder(basis, self.authn.forget, self.activity)

    @property
    def cache(self) -> SessionCache | None:
        return self.authn.cache

    # --- accounts and proofs of the password -------------------------------------------------

    async def register(self, req: RegisterRequest, *, permissions: list[str] | None = None) -> UserOut:
        return await self.accounts.register(req, permissions=permissions)

    async def login(
        self, req: LoginRequest, *, origin: Origin = NOWHERE, device: str | None = None, address: str | None = None
    ) -> LoginResult:
        return await self.proofs.login(req, origin=origin, device=device, address=address)

    async def change_password(
        self, ctx: AuthContext, req: PasswordChangeRequest, *, origin: Origin = NOWHERE, device: str | None = None
    ) -> LoginResult:
        return await self.proofs.change_password(ctx, req, origin=origin, device=device)

    async def reauthenticate(
        self, ctx: AuthContext, req: ReauthenticateRequest, *, origin: Origin = NOWHERE, device: str | None = None
    ) -> LoginResult:
        return await self.proofs.reauthenticate(ctx, req, origin=origin, device=device)

    def profile(self, ctx: AuthContext) -> ProfileOut:
        return self.accounts.profile(ctx)

    async def update_profile(
        self, ctx: AuthContext, req: ProfileUpdateRequest, *, if_match: int | None, origin: Origin = NOWHERE
    ) -> ProfileOut:
        return await self.accounts.update_profile(ctx, req, if_match=if_match, origin=origin)

    # --- reading sessions --------------------------------------------------------------------

    async def authenticate(
        self, token: str, *, fresh: bool = False, presented: binding.Presented = binding.BEARER
    ) -> AuthContext:
        return await self.authn.authenticate(token, fresh=fresh, presented=presented)

    async def logout(self, token: str) -> str | None:
        return await self.authn.logout(token)

    def forget_user(self, user_id: str) -> None:
        self.authn.forget_user(user_id)

    # --- lists and revocations ---------------------------------------------------------------

    async def list_sessions(
        self, ctx: AuthContext, *, limit: int = DEFAULT_PAGE_SIZE, after: tuple[datetime, str] | None = None
    ) -> SessionsOut:
        return await self.listing.list_sessions(ctx, limit=limit, after=after)

    @staticmethod
    def page_position(page_token: str | None) -> tuple[datetime, str] | None:
        """The position a sessions page token names; raises ``pages.BadPageToken`` (an ``InvalidRequest``)."""
        return pages.sessions_position(page_token)

    async def live_sessions(self, user: UserRecord) -> list[tuple[str, SessionRecord]]:
        return await self.listing.live_sessions(user)

    async def live_sessions_page(
        self, user: UserRecord, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> tuple[list[tuple[str, SessionRecord]], str | None]:
        return await self.listing.live_sessions_page(user, limit=limit, after=after)

    async def revoke_session(self, ctx: AuthContext, session_id: str, *, origin: Origin = NOWHERE) -> bool:
        return await self.listing.revoke_session(ctx, session_id, origin=origin)

    async def revoke_all(
        self, ctx: AuthContext, *, include_current: bool, device: str | None = None, origin: Origin = NOWHERE
    ) -> int:
        return await self.listing.revoke_all(ctx, include_current=include_current, device=device, origin=origin)

    # --- security activity and trusted devices (issue 22) -----------------------------------

    async def security_events(
        self, ctx: AuthContext, *, limit: int = DEFAULT_PAGE_SIZE, after: tuple[datetime, str] | None = None
    ) -> SecurityEventsOut:
        """One page of the caller's security events, newest first. Raises ``ReauthenticationRequired``."""
        ctx = await self.authn.strong(ctx)
        require_recent_auth(ctx, self.clock(), self.settings.reauth_seconds)
        return await self.activity.page(ctx.user.record, limit=limit, after=after)

    async def list_devices(self, ctx: AuthContext, *, cookie: str | None = None) -> DevicesOut:
        return await self.devices.list_devices(ctx, cookie=cookie)

    async def revoke_device(self, ctx: AuthContext, device_id: str, *, origin: Origin = NOWHERE) -> None:
        await self.devices.revoke_device(ctx, device_id, origin=origin)


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AuthContext",
    "Clock",
    "LoginResult",
    "Principal",
    "SessionService",
    "session_out",
    "utc_now",
]
