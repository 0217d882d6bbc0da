"""What the parts of the service share: who a request comes from, what a new session gives back, what they stand on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from session.clock import Clock
from session.config import Settings
from session.models import LoginOut, SessionRecord, UserRecord
from session.passwords import Passwords
from session.store import Store, Versioned


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an authenticated request comes from. Immutable."""

    user_id: str
    username: str
    permissions: frozenset[str]
    session_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    """What a request says about where it comes from, as a session and a security event record it.

    Made at the HTTP edge (``session.devices``): the cleaned User-Agent, the readable device name
    parsed from it, the client's network (a /24 or /48, never the address) and the place a trusted
    geo header names. The admin CLI has none: every field ``None``.
    """

    user_agent: str | None = None
    device: str | None = None
    network: str | None = None
    place: str | None = None


NOWHERE = Origin()


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
class Basis:
    """What every part of the service is built on: the settings, the store, the passwords and the one clock."""

    settings: Settings
    store: Store
    passwords: Passwords
    clock: Clock
