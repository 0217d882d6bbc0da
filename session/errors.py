"""One error tree: every failure a client can see has a class, an HTTP status and a stable code.

The HTTP layer turns any ``SessionError`` into an RFC 9457 problem response; the
service and store raise them and never build responses themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import ClassVar

# RFC 9457: every error response is a problem document of this media type, with a type URI per code.
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "urn:session-service:problem:"


class SessionError(Exception):
    """Base of every error a client can be shown."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"
    # Declared for the OpenAPI document (scripts/openapi.py): the names of the headers ``headers()`` returns,
    # and of the members ``extra()`` adds to the problem document. tests/test_openapi.py holds them to both.
    header_names: ClassVar[tuple[str, ...]] = ()
    members: ClassVar[tuple[str, ...]] = ()

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.title
        super().__init__(self.detail)

    def headers(self) -> Mapping[str, str]:
        """Extra response headers this error requires."""
        return {}

    def extra(self) -> Mapping[str, object]:
        """Extra members of the problem document."""
        return {}


# --- malformed requests ------------------------------------------------------


class BadRequest(SessionError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class InvalidJson(BadRequest):
    code = "invalid_json"
    title = "The body is not valid JSON"


class InvalidRequest(BadRequest):
    """The body, query or a header breaks the schema; ``errors`` lists where."""

    code = "invalid_request"
    title = "The request does not match the schema"
    members = ("errors",)

    def __init__(self, errors: Sequence[Mapping[str, object]], detail: str | None = None) -> None:
        super().__init__(detail or "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))  # type: ignore[call-overload]
        self.errors = [dict(e) for e in errors]

    def extra(self) -> Mapping[str, object]:
        return {"errors": self.errors}


class UnsupportedMediaType(SessionError):
    status = 415
    code = "unsupported_media_type"
    title = "The body must be application/json"


class PayloadTooLarge(SessionError):
    status = 413
    code = "payload_too_large"
    title = "The body is too large"


class MethodNotAllowed(SessionError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"
    header_names = ("Allow",)

    def __init__(self, allow: Sequence[str]) -> None:
        self.allow = tuple(allow)
        super().__init__(f"allowed methods: {', '.join(self.allow)}")

    def headers(self) -> Mapping[str, str]:
        return {"Allow": ", ".join(self.allow)}


class NotFound(SessionError):
    status = 404
    code = "not_found"
    title = "Not found"


# --- authentication and authorisation -----------------------------------------


class UnauthenticatedReason(StrEnum):
    """Why a request is not authenticated; the ``reason`` member of a 401 problem document."""

    NO_CREDENTIALS = "no_credentials"  # neither a Bearer header nor the cookie
    BAD_SCHEME = "bad_scheme"  # an Authorization header that is not "Bearer <token>"
    MALFORMED = "malformed"  # not the shape of a token of ours
    UNKNOWN = "unknown"  # no such session: never was, logged out or revoked one by one
    EXPIRED = "expired"  # past its idle or absolute deadline
    REVOKED = "revoked"  # ended by a password change, a disable or a revoke-all, or the user is gone
    # A session bound to a browser's key (DBSC, session.binding) needs its short-lived bound cookie as well:
    BOUND_CREDENTIAL_MISSING = "bound_credential_missing"  # the session cookie came alone
    BOUND_CREDENTIAL_EXPIRED = "bound_credential_expired"  # the bound cookie's lifetime has passed
    BOUND_CREDENTIAL_INVALID = "bound_credential_invalid"  # not a bound cookie this session was issued (or replaced)
    BOUND_SESSION_BEARER = "bound_session_bearer"  # a bound session's token as a Bearer token: only a thief does that


_UNAUTHENTICATED_DETAIL = {
    UnauthenticatedReason.NO_CREDENTIALS: "no credentials: send a Bearer token or the session cookie",
    UnauthenticatedReason.BAD_SCHEME: "use 'Authorization: Bearer <token>'",
    UnauthenticatedReason.MALFORMED: "the token is malformed",
    UnauthenticatedReason.UNKNOWN: "the session does not exist or was revoked",
    UnauthenticatedReason.EXPIRED: "the session has expired",
    UnauthenticatedReason.REVOKED: "the session was revoked, or the account is disabled or gone",
    UnauthenticatedReason.BOUND_CREDENTIAL_MISSING: "the session is bound to a device: its bound cookie is missing",
    UnauthenticatedReason.BOUND_CREDENTIAL_EXPIRED: "the session is bound to a device: its bound cookie has expired",
    UnauthenticatedReason.BOUND_CREDENTIAL_INVALID: "the session is bound to a device: the bound cookie is not valid",
    UnauthenticatedReason.BOUND_SESSION_BEARER: "a session bound to a browser cannot be used as a Bearer token",
}


class Unauthenticated(SessionError):
    """No live session: ``reason`` (an ``UnauthenticatedReason``) says why."""

    status = 401
    code = "unauthenticated"
    title = "Authentication required"
    header_names = ("WWW-Authenticate",)
    members = ("reason",)

    def __init__(self, reason: UnauthenticatedReason, detail: str | None = None) -> None:
        self.reason = reason
        super().__init__(detail or _UNAUTHENTICATED_DETAIL[reason])

    def headers(self) -> Mapping[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="session"'}

    def extra(self) -> Mapping[str, object]:
        return {"reason": self.reason.value}


class BoundProofRefused(SessionError):
    """A DBSC proof (registration or refresh) is refused; ``refusal`` says why (``session.dbsc``'s reason)."""

    status = 400
    code = "bound_proof_refused"
    title = "The device-bound session proof is refused"
    members = ("refusal",)

    def __init__(self, refusal: str, detail: str | None = None) -> None:
        self.refusal = refusal
        super().__init__(detail)

    def extra(self) -> Mapping[str, object]:
        return {"refusal": self.refusal}


class BoundChallenge(SessionError):
    """A DBSC refresh must be signed: ``Secure-Session-Challenge`` carries the challenge to sign (W3C DBSC)."""

    status = 403
    code = "bound_challenge"
    title = "Sign the challenge with the session's key"
    header_names = ("Secure-Session-Challenge",)

    def __init__(self, header: str) -> None:
        self.header = header
        super().__init__("sign the challenge in Secure-Session-Challenge and send it again")

    def headers(self) -> Mapping[str, str]:
        return {"Secure-Session-Challenge": self.header}


class InvalidCredentials(SessionError):
    status = 401
    code = "invalid_credentials"
    title = "Invalid username or password"
    header_names = ("WWW-Authenticate",)

    def headers(self) -> Mapping[str, str]:
        # RFC 9110: every 401 names the scheme to use.
        return {"WWW-Authenticate": 'Bearer realm="session"'}


class WrongCurrentPassword(SessionError):
    """The caller is authenticated, but re-entered the wrong password (403: the session itself is fine)."""

    status = 403
    code = "wrong_current_password"
    title = "The current password is wrong"


class ReauthenticationRequired(SessionError):
    """The operation needs the password proved within ``max_age`` seconds (``POST /reauthenticate``)."""

    status = 403
    code = "reauthentication_required"
    title = "Re-enter your password to continue"
    members = ("max_age",)

    def __init__(self, max_age: int, detail: str | None = None) -> None:
        self.max_age = max_age
        super().__init__(detail or f"this needs the password proved within the last {max_age} s: POST /reauthenticate")

    def extra(self) -> Mapping[str, object]:
        return {"max_age": self.max_age}


class AccountDisabled(SessionError):
    status = 403
    code = "account_disabled"
    title = "This account is disabled"


class Forbidden(SessionError):
    status = 403
    code = "forbidden"
    title = "Permission denied"


class CsrfRejected(SessionError):
    status = 403
    code = "csrf_rejected"
    title = "Cross-site request rejected"


class RegistrationDisabled(SessionError):
    status = 403
    code = "registration_disabled"
    title = "Registration is disabled"


class UsernameTaken(SessionError):
    status = 409
    code = "username_taken"
    title = "The username is taken"


class VersionConflict(SessionError):
    status = 412
    code = "version_conflict"
    title = "The resource has changed"


class _RetryAfter(SessionError):
    header_names = ("Retry-After",)

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(detail)

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyAttempts(_RetryAfter):
    status = 429
    code = "too_many_attempts"
    title = "Too many failed logins"


class ServiceUnavailable(_RetryAfter):
    """The store could not be reached within the deadline."""

    status = 503
    code = "service_unavailable"
    title = "The session store is unavailable"

    def __init__(self, retry_after: int = 5, detail: str | None = None) -> None:
        super().__init__(retry_after, detail)


class InternalError(SessionError):
    """An unexpected failure; the detail never carries internals."""


def problem_body(exc: SessionError) -> str:
    """The RFC 9457 problem document of ``exc``, as JSON text (the HTTP edge and the guard both send it)."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE + exc.code,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "code": exc.code,
        **exc.extra(),
    }
    return json.dumps(body, ensure_ascii=False, default=str)
