"""Device Bound Session Credentials (DBSC): the pure building blocks, no HTTP, no store.

The browser keeps a private key it cannot export and proves possession of it:

1. A login answers ``Secure-Session-Registration: (ES256);path="…";challenge="…"``
   (``registration_header``), with a challenge from ``mint_challenge``; only its
   hash is stored (``StoredChallenge``).
2. The browser POSTs to that path with ``Secure-Session-Response: <JWT>``: header
   ``{alg: ES256, typ: "dbsc+jwt", jwk: <P-256 public key>}``, payload
   ``{jti: <challenge>}``. ``verify_registration`` checks it and returns the key
   (``BoundKey``) to store on the session.
3. The answer is the session instructions (``session_instructions``) and the
   short-lived bound cookie (``BoundCookie.set_cookie``). The instructions declare
   the cookie's attributes; Chromium refuses, silently, a registration whose
   cookie does not match them, so both come from the one ``BoundCookie``.
4. When the bound cookie is gone, the browser POSTs to ``refresh_url`` with
   ``Sec-Secure-Session-Id``. The server answers 403 with
   ``Secure-Session-Challenge`` (``challenge_header``), the browser retries with a
   JWT ``{alg: ES256, typ: "dbsc+jwt"}`` ``{jti: <challenge>}`` signed by the bound
   key, and ``verify_refresh`` checks it against the stored ``BoundKey``.

Single use is the caller's part: the write that accepts a proof must also clear
(or replace) the stored challenge, under a precondition, so a second proof with the
same challenge finds nothing to match.

Every refusal is a ``DbscError`` with a machine-readable ``reason``. Time is a
parameter (``now``); the JOSE library (joserfc) is imported on first use, so a
cold start that serves no DBSC request never loads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

ALGORITHM = "ES256"
JWT_TYPE = "dbsc+jwt"
CHALLENGE_BYTES = 32
# A registration JWT with its P-256 JWK is about 450 characters; anything far larger is not one.
MAX_PROOF_LENGTH = 4096
MAX_CHALLENGE_LENGTH = 128
# RFC 9651 sf-string: printable ASCII; '"' and '\' are escaped.
_SF_STRING_RE = re.compile(r"[\x20-\x7e]*")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")
_COOKIE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SAME_SITE = ("Strict", "Lax", "None")


# --- errors ----------------------------------------------------------------------------------------------


class DbscError(Exception):
    """A DBSC proof (or its challenge) is refused; ``reason`` says why, for a client or a log."""

    reason: ClassVar[str] = "dbsc_refused"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.reason.replace("_", " ")
        super().__init__(self.detail)


class MalformedProof(DbscError):
    """Not a compact JWS with a JSON header and payload of the expected shape."""

    reason = "malformed"


class ProofTooLarge(MalformedProof):
    """Longer than ``MAX_PROOF_LENGTH``: refused before it is decoded."""

    reason = "too_large"


class WrongAlgorithm(DbscError):
    """``alg`` is not ES256 (``none``, ``HS256``, …): refused before any key is used."""

    reason = "wrong_alg"


class WrongType(DbscError):
    """``typ`` is not ``dbsc+jwt``."""

    reason = "wrong_typ"


class NotP256(DbscError):
    """The registration's ``jwk`` is missing, private, or not an EC key on P-256."""

    reason = "not_p256"


class BadSignature(DbscError):
    """The signature does not verify with the key (the header's at registration, the stored one at refresh)."""

    reason = "bad_signature"


class ChallengeMismatch(DbscError):
    """``jti`` is not the challenge stored for this session (another session's, an old one, a reused one)."""

    reason = "challenge_mismatch"


class ChallengeExpired(DbscError):
    """The stored challenge has expired: the browser must be given a new one."""

    reason = "challenge_expired"


# --- challenges ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredChallenge:
    """What the session keeps of a challenge: its hash, and when it stops being accepted."""

    hash: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Challenge:
    """A new challenge: ``value`` goes to the browser, ``stored`` to the session."""

    value: str
    stored: StoredChallenge


def hash_challenge(value: str) -> str:
    """The stored form of a challenge: SHA-256, domain-separated from every other hash of the service."""
    return hashlib.sha256(b"dbsc-challenge\x00" + value.encode("utf-8")).hexdigest()


def mint_challenge(now: datetime, lifetime: timedelta) -> Challenge:
    """A random 256-bit challenge, valid until ``now + lifetime``."""
    value = secrets.token_urlsafe(CHALLENGE_BYTES)
    return Challenge(value, StoredChallenge(hash_challenge(value), now + lifetime))


# --- response headers ------------------------------------------------------------------------------------


def _sf_string(value: str) -> str:
    """``value`` as an RFC 9651 sf-string; ``ValueError`` if it cannot be one (a caller's bug, not a client's)."""
    if _SF_STRING_RE.fullmatch(value) is None:
        raise ValueError(f"{value!r} cannot be a structured-field string (printable ASCII only)")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def registration_header(path: str, challenge: str) -> str:
    """The value of ``Secure-Session-Registration``: ``(ES256);path="…";challenge="…"``."""
    return f"({ALGORITHM});path={_sf_string(path)};challenge={_sf_string(challenge)}"


def challenge_header(challenge: str, session_id: str) -> str:
    """The value of ``Secure-Session-Challenge`` for a refresh: ``"<challenge>";id="<session id>"``."""
    return f"{_sf_string(challenge)};id={_sf_string(session_id)}"


# --- the bound cookie and the instructions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BoundCookie:
    """The short-lived cookie a bound session requires, declared once for both its Set-Cookie and the JSON.

    ``attributes`` is what the instructions declare; ``set_cookie`` adds only the
    value and ``Max-Age`` (which the declaration must not carry).
    """

    name: str
    path: str = "/"
    same_site: str = "Lax"
    http_only: bool = True

    def __post_init__(self) -> None:
        if _COOKIE_NAME_RE.fullmatch(self.name) is None:
            raise ValueError(f"{self.name!r}: a cookie name is 1 to 64 of A-Z a-z 0-9 _ -")
        if self.same_site not in _SAME_SITE or not self.path.startswith("/") or ";" in self.path:
            raise ValueError(f"invalid bound cookie: path {self.path!r}, SameSite {self.same_site!r}")

    @property
    def attributes(self) -> str:
        """``Path=/; Secure; HttpOnly; SameSite=Lax``: always Secure (DBSC needs HTTPS)."""
        parts = [f"Path={self.path}", "Secure"]
        if self.http_only:
            parts.append("HttpOnly")
        parts.append(f"SameSite={self.same_site}")
        return "; ".join(parts)

    def set_cookie(self, value: str, max_age: int) -> str:
        """A ``Set-Cookie`` value: the declared attributes, plus the value and its lifetime."""
        return f"{self.name}={value}; Max-Age={max_age}; {self.attributes}"

    def clear(self) -> str:
        """A ``Set-Cookie`` value that removes the cookie."""
        return self.set_cookie("", 0)


def session_instructions(session_id: str, refresh_url: str, origin: str, cookie: BoundCookie) -> dict[str, Any]:
    """The JSON that answers a registration and a refresh (W3C DBSC "session instructions").

    ``origin`` (``https://host[:port]``) is the scope: the session covers that
    origin only (``include_site`` false). ``credentials`` names the bound cookie
    with exactly the attributes its ``Set-Cookie`` carries.
    """
    return {
        "session_identifier": session_id,
        "refresh_url": refresh_url,
        "scope": {"origin": origin, "include_site": False},
        "credentials": [{"type": "cookie", "name": cookie.name, "attributes": cookie.attributes}],
    }


# --- proofs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BoundKey:
    """A session's registered public key: its JWK (only ``kty crv x y``) and RFC 7638 thumbprint."""

    jwk: dict[str, str]
    thumbprint: str


def _decode_json(segment: str) -> dict[str, Any]:
    if _SEGMENT_RE.fullmatch(segment) is None:
        raise MalformedProof("a JWT segment is not base64url")
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise MalformedProof("a JWT segment is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise MalformedProof("a JWT header or payload is not a JSON object")
    return value


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and payload of a compact JWS, with ``alg`` and ``typ`` checked; nothing verified yet."""
    if len(token) > MAX_PROOF_LENGTH:
        raise ProofTooLarge(f"the proof is longer than {MAX_PROOF_LENGTH} characters")
    segments = token.split(".")
    if len(segments) != 3:
        raise MalformedProof("not a compact JWT (three segments)")
    header = _decode_json(segments[0])
    if header.get("alg") != ALGORITHM:  # before the signature's presence: an unsigned `none` token says why
        raise WrongAlgorithm(f"alg must be {ALGORITHM}")
    if header.get("typ") != JWT_TYPE:
        raise WrongType(f"typ must be {JWT_TYPE}")
    if _SEGMENT_RE.fullmatch(segments[2]) is None:
        raise MalformedProof("the signature is missing or not base64url")
    return header, _decode_json(segments[1])


def _check_challenge(payload: dict[str, Any], expected: StoredChallenge, now: datetime) -> None:
    jti = payload.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_CHALLENGE_LENGTH:
        raise MalformedProof("jti must be the challenge, a string")
    if not hmac.compare_digest(hash_challenge(jti), expected.hash):
        raise ChallengeMismatch("jti is not this session's current challenge")
    if now >= expected.expires_at:
        raise ChallengeExpired("the challenge has expired")


def _import_p256(jwk: object) -> Any:
    """A joserfc ``ECKey`` for a public P-256 JWK; ``NotP256`` for anything else."""
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey

    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "d" in jwk:
        raise NotP256("jwk must be a public EC key on P-256")
    fields: dict[str, str | list[str]] = {}
    for name in ("kty", "crv", "x", "y"):
        value = jwk.get(name)
        if not isinstance(value, str):
            raise NotP256("jwk must carry x and y")
        fields[name] = value
    try:
        return ECKey.import_key(fields)
    except (JoseError, ValueError, TypeError, binascii.Error) as exc:  # not a point on the curve, bad encoding
        raise NotP256("jwk is not a valid P-256 public key") from exc


def _verify_signature(token: str, key: Any) -> None:
    from joserfc import jws
    from joserfc.errors import BadSignatureError, JoseError

    try:
        jws.deserialize_compact(token, key, algorithms=[ALGORITHM])
    except BadSignatureError as exc:
        raise BadSignature("the signature does not verify") from exc
    except (JoseError, ValueError) as exc:
        raise MalformedProof("the JWT cannot be verified") from exc


def verify_registration(token: str, expected: StoredChallenge, now: datetime) -> BoundKey:
    """Check a registration's ``Secure-Session-Response`` JWT; the key to bind the session to.

    Checks, in this order, so an unsigned token costs no signature check: the
    size and shape, ``alg`` ES256, ``typ`` dbsc+jwt, the header's ``jwk`` (a public
    P-256 key), the signature with that key, then ``jti`` against the stored
    challenge and its expiry. Raises a ``DbscError`` subclass.
    """
    header, payload = _parts(token)
    key = _import_p256(header.get("jwk"))
    _verify_signature(token, key)
    _check_challenge(payload, expected, now)
    jwk = {name: str(value) for name, value in key.as_dict(private=False).items() if name in ("kty", "crv", "x", "y")}
    return BoundKey(jwk=jwk, thumbprint=str(key.thumbprint()))


def verify_refresh(token: str, key: BoundKey, expected: StoredChallenge, now: datetime) -> None:
    """Check a refresh's signed retry against the session's stored ``key`` and challenge.

    A ``jwk`` in the header, if the browser sends one, is ignored: only the stored
    key counts. Raises a ``DbscError`` subclass.
    """
    _, payload = _parts(token)
    _verify_signature(token, _import_p256(key.jwk))
    _check_challenge(payload, expected, now)
