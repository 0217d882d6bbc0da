"""Page tokens: an opaque, URL-safe handle on a position in a listing, and nothing more.

A token names where the previous page ended, by the fields the listing is ordered
on, which the caller has already seen on that page (a session's ``created_at`` and
public ``id``; a username for the admin's list of users). It holds no user id, no
document id (a session's document id is its token's SHA-256) and no secret, so a
token taken from someone else's listing can only name a position in the caller's
own listing. It is not signed: a forged token is just another position.

``sessions_position`` and ``users_position`` are the one parser of each kind: they
raise the one error, ``BadPageToken`` (a 400 ``invalid_request`` at ``page_token``),
for anything that is not a token of that listing. An edge that knows where the
token came from says so with ``BadPageToken.located`` (the HTTP query).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from session import errors, tokens
from session.models import is_stored_username

# A version prefix, so that the format can change without old tokens being misread.
_SESSIONS = "s1"
_USERS = "u1"
_EVENTS = "e1"
# An event id is a document id: never of the form __name__, which Firestore reserves (and refuses in a cursor).
_EVENT_ID_RE = re.compile(r"(?!__.*__$)[A-Za-z0-9_-]{16,64}")
# Microseconds since the epoch that a datetime can hold (years 1 to 9999).
_MIN_MICROS = -62_135_596_800_000_000
_MAX_MICROS = 253_402_300_799_999_999
_MICROS_RE = re.compile(r"-?[0-9]{1,18}")
THIS_LISTING = "this listing"


class BadPageToken(errors.InvalidRequest):
    """Not a page token of this listing (truncated, edited, from another listing, or not base64 at all)."""

    def __init__(self, listing: str = THIS_LISTING, loc: tuple[str, ...] = ("page_token",)) -> None:
        super().__init__([{"loc": list(loc), "msg": f"not a page token of {listing}; start again without it"}])
        self.listing = listing
        self.loc = loc

    def located(self, *where: str) -> BadPageToken:
        """The same error, its location prefixed with ``where`` (``"query"``: the URL's query string)."""
        return BadPageToken(self.listing, (*where, *self.loc))


def _encode(*parts: str) -> str:
    return tokens.b64encode(":".join(parts).encode("ascii"))


def _decode(token: str, kind: str, count: int) -> list[str] | None:
    """The fields of a token of ``kind`` with ``count`` parts; ``None`` for anything else."""
    if not 0 < len(token) <= tokens.MAX_TOKEN_LENGTH or not token.isascii():
        return None
    try:
        parts = tokens.b64decode(token).decode("ascii").split(":")
    except ValueError:
        return None
    # The strict round trip refuses a token with other padding or trailing bits: one position, one token.
    if len(parts) != count or parts[0] != kind or _encode(*parts) != token:
        return None
    return parts[1:]


def _micros(at: datetime) -> str:
    delta = at.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _time_and_id(token: str, kind: str, is_id: Callable[[str], bool], listing: str) -> tuple[datetime, str]:
    fields = _decode(token, kind, 3)
    if fields is not None:
        micros, ident = fields
        if _MICROS_RE.fullmatch(micros) and is_id(ident) and _MIN_MICROS <= int(micros) <= _MAX_MICROS:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros)), ident
    raise BadPageToken(listing)


def encode_sessions(created_at: datetime, public_id: str) -> str:
    """The token of the position just after the session created at ``created_at`` with ``public_id``."""
    return _encode(_SESSIONS, _micros(created_at), public_id)


def decode_sessions(token: str, listing: str = THIS_LISTING) -> tuple[datetime, str]:
    """``(created_at, public_id)`` of a sessions page token. Raises ``BadPageToken`` naming ``listing``."""
    return _time_and_id(token, _SESSIONS, tokens.is_public_id, listing)


def encode_events(at: datetime, event_id: str) -> str:
    """The token of the position just after the event at ``at`` with id ``event_id``."""
    return _encode(_EVENTS, _micros(at), event_id)


def events_position(token: str | None, listing: str = THIS_LISTING) -> tuple[datetime, str] | None:
    """``(at, id)`` an events page token names; ``None`` for no token. Raises ``BadPageToken`` naming ``listing``."""
    if token is None:
        return None
    return _time_and_id(token, _EVENTS, lambda ident: _EVENT_ID_RE.fullmatch(ident) is not None, listing)


def encode_users(username: str) -> str:
    """The token of the position just after user ``username`` (by document id)."""
    return _encode(_USERS, username)


def decode_users(token: str, listing: str = THIS_LISTING) -> str:
    """The username of a users page token. Raises ``BadPageToken`` naming ``listing``."""
    fields = _decode(token, _USERS, 2)
    if fields is None or not is_stored_username(fields[0]):
        raise BadPageToken(listing)
    return fields[0]


def sessions_position(token: str | None, listing: str = THIS_LISTING) -> tuple[datetime, str] | None:
    """The position a sessions page token names; ``None`` for no token (the first page). Raises ``BadPageToken``."""
    return None if token is None else decode_sessions(token, listing)


def users_position(token: str | None, listing: str = THIS_LISTING) -> str | None:
    """The username a users page token names; ``None`` for no token (the first page). Raises ``BadPageToken``."""
    return None if token is None else decode_users(token, listing)
