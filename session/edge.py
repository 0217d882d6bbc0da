"""What the session endpoints (``session.http``) and ``@require_session`` (``session.guard``) share.

Both take requests and make responses of a web framework: Starlette's for the
endpoints and async functions, Flask's (Werkzeug's) for sync functions. The
three things they do alike are written once here, on what both frameworks offer
under the same names (``request.method``, ``headers.get``, ``cookies.get``;
``Response(body, status, headers)``, ``status_code``, ``set_cookie``):

- ``presented_credential``: the credential a request presents, CSRF-checked;
- ``problem``: an error as an RFC 9457 problem response, never cached;
- ``resend_cookie``: the refreshed session cookie on a response, unless it answers
  an error or already sets a cookie of its own.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from session import binding, credentials, errors

R = TypeVar("R")


class _Values(Protocol):
    def get(self, key: str, /) -> str | None: ...


class RequestLike(Protocol):
    """The part of a Starlette or Flask request that credentials are read from."""

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> Any: ...  # both are case-insensitive mappings of str with get()

    @property
    def cookies(self) -> Any: ...


def presented_credential(
    request: RequestLike, *, path: str, cookie_name: str, allowed: frozenset[str]
) -> tuple[str, bool]:
    """The token ``request`` presents and whether it came from the cookie (``credentials.required_credential``).

    ``path`` is the request's path as its framework gives it (only logged on a CSRF refusal).
    Raises ``Unauthenticated``, ``CsrfRejected``; never touches the store.
    """
    headers: _Values = request.headers
    cookies: _Values = request.cookies
    presented = credentials.Presented(
        headers.get("authorization"),
        cookies.get(cookie_name),
        request.method,
        headers.get("origin"),
        headers.get("referer"),
        path,
    )
    return credentials.required_credential(presented, allowed)


def presented_binding(request: RequestLike, via_cookie: bool) -> binding.Presented:
    """How ``request`` presented its token, with the bound cookie it carries (``binding.refusal`` judges it)."""
    cookies: _Values = request.cookies
    return binding.Presented(via_cookie, cookies.get(binding.BOUND_COOKIE.name) if via_cookie else None)


def problem(exc: errors.SessionError, response_class: type[R]) -> R:
    """``exc`` as a problem+json response of ``response_class`` (Starlette's or Flask's ``Response``).

    Carries the error's own headers (``WWW-Authenticate``, ``Retry-After``, ``Allow``) and
    ``Cache-Control: no-store``.
    """
    headers = {**exc.headers(), "Content-Type": errors.PROBLEM_JSON, "Cache-Control": "no-store"}
    return response_class(errors.problem_body(exc), exc.status, headers)  # type: ignore[call-arg]


def resend_cookie(response: Any, cookie: credentials.Cookie | None) -> None:
    """Set ``cookie`` (``credentials.refreshed_cookie``) on ``response``, if there is one to re-send.

    Not on an error (status 400 or more), and not when the response already sets a
    cookie: a handler that logged out or rotated the session has said the last word
    about it, and a second ``Set-Cookie`` after its own would bring the old cookie back.
    """
    if cookie is None or response.status_code >= 400 or "set-cookie" in response.headers:
        return
    credentials.set_cookie(response, cookie)
