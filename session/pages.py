"""Page tokens: an opaque, URL-safe handle on a position in a listing, and nothing more.

A token names where the previous page ended, by the fields the listing is ordered
on, which the caller has already seen on that page (a session's ``created_at`` and
public ``id``; a username for the admin's list of users). It holds no user id, no
document id (a session's document id is its token's SHA-256) and no secret, so a
token taken from someone else's listing can only name a position in the caller's
own listing. It is not signed: a forged token is just another position.

``decode_*`` raise ``BadPageToken`` for anything that is not a token of that kind;
the edges turn it into a 400.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

from session import tokens
from session.models import is_stored_username

# A version prefix, so that the format can change without old tokens being misread.
_SESSIONS = "s1"
_USERS = "u1"
MAX_TOKEN_LENGTH = 200
# Microseconds since the epoch that a datetime can hold (years 1 to 9999).
_MIN_MICROS = -62_135_596_800_000_000
_MAX_MICROS = 253_402_300_799_999_999
_MICROS_RE = re.compile(r"-?[0-9]{1,18}")


class BadPageToken(ValueError):
    """Not a page token of this kind (truncated, edited, from another listing, or not base64 at all)."""


def _encode(*parts: str) -> str:
    return base64.urlsafe_b64encode(":".join(parts).encode("ascii")).decode("ascii").rstrip("=")


def _decode(token: str, kind: str, count: int) -> list[str]:
    if not 0 < len(token) <= MAX_TOKEN_LENGTH or not token.isascii():
        raise BadPageToken("not a page token")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise BadPageToken("not a page token") from None
    parts = text.split(":")
    # The strict round trip refuses a token with other padding or trailing bits: one position, one token.
    if len(parts) != count or parts[0] != kind or _encode(*parts) != token:
        raise BadPageToken("not a page token of this listing")
    return parts[1:]


def encode_sessions(created_at: datetime, public_id: str) -> str:
    """The token of the position just after the session created at ``created_at`` with ``public_id``."""
    delta = created_at.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _encode(_SESSIONS, str(micros), public_id)


def decode_sessions(token: str) -> tuple[datetime, str]:
    """``(created_at, public_id)`` of a sessions page token. Raises ``BadPageToken``."""
    micros, public_id = _decode(token, _SESSIONS, 3)
    if _MICROS_RE.fullmatch(micros) is None or not tokens.is_public_id(public_id):
        raise BadPageToken("not a page token of this listing")
    value = int(micros)
    if not _MIN_MICROS <= value <= _MAX_MICROS:
        raise BadPageToken("not a page token of this listing")
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value), public_id


def encode_users(username: str) -> str:
    """The token of the position just after user ``username`` (by document id)."""
    return _encode(_USERS, username)


def decode_users(token: str) -> str:
    """The username of a users page token. Raises ``BadPageToken``."""
    (username,) = _decode(token, _USERS, 2)
    if not is_stored_username(username):
        raise BadPageToken("not a page token of this listing")
    return username
