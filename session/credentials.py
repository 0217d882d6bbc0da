"""Credentials, origins and the session cookie: framework-neutral rules for the HTTP edge and the guard.

- ``required_credential``: which token a request presents (a Bearer header wins over the
  cookie), and the CSRF rule for cookie requests that change state;
- ``origin_allowed``: the one test of an origin against ``SESSION_ALLOWED_ORIGINS``, used by
  CORS and CSRF alike;
- ``session_cookie`` / ``refreshed_cookie`` / ``set_cookie``: the one cookie rule (attributes,
  lifetime, and re-sending it when a cookie request extended its session), applied to a
  Starlette or a Flask response with the framework's own ``set_cookie``;
- ``device_cookie_name`` / ``device_cookie``: the device cookie a successful login sets (README "Lockout");
- ``client_address``: the address the per-address login limit counts, from a trusted proxy's
  header only when ``SESSION_CLIENT_IP_HEADER`` says so.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from session import errors, security_log
from session.config import Settings
from session.errors import UnauthenticatedReason

# The methods that change state: CSRF is enforced on them, and the route table declares csrf_rejected for them.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def presented_credential(authorization: str | None, cookie: str | None) -> tuple[str, bool] | None:
    """The token of an Authorization header or cookie value, and whether it came from the cookie.

    A Bearer header wins over the cookie; ``None`` when neither is there.
    Raises ``Unauthenticated`` for an Authorization header that is not a Bearer token.
    """
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated(UnauthenticatedReason.BAD_SCHEME)
        return token.strip(), False
    if cookie:
        return cookie, True
    return None


def request_origin(origin: str | None, referer: str | None) -> str | None:
    """The lower-cased origin a request claims: its Origin header, else the origin of its Referer."""
    if origin is None and referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() if origin else None


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """True when ``origin`` (as a browser sends it) is one of ``allowed`` (lower-cased, from the settings)."""
    return origin is not None and origin.lower() in allowed


def enforce_csrf(method: str, origin: str | None, referer: str | None, path: str, allowed: frozenset[str]) -> None:
    """Reject a cookie-authenticated state change from an origin not in ``allowed``.

    A request with neither Origin nor Referer is rejected too: browsers send
    Origin on every cross-site POST, PATCH and DELETE, and a non-browser
    client can use the Bearer header, which is exempt. Raises ``CsrfRejected``.
    """
    if method not in STATE_CHANGING:
        return
    claimed = request_origin(origin, referer)
    if not origin_allowed(claimed, allowed):
        security_log.event("csrf_rejected", logging.WARNING, origin=(claimed or "")[:200], path=path)
        raise errors.CsrfRejected("a cookie-authenticated request that changes state must come from an allowed origin")


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request says about its credential and where it comes from, whatever its framework."""

    authorization: str | None
    cookie: str | None
    method: str
    origin: str | None
    referer: str | None
    path: str


def required_credential(request: Presented, allowed: frozenset[str]) -> tuple[str, bool]:
    """The token a request must present, and whether it came from the cookie.

    Checked before any store access. Raises ``Unauthenticated`` when there is
    none, ``CsrfRejected`` for a cookie request that changes state from an
    origin not in ``allowed``.
    """
    presented = presented_credential(request.authorization, request.cookie)
    if presented is None:
        raise errors.Unauthenticated(UnauthenticatedReason.NO_CREDENTIALS)
    if presented[1]:
        enforce_csrf(request.method, request.origin, request.referer, request.path, allowed)
    return presented


# --- the session cookie ---


@dataclass(frozen=True, slots=True)
class Cookie:
    """One ``Set-Cookie``: HttpOnly, Path=/, Secure unless configured off, SameSite=Lax (the device cookie: Strict)."""

    name: str
    value: str
    max_age: int
    secure: bool
    same_site: Literal["lax", "strict"] = "lax"


def session_cookie(settings: Settings, token: str, max_age: int) -> Cookie:
    """The cookie carrying ``token`` for ``max_age`` seconds (the session's remaining life)."""
    return Cookie(settings.cookie_name, token, max_age, settings.cookie_secure)


def cleared_cookie(settings: Settings) -> Cookie:
    """The cookie that makes a browser forget the session cookie."""
    return Cookie(settings.cookie_name, "", 0, settings.cookie_secure)


def refreshed_cookie(settings: Settings, token: str, via_cookie: bool, extended_for: int | None) -> Cookie | None:
    """The cookie to re-send when a cookie request extended its session (a touch), so the browser keeps it as long.

    ``None`` for Bearer requests and for requests that extended nothing.
    """
    if not via_cookie or extended_for is None:
        return None
    return session_cookie(settings, token, extended_for)


DEVICE_COOKIE = "session-device"


def device_cookie_name(settings: Settings) -> str:
    """``__Host-session-device``; without ``SESSION_COOKIE_SECURE`` plain ``session-device``.

    Browsers accept a ``__Host-`` cookie only with ``Secure``, ``Path=/`` and no
    ``Domain`` (so no sibling subdomain can set or shadow it); a plain-http local
    set-up cannot have ``Secure`` and so gets the plain name.
    """
    return f"__Host-{DEVICE_COOKIE}" if settings.cookie_secure else DEVICE_COOKIE


def device_cookie(settings: Settings, token: str, max_age: int) -> Cookie:
    """The device cookie carrying ``token`` for ``max_age`` seconds; SameSite=Strict, as only a login reads it."""
    return Cookie(device_cookie_name(settings), token, max_age, settings.cookie_secure, same_site="strict")


def client_address(settings: Settings, forwarded: list[str], peer: str | None) -> str | None:
    """The client address the per-address login limit counts.

    With ``SESSION_CLIENT_IP_HEADER`` set, ``forwarded`` is that header's values:
    the entry ``SESSION_CLIENT_IP_HOPS`` from the right is the one the trusted proxy
    appended (whatever a client wrote is to its left); with fewer entries, the
    leftmost. Without the setting, or without the header, the connection's ``peer``:
    a header is never believed unless configured. IPv6 addresses count per /64 (one
    subscriber's usual allocation). ``None`` when there is no address at all.
    """
    chosen = peer
    if settings.client_ip_header is not None:
        entries = [entry.strip() for value in forwarded for entry in value.split(",") if entry.strip()]
        if entries:
            chosen = entries[max(0, len(entries) - settings.client_ip_hops)]
    if not chosen:
        return None
    try:
        address = ipaddress.ip_address(chosen)
    except ValueError:
        return chosen[:100]  # not an address (a test client's "testclient"): counted as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def set_cookie(response: Any, cookie: Cookie) -> None:
    """Add ``cookie`` to a Starlette or Flask (Werkzeug) response with the framework's own ``set_cookie``."""
    response.set_cookie(
        cookie.name,
        cookie.value,
        max_age=cookie.max_age,
        path="/",
        secure=cookie.secure,
        httponly=True,
        samesite=cookie.same_site,
    )
