"""Stored records turned into what a client sees."""

from __future__ import annotations

from datetime import datetime

from session.clock import seconds_until
from session.context import LoginResult
from session.models import LoginOut, ProfileOut, SessionInfo, SessionOut, SessionRecord, UserOut, UserRecord
from session.opening import NewSession


def user_out(user: UserRecord) -> UserOut:
    return UserOut(
        user_id=user.user_id,
        username=user.username,
        display_name=user.display_name,
        email=user.email,
        permissions=user.permissions,
        created_at=user.created_at,
    )


def profile_out(user: UserRecord, session: SessionRecord) -> ProfileOut:
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
        device=s.device,
        network=s.network,
        place=s.place,
        current=current,
    )


def login_result(
    user: UserRecord, new: NewSession, device_token: str | None = None, device_expires_at: datetime | None = None
) -> LoginResult:
    """The answer to a proof of the password that opened ``new`` (and, for a login, the device cookie to set)."""
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
        # Whole seconds the device's document has left (rounded down: the cookie never outlives the trust).
        device_max_age=max(0, int((device_expires_at - now).total_seconds()))
        if device_token and device_expires_at
        else 0,
    )
