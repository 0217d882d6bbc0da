"""Pydantic models: request bodies, response bodies and the stored records.

Request models forbid unknown fields; everything is frozen. Times are aware UTC
datetimes and serialise as RFC 3339 strings ending in ``Z``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from session import upgrade
from session.errors import InvalidRequest, UnauthenticatedReason

# The one username rule (the request models, the token parser, the admin operations and the CLI all use it,
# the last two through normalise_username): 3 to 64 characters of
# A-Z a-z 0-9 . _ -, and not a name Firestore reserves as a document id (__anything__), which it would refuse
# with InvalidArgument. Written for the schema (ECMA-262, where $ is the very end); Python uses it with fullmatch.
USERNAME_PATTERN = r"^(?!__.*__$)[A-Za-z0-9._-]{3,64}$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
USERNAME_RULE = "3 to 64 characters of a-z, 0-9, '.', '_' or '-', and not of the form __name__ (reserved)"
PERMISSION_PATTERN = r"^[A-Za-z0-9:._-]{1,64}$"


def utc_text(value: datetime) -> str:
    """The one text form of a time: RFC 3339 in UTC, microseconds, ``Z`` (responses and the admin CLI)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# Timestamps in responses: RFC 3339, UTC, microsecond precision (what Firestore keeps).
Timestamp = Annotated[AwareDatetime, PlainSerializer(utc_text, return_type=str, when_used="json")]


def _username(value: str) -> str:
    try:
        return normalise_username(value)
    except InvalidRequest:
        raise PydanticCustomError("username", USERNAME_RULE) from None


# pydantic's own `pattern` cannot express the reserved names (its regex engine has no look-ahead).
Username = Annotated[str, AfterValidator(_username), WithJsonSchema({"type": "string", "pattern": USERNAME_PATTERN})]
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
AnyPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
DisplayName = Annotated[str, StringConstraints(max_length=100)]
Permission = Annotated[str, StringConstraints(pattern=PERMISSION_PATTERN)]


def _email(value: str) -> str:
    # email-validator is imported on first use, not at cold start (as pydantic's EmailStr would).
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None


# email-validator refuses these domains (RFC 6761 special-use names: mail there is never delivered), which
# `format: email` alone allows; the schema says so. tests/test_models.py keeps the list in step with the library.
SPECIAL_USE_DOMAINS = ("arpa", "invalid", "local", "localhost", "onion", "test")
_EMAIL_PATTERN = (
    "^(?!.*@(?:.*\\.)?(?:"
    + "|".join("".join(f"[{c.upper()}{c}]" for c in name) for name in SPECIAL_USE_DOMAINS)
    + ")$).*$"
)

Email = Annotated[
    str,
    StringConstraints(max_length=254),
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254, "pattern": _EMAIL_PATTERN}),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


# --- requests -------------------------------------------------------------------


class RegisterRequest(_Request):
    username: Username
    password: NewPassword
    display_name: DisplayName | None = None
    email: Email | None = None


class LoginRequest(_Request):
    username: Username
    password: AnyPassword


class PasswordChangeRequest(_Request):
    current_password: AnyPassword
    new_password: NewPassword


class ProfileUpdateRequest(_Request):
    display_name: DisplayName | None = None
    email: Email | None = None


class ReauthenticateRequest(_Request):
    password: AnyPassword


# --- responses ------------------------------------------------------------------


class UserOut(_Response):
    user_id: str
    username: str
    display_name: str | None
    email: str | None
    permissions: list[str]
    created_at: Timestamp


class LoginOut(_Response):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    user_id: str
    username: str
    permissions: list[str]
    logged_in_at: Timestamp
    expires_at: Timestamp


class SessionInfo(_Response):
    logged_in_at: Timestamp
    expires_at: Timestamp
    # When the password was last proved in this session (login, password change, POST /reauthenticate).
    auth_time: Timestamp


class ProfileOut(_Response):
    user_id: str
    username: str
    display_name: str | None
    email: str | None
    permissions: list[str]
    version: int
    session: SessionInfo


class SessionOut(_Response):
    id: str
    created_at: Timestamp
    last_seen_at: Timestamp
    expires_at: Timestamp
    user_agent: str | None
    # A readable name of the browser and system ("Chrome 156 on Linux"), parsed from the User-Agent at login.
    device: str | None
    # The client's network at login, never its address: an IPv4 /24 or IPv6 /48 ("203.0.113.0/24").
    network: str | None
    # Where the login came from, as the header SESSION_CLIENT_GEO_HEADER said; null when not configured.
    place: str | None
    current: bool


class SessionsOut(_Response):
    sessions: list[SessionOut]
    # The page_token of the next page; null on the last page.
    next_page_token: str | None


class DeviceOut(_Response):
    # The device's public id (derived from its key, never the device cookie): DELETE /devices/{id}.
    id: str
    # A readable name of the browser and system when it was first trusted; null when the User-Agent said nothing.
    device: str | None
    created_at: Timestamp
    # When a login from it last opened a session.
    last_used_at: Timestamp
    # Whether it is the browser making this request (it sent the device cookie).
    current: bool


class DevicesOut(_Response):
    devices: list[DeviceOut]


class ProblemError(_Response):
    loc: list[str | int]
    msg: str


class Problem(_Response):
    """An RFC 9457 problem document, as every error response carries."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[ProblemError] | None = None
    # 401 unauthenticated only: why (see session.errors.UnauthenticatedReason).
    reason: UnauthenticatedReason | None = None
    # 403 reauthentication_required only: how recent (seconds) the password proof must be.
    max_age: int | None = None
    # 400 bound_proof_refused only: why a DBSC proof was refused (session.dbsc's reasons).
    refusal: (
        Literal[
            "malformed",
            "too_large",
            "wrong_alg",
            "wrong_typ",
            "not_p256",
            "bad_signature",
            "challenge_mismatch",
            "challenge_expired",
            "no_registration_pending",
        ]
        | None
    ) = None


# --- stored records -----------------------------------------------------------------


class _Record(BaseModel):
    # Stored documents may gain fields in later versions: ignore, don't fail.
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class UserRecord(_Record):
    """``users/{username}``."""

    user_id: str
    username: str
    password_hash: str
    display_name: str | None = None
    email: str | None = None
    permissions: list[str] = Field(default_factory=list)
    disabled: bool = False
    version: int = 1
    created_at: AwareDatetime
    updated_at: AwareDatetime
    # Bumped by a password change, a disable and a revoke-all: a session is live only while
    # it carries the user's current epoch (SessionRecord.auth_epoch).
    auth_epoch: int = 0
    # Written before auth_epoch existed: sessions created before it are void. Read, never written.
    sessions_valid_after: AwareDatetime | None = None


class BoundCredential(_Record):
    """One short-lived bound cookie a bound session accepts: its hash (``session.binding.hash_credential``)."""

    hash: str
    expires_at: AwareDatetime


class PendingChallenge(_Record):
    """One DBSC challenge sent and not yet used: its hash (``session.dbsc.hash_challenge``) and expiry."""

    hash: str
    expires_at: AwareDatetime


class BoundState(_Record):
    """A session's Device Bound Session Credentials state (``session.binding``), written whole each time.

    ``challenges``: the challenges sent and not yet used, newest first, at most two (a registration's, set in
    the commit that creates the session; then refreshes'); the write that accepts a proof removes its
    challenge. ``jwk`` and ``thumbprint``: the browser's public key, once registered (the session is then
    *bound*). ``credentials``: the bound cookies it accepts, newest first, at most two (the current one and
    the one it replaced, so a request in flight during a refresh, or either of two refreshes at once, still
    holds a working cookie).
    """

    challenges: list[PendingChallenge] = Field(default_factory=list)
    jwk: dict[str, str] | None = None
    thumbprint: str | None = None
    credentials: list[BoundCredential] = Field(default_factory=list)


class SessionRecord(_Record):
    """``sessions/{sha256(token)}``."""

    user_id: str
    username: str
    public_id: str
    created_at: AwareDatetime
    last_seen_at: AwareDatetime
    absolute_expires_at: AwareDatetime
    expires_at: AwareDatetime
    user_agent: str | None = None
    # What the login's request said about where it came from (session.devices): a readable device name,
    # the client's /24 or /48 (never its address), the place a trusted geo header named.
    device: str | None = None
    network: str | None = None
    place: str | None = None
    # The user's auth_epoch when this session was committed (under a precondition on the user).
    auth_epoch: int = 0
    # When the password was last proved in this session. Sessions stored before it existed were all
    # opened by a login or a password change, which proved it at created_at: read as that.
    auth_time: AwareDatetime
    # Device Bound Session Credentials (SESSION_DBSC=on): None for a session that never had a challenge.
    dbsc: BoundState | None = None

    @model_validator(mode="before")
    @classmethod
    def _auth_time(cls, data: Any) -> Any:
        return upgrade.session_fields(data)


class LedgerRecord(_Record):
    """``users/{username}/ledger/sessions``: the account's ledger, and the witness of its credentials.

    Every commit that opens a session or changes the credentials (a password, an enablement, the
    ``auth_epoch``) writes this document under a precondition on it as read together with the user,
    so a session is only ever committed under credentials still current, whatever happens to the
    profile fields of the user document meanwhile (see ``docs/architecture.md``, "Consistency").

    It also lists the user's sessions (for ``SESSION_MAX_PER_USER``) and trusted devices (for
    ``SESSION_MAX_DEVICES_PER_USER``): every session and device is committed with its entry, so
    neither bound can be passed by parallel logins. An entry may outlive its document (a logout,
    an expiry): it is dropped when the list is full. ``user_id`` tells a deleted user's ledger from
    that of a namesake registered later.
    """

    # "" only for a ledger that revoke-everyone made for a user from before ledgers (a foreign one: recounted).
    user_id: str = ""
    sessions: list[str] = Field(default_factory=list)
    # False while ``sessions`` was written without a cap (SESSION_MAX_PER_USER=0) and so lists nothing: the
    # first login under a cap counts the stored sessions instead. Ledgers from before this field were all capped.
    sessions_counted: bool = True
    # The user's trusted devices (their hashes), at most SESSION_MAX_DEVICES_PER_USER of them.
    devices: list[str] = Field(default_factory=list)
    # When each listed device last opened a session (GET /devices' last_used_at). Kept here, in the write every
    # login makes anyway, so that a login from a trusted device need not write its device document each time.
    devices_used: dict[str, AwareDatetime] = Field(default_factory=dict)
    # Set by every change of credentials that has nothing else to write here (revoke-everyone): a commit
    # opening a session under a precondition on this document then fails, as on any other change.
    changed_at: AwareDatetime | None = None


class AttemptsRecord(_Record):
    """``login_attempts/{sha256(username)}``: guesses counted in the current window.

    ``count`` is raised before a password is judged and the counter deleted after a
    success; ``window_start`` is in seconds since the epoch (a number, so that a
    server-side ``Minimum`` can return it with the count).
    """

    count: int
    window_start: float
    expires_at: AwareDatetime
    # The random id of the last commit that counted a guess here, and of the last guess given back: how a
    # commit whose answer was lost is recognised (a transform applied twice would count twice).
    guess: str | None = None
    returned: str | None = None

    @field_validator("window_start", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        return upgrade.window_start_seconds(value)


class DeviceRecord(_Record):
    """``users/{username}/devices/{device_hash(token)}``: a browser trusted by a successful login (device cookie).

    A login presenting its cookie is judged against the device's own failed-login counter, not the
    username-wide one. Trusted while ``user_id`` is the user's, ``auth_epoch`` the user's current one
    (a change of credentials ends the trust of every earlier device) and ``expires_at`` (renewed by each
    successful login from it; TTL field) is in the future.
    """

    user_id: str
    created_at: AwareDatetime
    expires_at: AwareDatetime
    # The user's auth_epoch when the device was minted or last re-stamped; None: stored before device
    # epochs existed, and never trusted again.
    auth_epoch: int | None = None
    # The readable name of the browser when it was first trusted ("Firefox 146 on Windows"), for GET /devices.
    device: str | None = None


class UserChange(BaseModel):
    """A change to a stored user: only the fields given are written (a mistyped name fails at once)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    password_hash: str | None = None
    display_name: str | None = None
    email: str | None = None
    permissions: list[str] | None = None
    disabled: bool | None = None
    version: int | None = None
    auth_epoch: int | None = None
    updated_at: AwareDatetime | None = None


def is_valid_username(value: str) -> bool:
    """True for a username the register endpoint would accept (any case)."""
    return _USERNAME_RE.fullmatch(value) is not None


def is_stored_username(value: str) -> bool:
    """True for a username as it is stored and named in tokens: valid and lower-cased."""
    return is_valid_username(value) and value == value.lower()


def normalise_username(value: str) -> str:
    """``value`` as usernames are stored and named in tokens: lower-cased, once it is known to be valid.

    Validated against ASCII first, then lower-cased: lower-casing first would let Unicode
    look-alikes (the Kelvin sign lower-cases to "k") slip through. Raises ``InvalidRequest``
    (at ``username``) for a name the register endpoint would refuse.
    """
    if not is_valid_username(value):
        raise InvalidRequest([{"loc": ["username"], "msg": USERNAME_RULE}])
    return value.lower()
