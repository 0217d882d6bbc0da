"""The route table: every endpoint, its handlers, and the problems each operation can answer with.

The OpenAPI document is generated from ``ROUTES``, so the spec and the router cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel
from starlette.responses import Response

from session import credentials, edge, errors, pages, tokens
from session.call import JSON, Call
from session.config import Settings
from session.context import LoginResult
from session.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from session.models import (
    LoginRequest,
    PasswordChangeRequest,
    ProfileOut,
    ProfileUpdateRequest,
    ReauthenticateRequest,
    RegisterRequest,
)

P = TypeVar("P")

# --- responses ------------------------------------------------------------------------------


def json_response(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type=JSON, headers=dict(headers or {}))


def problem_response(exc: errors.SessionError) -> Response:
    return edge.problem(exc, Response)


def _login_response(settings: Settings, result: LoginResult) -> Response:
    response = json_response(result.body)
    credentials.set_cookie(response, credentials.session_cookie(settings, result.token, result.max_age))
    return response


def _clear_cookie(settings: Settings, response: Response) -> Response:
    credentials.set_cookie(response, credentials.cleared_cookie(settings))
    return response


def _profile_response(profile: ProfileOut) -> Response:
    return json_response(profile, headers={"ETag": f'"{profile.version}"'})


# The one If-Match grammar (the OpenAPI document uses it too): `*`, or a version as an entity tag,
# quotes and W/ optional.
IF_MATCH_PATTERN = r'^(\*|(W/)?"([0-9]{1,18})"|(W/)?([0-9]{1,18}))$'
_IF_MATCH = re.compile(IF_MATCH_PATTERN)


def _parse_if_match(value: str | None) -> int | None:
    """The version named by ``If-Match``; ``None`` for no header or ``*``."""
    if value is None:
        return None
    # fullmatch: `$` alone would accept a trailing newline. [0-9]: str.isdigit() would accept "²".
    match = _IF_MATCH.fullmatch(value.strip())
    if match is None:
        raise errors.InvalidRequest([{"loc": ["header", "if-match"], "msg": 'expected an ETag like "3"'}])
    version = match.group(3) or match.group(5)
    return int(version) if version else None


def _parse_bool(call: Call, name: str) -> bool:
    value = call.request.query_params.get(name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise errors.InvalidRequest([{"loc": ["query", name], "msg": "expected true or false"}])


# --- handlers -------------------------------------------------------------------------------


async def _register(call: Call) -> Response:
    req = await call.body(RegisterRequest)
    user = await call.api.service.register(req)
    call.log_fields["user_id"] = user.user_id
    return json_response(user, status=201)


async def _login(call: Call) -> Response:
    req = await call.body(LoginRequest)
    settings = call.api.settings
    result = await call.api.service.login(
        req, origin=call.origin(), device=call.device_cookie(), address=call.address()
    )
    call.log_fields["user_id"] = result.body.user_id
    call.log_fields["sid"] = tokens.log_id(tokens.hash_token(result.token))
    response = _login_response(settings, result)
    if result.device_token is not None:
        credentials.set_cookie(
            response, credentials.device_cookie(settings, result.device_token, result.device_max_age)
        )
    return response


async def _logout(call: Call) -> Response:
    token, _ = call.required_credential()
    sid = await call.api.service.logout(token)
    if sid is not None:
        call.log_fields["sid"] = sid
    return _clear_cookie(call.api.settings, Response(status_code=204))


async def _get_profile(call: Call) -> Response:
    ctx = await call.authenticate()
    return _profile_response(call.api.service.profile(ctx))


async def _patch_profile(call: Call) -> Response:
    if_match = _parse_if_match(call.request.headers.get("if-match"))
    ctx = await call.authenticate()
    req = await call.body(ProfileUpdateRequest)
    return _profile_response(await call.api.service.update_profile(ctx, req, if_match=if_match, origin=call.origin()))


async def _change_password(call: Call) -> Response:
    ctx = await call.authenticate()
    req = await call.body(PasswordChangeRequest)
    result = await call.api.service.change_password(ctx, req, origin=call.origin(), device=call.device_cookie())
    call.log_fields["sid"] = tokens.log_id(tokens.hash_token(result.token))
    return _login_response(call.api.settings, result)


async def _reauthenticate(call: Call) -> Response:
    ctx = await call.authenticate()
    req = await call.body(ReauthenticateRequest)
    result = await call.api.service.reauthenticate(ctx, req, origin=call.origin(), device=call.device_cookie())
    call.log_fields["new_sid"] = tokens.log_id(tokens.hash_token(result.token))
    return _login_response(call.api.settings, result)


_LIMIT_RE = re.compile(r"[0-9]{1,3}")


def _parse_limit(call: Call) -> int:
    """``?limit=``: a whole number from 1 to ``MAX_PAGE_SIZE``; absent: ``DEFAULT_PAGE_SIZE``."""
    value = call.request.query_params.get("limit")
    if value is None:
        return DEFAULT_PAGE_SIZE
    # fullmatch on [0-9]: int() alone would take " 5", "+5", "1_0" and "²".
    if _LIMIT_RE.fullmatch(value) is None or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise errors.InvalidRequest(
            [{"loc": ["query", "limit"], "msg": f"expected a whole number from 1 to {MAX_PAGE_SIZE}"}]
        )
    return int(value)


def _page_position(call: Call, position: Callable[[str | None], P]) -> P:
    """``?page_token=`` as ``position`` reads it (``pages.sessions_position``, ``pages.events_position``)."""
    try:
        return position(call.request.query_params.get("page_token"))
    except pages.BadPageToken as exc:
        raise exc.located("query") from None


async def _list_sessions(call: Call) -> Response:
    limit, after = _parse_limit(call), _page_position(call, pages.sessions_position)
    ctx = await call.authenticate()
    return json_response(await call.api.service.list_sessions(ctx, limit=limit, after=after))


async def _revoke_all(call: Call) -> Response:
    include_current = _parse_bool(call, "include_current")
    ctx = await call.authenticate()
    await call.api.service.revoke_all(
        ctx, include_current=include_current, device=call.device_cookie(), origin=call.origin()
    )
    response = Response(status_code=204)
    return _clear_cookie(call.api.settings, response) if include_current else response


async def _revoke_one(call: Call) -> Response:
    ctx = await call.authenticate()
    was_current = await call.api.service.revoke_session(ctx, call.params[0], origin=call.origin())
    response = Response(status_code=204)
    return _clear_cookie(call.api.settings, response) if was_current else response


async def _security_events(call: Call) -> Response:
    limit, after = _parse_limit(call), _page_position(call, pages.events_position)
    ctx = await call.authenticate()
    return json_response(await call.api.service.security_events(ctx, limit=limit, after=after))


async def _list_devices(call: Call) -> Response:
    ctx = await call.authenticate()
    return json_response(await call.api.service.list_devices(ctx, cookie=call.device_cookie()))


async def _revoke_device(call: Call) -> Response:
    ctx = await call.authenticate()
    await call.api.service.revoke_device(ctx, call.params[0], origin=call.origin())
    return Response(status_code=204)


Handler = Callable[[Call], Awaitable[Response]]

# What any operation can answer besides its own errors; the route table composes them, and the OpenAPI
# document is generated from it, so the spec and the router cannot disagree.
BODY_ERRORS: tuple[type[errors.SessionError], ...] = (
    errors.InvalidJson,
    errors.InvalidRequest,
    errors.PayloadTooLarge,
    errors.UnsupportedMediaType,
)
AUTH_ERRORS: tuple[type[errors.SessionError], ...] = (errors.Unauthenticated,)
COOKIE_WRITE_ERRORS: tuple[type[errors.SessionError], ...] = (errors.CsrfRejected,)
STORE_ERRORS: tuple[type[errors.SessionError], ...] = (errors.ServiceUnavailable,)


@dataclass(frozen=True, slots=True)
class Operation:
    """One method of one route: its handler and every problem it can answer with."""

    handler: Handler
    raises: tuple[type[errors.SessionError], ...]


def _signed_in(
    method: str, *own: type[errors.SessionError], body: bool = False
) -> tuple[type[errors.SessionError], ...]:
    """An authenticated ``method``'s errors: body, authentication, CSRF (if the method changes state), its own, the
    store's. Whether it changes state is ``credentials.STATE_CHANGING``'s to say, the set CSRF is enforced on."""
    writes = method in credentials.STATE_CHANGING
    return (*(BODY_ERRORS if body else ()), *AUTH_ERRORS, *(COOKIE_WRITE_ERRORS if writes else ()), *own, *STORE_ERRORS)


# endpoint -> [(path pattern below the endpoint, {method: operation})]; "*" matches one segment.
ROUTES: dict[str, list[tuple[tuple[str, ...], dict[str, Operation]]]] = {
    "register": [
        (
            (),
            {
                "POST": Operation(
                    _register, (*BODY_ERRORS, errors.RegistrationDisabled, errors.UsernameTaken, *STORE_ERRORS)
                )
            },
        )
    ],
    "login": [
        (
            (),
            {
                "POST": Operation(
                    _login,
                    (
                        *BODY_ERRORS,
                        errors.InvalidCredentials,
                        errors.AccountDisabled,
                        errors.TooManyAttempts,
                        *STORE_ERRORS,
                    ),
                )
            },
        )
    ],
    "logout": [((), {"POST": Operation(_logout, (*AUTH_ERRORS, *COOKIE_WRITE_ERRORS, *STORE_ERRORS))})],
    "profile": [
        (
            (),
            {
                "GET": Operation(_get_profile, _signed_in("GET")),
                "PATCH": Operation(
                    _patch_profile,
                    _signed_in("PATCH", errors.VersionConflict, errors.ReauthenticationRequired, body=True),
                ),
            },
        ),
        (
            ("password",),
            {
                "POST": Operation(
                    _change_password,
                    _signed_in("POST", errors.WrongCurrentPassword, errors.TooManyAttempts, body=True),
                )
            },
        ),
    ],
    "sessions": [
        (
            (),
            {
                "GET": Operation(
                    _list_sessions, (errors.InvalidRequest, *_signed_in("GET", errors.ReauthenticationRequired))
                ),
                "DELETE": Operation(
                    _revoke_all, (errors.InvalidRequest, *_signed_in("DELETE", errors.ReauthenticationRequired))
                ),
            },
        ),
        (
            ("*",),
            {"DELETE": Operation(_revoke_one, _signed_in("DELETE", errors.NotFound, errors.ReauthenticationRequired))},
        ),
    ],
    "security-events": [
        (
            (),
            {
                "GET": Operation(
                    _security_events, (errors.InvalidRequest, *_signed_in("GET", errors.ReauthenticationRequired))
                )
            },
        )
    ],
    "devices": [
        ((), {"GET": Operation(_list_devices, _signed_in("GET", errors.ReauthenticationRequired))}),
        (
            ("*",),
            {
                "DELETE": Operation(
                    _revoke_device, _signed_in("DELETE", errors.NotFound, errors.ReauthenticationRequired)
                )
            },
        ),
    ],
    "reauthenticate": [
        (
            (),
            {
                "POST": Operation(
                    _reauthenticate,
                    _signed_in("POST", errors.WrongCurrentPassword, errors.TooManyAttempts, body=True),
                )
            },
        )
    ],
}


def resolve(endpoint: str, segments: tuple[str, ...]) -> tuple[dict[str, Operation], tuple[str, ...]]:
    """The methods of the route matching ``segments`` below ``endpoint``, and its parameters."""
    for pattern, methods in ROUTES.get(endpoint, ()):
        if len(pattern) == len(segments) and all(p in ("*", s) for p, s in zip(pattern, segments, strict=True)):
            return methods, tuple(s for p, s in zip(pattern, segments, strict=True) if p == "*")
    raise errors.NotFound("no such endpoint")


# --- Device Bound Session Credentials (issue 25): session.bound_routes ------------------------

from session import bound_routes  # noqa: E402  (it imports session.call, as this module does)

_DBSC_ERRORS: tuple[type[errors.SessionError], ...] = (errors.NotFound, errors.BoundProofRefused, *STORE_ERRORS)
ROUTES["dbsc"] = [
    (
        ("register",),
        {"POST": Operation(bound_routes.register, (errors.InvalidRequest, errors.Unauthenticated, *_DBSC_ERRORS))},
    ),
    (("refresh",), {"POST": Operation(bound_routes.refresh, (errors.BoundChallenge, *_DBSC_ERRORS))}),
]
