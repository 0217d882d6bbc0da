"""Pure rules: whether a session, a device or a login is still accepted by its account, now.

No store, no clock of its own: callers pass what they read and the time. Every other module
asks these questions here, so each has one answer.
"""

from __future__ import annotations

from datetime import datetime

from session.errors import UnauthenticatedReason as Reason
from session.models import DeviceRecord, SessionRecord, UserRecord


def same_credentials(before: UserRecord, after: UserRecord) -> bool:
    """True when ``after`` still accepts what was proved or committed against ``before``.

    The one rule for "this account still stands behind it": the same user (not a namesake
    registered after a deletion), enabled, at the same ``auth_epoch`` (a password change, a
    disable and a revoke-all bump it).
    """
    return after.user_id == before.user_id and not after.disabled and after.auth_epoch == before.auth_epoch


def account_allows(user: UserRecord, session: SessionRecord) -> bool:
    """True when ``user`` still accepts ``session`` (expiry aside): ``same_credentials`` against its commit."""
    if user.user_id != session.user_id or user.disabled or user.auth_epoch != session.auth_epoch:
        return False
    # Revocations made before auth_epoch existed set this instead (read, never written).
    return user.sessions_valid_after is None or session.created_at >= user.sessions_valid_after


def why_not_live(session: SessionRecord, user: UserRecord | None, now: datetime) -> Reason | None:
    """``None`` when ``session`` is accepted at ``now``; otherwise why not."""
    if session.expires_at <= now:
        return Reason.EXPIRED
    if user is None or not account_allows(user, session):
        return Reason.REVOKED
    return None


def is_live(session: SessionRecord, user: UserRecord | None, now: datetime) -> bool:
    return why_not_live(session, user, now) is None


def never_live_again(session: SessionRecord, user: UserRecord, now: datetime) -> bool:
    """True when ``session`` can never be accepted again: expired, or voided by its account.

    A session at a newer epoch than ``user`` was read at (a revoke-all re-stamped it since)
    is not judged so: it may well be live.
    """
    return not is_live(session, user, now) and session.auth_epoch <= user.auth_epoch


def device_trusted(device: DeviceRecord | None, user: UserRecord | None, now: datetime) -> bool:
    """True when a presented device cookie's document makes it a trusted device of ``user`` at ``now``.

    Trust is bound to the credentials it was minted under: a device of an earlier ``auth_epoch``
    (or from before device epochs) buys nothing until a proof of the current password re-stamps it.
    """
    return (
        device is not None
        and user is not None
        and device.user_id == user.user_id
        and device.auth_epoch == user.auth_epoch
        and device.expires_at > now
    )


def device_known(device: DeviceRecord | None, user: UserRecord, now: datetime) -> bool:
    """True when a device document is the user's own and unexpired, whatever its epoch (it may be re-stamped)."""
    return device is not None and device.user_id == user.user_id and device.expires_at > now
