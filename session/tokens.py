"""Session token minting, parsing and hashing.

A token is ``<user key>.<secret>``: the user key is the base64url form of the
lower-cased username (so the user document can be fetched in the same round
trip as the session), and the secret is 32 random bytes from ``secrets``,
base64url-encoded. The user key is not secret; the 256-bit secret is what
authenticates. Only ``sha256(token)`` is ever stored.

Every shape check matches the whole string (``fullmatch``): ``$`` would let a
trailing newline through.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

from session.models import is_stored_username

SECRET_BYTES = 32
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{4,88}")
# The longest token of any kind this package hands out (session, device, page) that it will parse.
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A well-formed token: the username it names and the hash that keys its session."""

    username: str
    token_hash: str


def b64encode(data: bytes) -> str:
    """``data`` as unpadded base64url: the one text form of every token's parts."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """The bytes of unpadded base64url ``text`` (``b64encode``'s inverse). Raises ``ValueError``.

    Lenient like ``base64`` about trailing bits: a caller that needs one text per value
    compares ``b64encode`` of the result with ``text``.
    """
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # binascii.Error is a ValueError


def mint(username: str) -> str:
    """Return a new token for ``username`` (already lower-cased and valid)."""
    return f"{b64encode(username.encode('ascii'))}.{secrets.token_urlsafe(SECRET_BYTES)}"


def hash_token(token: str) -> str:
    """The SHA-256 hex digest that keys the session document."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def parse(token: str) -> ParsedToken | None:
    """Check a presented token's shape; ``None`` if it cannot be one of ours.

    This never touches the store: a malformed token costs no Firestore read.
    A user part naming no valid username (a reserved id such as ``__name__``,
    upper case, a trailing newline) makes the token malformed.
    """
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    key, sep, secret = token.partition(".")
    if not sep or not _KEY_RE.fullmatch(key) or not _SECRET_RE.fullmatch(secret):
        return None
    try:
        username = b64decode(key).decode("ascii")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    if not is_stored_username(username) or b64encode(username.encode("ascii")) != key:
        return None
    return ParsedToken(username=username, token_hash=hash_token(token))


def public_id(token_hash: str) -> str:
    """A public handle for a session; it cannot be turned back into the token or its hash."""
    digest = hashlib.sha256(b"session-public-id\x00" + bytes.fromhex(token_hash)).digest()
    return b64encode(digest[:18])


def device_public_id(device_hash: str) -> str:
    """A public handle for a trusted device (GET /devices); it cannot be turned back into the cookie or its hash."""
    digest = hashlib.sha256(b"device-public-id\x00" + bytes.fromhex(device_hash)).digest()
    return b64encode(digest[:18])


def log_id(token_hash: str) -> str:
    """A short prefix, safe to log, that tells sessions apart in the logs."""
    return token_hash[:12]


def counter_key(username: str) -> str:
    """The document id of a username's failed-login counter (a hash: usernames may not exist)."""
    return hashlib.sha256(b"login-attempts\x00" + username.encode("utf-8")).hexdigest()


def device_hash(token: str) -> str:
    """The id of a device cookie's document: SHA-256 of the token, domain-separated from session hashes."""
    return hashlib.sha256(b"device\x00" + token.encode("ascii")).hexdigest()


def parse_device(token: str) -> ParsedToken | None:
    """A presented device cookie: the username it was issued to and its ``device_hash``; ``None`` if malformed.

    A device token has the shape of a session token (``mint``), so a cookie that names
    another user is recognised without a read.
    """
    parsed = parse(token)
    return None if parsed is None else ParsedToken(username=parsed.username, token_hash=device_hash(token))


def device_counter_key(device: str) -> str:
    """The document id of a device's failed-login counter (from its ``device_hash``)."""
    return hashlib.sha256(b"device-attempts\x00" + device.encode("ascii")).hexdigest()


def address_counter_key(address: str) -> str:
    """The document id of a client address's failed-login counter (a hash: the address is not stored)."""
    return hashlib.sha256(b"address-attempts\x00" + address.encode("utf-8")).hexdigest()


_PUBLIC_ID_RE = re.compile(r"[A-Za-z0-9_-]{24}")


def is_public_id(value: str) -> bool:
    """True when ``value`` has the shape of a ``public_id``."""
    return _PUBLIC_ID_RE.fullmatch(value) is not None
