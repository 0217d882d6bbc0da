"""A user's trusted devices: the browsers whose device cookie judges a login on their own counter.

``GET /devices`` and ``devices list`` show them; ``DELETE /devices/{id}`` and ``devices revoke``
end one's trust. A device's public id is derived from its key (``tokens.device_public_id``),
never the cookie. Its name is the one recorded when it was first trusted, and its last use the
one the account's ledger records at each login (so a login from it need not write the device).

Ending a device's trust is one commit: the device document deleted, its entry taken off the
ledger under the ledger's precondition (a login from it in flight re-reads the account), and the
``device_revoked`` event. Its sessions are not ended: that is what the sessions list is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from session import errors, liveness, plan, tokens
from session.activity import Activity
from session.authn import Authn
from session.context import NOWHERE, AuthContext, Basis, Origin
from session.lockout import Lockout
from session.models import DeviceOut, DeviceRecord, DevicesOut, LedgerRecord, UserRecord
from session.plan import Doc, Plan
from session.reauth import require_recent_auth
from session.retry import CONFLICT_TRIES, retrying
from session.security_log import event
from session.store import AccountView, Versioned


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    """A trusted device of a user: its key, its document, when it was last used to log in."""

    device_hash: str
    record: DeviceRecord
    last_used_at: datetime

    @property
    def id(self) -> str:
        return tokens.device_public_id(self.device_hash)


class Devices:
    """Lists and ends the trust of a user's devices."""

    def __init__(self, basis: Basis, authn: Authn, lockout: Lockout, activity: Activity) -> None:
        self.basis = basis
        self.authn = authn
        self.lockout = lockout
        self.activity = activity
        self._lifetime = timedelta(days=basis.settings.device_cookie_days)

    async def list_devices(self, ctx: AuthContext, *, cookie: str | None = None) -> DevicesOut:
        """The caller's trusted devices, most recently used first; ``current``: the one ``cookie`` names.

        Raises ``ReauthenticationRequired`` (the list shows other browsers).
        """
        ctx = await self.authn.strong(ctx)
        require_recent_auth(ctx, self.basis.clock(), self.basis.settings.reauth_seconds)
        presented = self.lockout.presented(ctx.principal.username, cookie)
        mine = presented.device_hash if presented is not None else None
        return DevicesOut(
            devices=[
                DeviceOut(
                    id=d.id,
                    device=d.record.device,
                    created_at=d.record.created_at,
                    last_used_at=d.last_used_at,
                    current=d.device_hash == mine,
                )
                for d in await self.trusted(ctx.user.record)
            ]
        )

    async def trusted(self, user: UserRecord) -> list[TrustedDevice]:
        """The user's devices a login would trust now, most recently used first (a query and a read, together)."""
        ledger = await self.basis.store.read_ledger(user.username)
        stored = await self.basis.store.list_devices(user.username)
        used = ledger.record.devices_used if ledger is not None and ledger.record.user_id == user.user_id else {}
        now = self.basis.clock()
        found = [
            TrustedDevice(h, d, used.get(h) or self._renewed_at(d))
            for h, d in stored
            if liveness.device_trusted(d, user, now)
        ]
        return sorted(found, key=lambda d: (d.last_used_at, d.device_hash), reverse=True)

    def _renewed_at(self, device: DeviceRecord) -> datetime:
        """A device's last renewal, for one the ledger does not date (trusted before it recorded uses)."""
        return max(device.created_at, device.expires_at - self._lifetime)

    async def revoke_device(self, ctx: AuthContext, device_id: str, *, origin: Origin = NOWHERE) -> None:
        """End the trust of one of the caller's devices by its public id.

        Raises ``NotFound`` for an unknown id, another user's or one no longer trusted,
        ``ReauthenticationRequired``.
        """
        ctx = await self.authn.strong(ctx)
        require_recent_auth(ctx, self.basis.clock(), self.basis.settings.reauth_seconds)
        await self.end_trust(ctx.user.record, device_id, origin)

    async def end_trust(self, user: UserRecord, device_id: str, origin: Origin = NOWHERE) -> None:
        """End the trust of ``user``'s device ``device_id`` (one commit, with its event); ``NotFound`` if none."""
        if not tokens.is_public_id(device_id):
            raise errors.NotFound("no such device")
        found = next((d for d in await self.trusted(user) if d.id == device_id), None)
        if found is None:
            raise errors.NotFound("no such device")

        async def read() -> AccountView:
            return await self.basis.store.read_account(user.username, device=found.device_hash)

        async def end(view: AccountView) -> None:
            if view.user is None or view.user.record.user_id != user.user_id or view.device is None:
                raise errors.NotFound("no such device")  # ended meanwhile (another revoke, a change of credentials)
            ended = self.activity.event(user, "device_revoked", origin, detail={"device_name": found.record.device})
            change = Plan().then(
                plan.delete(Doc.device(user.username, found.device_hash), view.device.update_time),
                *self._ledger_without(user, view.ledger, found.device_hash),
            )
            await self.activity.commit(change, ended)

        await retrying(await read(), end, read, tries=CONFLICT_TRIES)
        event("device_revoked", user_id=user.user_id, device=tokens.log_id(found.device_hash))

    @staticmethod
    def _ledger_without(
        user: UserRecord, ledger: Versioned[LedgerRecord] | None, device_hash: str
    ) -> tuple[plan.Write, ...]:
        """The ledger without the device, under a precondition on it as read; nothing if it does not list it."""
        if ledger is None or ledger.record.user_id != user.user_id or device_hash not in ledger.record.devices:
            return ()
        record = ledger.record
        changed = record.model_copy(
            update={
                "devices": [h for h in record.devices if h != device_hash],
                "devices_used": {h: t for h, t in record.devices_used.items() if h != device_hash},
            }
        )
        return (plan.update(Doc.ledger(user.username), changed, ledger.update_time),)
