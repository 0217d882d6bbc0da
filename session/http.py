"""The HTTP edge: routing, request parsing, cookies, CSRF and CORS, errors as problem+json.

Each functions-framework entry point in ``main.py`` hands its Starlette request
to ``Api.handle`` with the name of its endpoint; the ``api`` entry point serves
them all under path prefixes. Every failure becomes an RFC 9457 problem
response with a stable ``code``; nothing a client sends can produce a stack
trace or a 500.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from session import credentials, edge, errors, logs, pages, tokens
from session.config import ConfigError, Settings
from session.models import (
    LoginRequest,
    PasswordChangeRequest,
    ProfileOut,
    ProfileUpdateRequest,
    ReauthenticateRequest,
    RegisterRequest,
)
from session.runtime import Runtime, build, store_failure
from session.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, AuthContext, LoginResult, SessionService
from session.store import OpCounts, StoreError, current_ops

MAX_BODY_BYTES = 16 * 1024
JSON = "application/json"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
CORS_EXPOSE_HEADERS = "ETag, Retry-After, WWW-Authenticate"

M = TypeVar("M", bound=BaseModel)
# C0, DEL and C1: what a terminal or a log viewer could act on. Headers arrive as Latin-1, so nothing above U+00FF.
_CONTROL_CHARACTERS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], " ")
log = logging.getLogger("session.request")


@dataclass(slots=True)
class Call:
    """One request on its way through: the parsed route and what handlers learn about it."""

    api: Api
    request: Request
    endpoint: str
    params: tuple[str, ...]
    auth: AuthContext | None = None
    log_fields: dict[str, object] = field(default_factory=dict)
    # The cookie of a session this request extended: re-sent so the browser keeps it as long.
    refreshed_cookie: credentials.Cookie | None = None

    async def body(self, model: type[M]) -> M:
        """Read and validate a JSON body. Raises 415, 413, 400 (invalid_json / invalid_request)."""
        media_type, _, params = (self.request.headers.get("content-type") or "").partition(";")
        if media_type.strip().lower() != JSON:
            raise errors.UnsupportedMediaType(f"send the body as {JSON}")
        charset = params.strip().lower()
        if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
            raise errors.UnsupportedMediaType("the body must be UTF-8")
        data = parse_json(await read_body(self.request))
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = exc.errors(include_url=False, include_input=False, include_context=False)
            raise errors.InvalidRequest([{"loc": list(p["loc"]), "msg": p["msg"]} for p in problems]) from None

    def required_credential(self) -> tuple[str, bool]:
        """The presented token and whether it came from the cookie, CSRF-checked (``edge.presented_credential``)."""
        api = self.api
        return edge.presented_credential(
            self.request, path=self.request.url.path, cookie_name=api.settings.cookie_name, allowed=api.origins
        )

    async def authenticate(self) -> AuthContext:
        """Authenticate by Bearer token or cookie, enforcing CSRF for cookie requests that change state."""
        token, via_cookie = self.required_credential()
        self.auth = await self.api.service.authenticate(token)
        self.refreshed_cookie = credentials.refreshed_cookie(
            self.api.settings, token, via_cookie, self.auth.extended_for
        )
        self.log_fields["user_id"] = self.auth.principal.user_id
        self.log_fields["sid"] = tokens.log_id(self.auth.token_hash)
        return self.auth

    def device_cookie(self) -> str | None:
        """The device cookie the request carries (the lockout's trusted device), if any."""
        return self.request.cookies.get(credentials.device_cookie_name(self.api.settings))

    def user_agent(self) -> str | None:
        """The User-Agent to store with a new session: control characters removed, at most 512 characters.

        It is shown later (``GET /sessions``, the admin CLI), so a client must
        not be able to store terminal escapes or line breaks in it.
        """
        value = self.request.headers.get("user-agent")
        if value is None:
            return None
        cleaned = value.translate(_CONTROL_CHARACTERS).strip()[:512]
        return cleaned or None


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey()
    for key, value in pairs:
        # A lone surrogate escape ("\ud800") is not text: encoding it raises UnicodeEncodeError, a ValueError.
        if not key.isascii():
            key.encode("utf-8")
        if isinstance(value, str) and not value.isascii():
            value.encode("utf-8")
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> object:
    """The JSON value of a request body. Raises ``InvalidJson``.

    Strict where parsers differ, so that no proxy or WAF in front of us reads
    the body otherwise: UTF-8 only (no BOM), no ``NaN`` or ``Infinity``, and no
    object with a key twice (a last-wins reader and a first-wins one would
    see different usernames).
    """
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_object, parse_constant=_no_constant)
    except _DuplicateKey:
        raise errors.InvalidJson("the body has an object with the same key twice") from None
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise errors.InvalidJson("the body is not valid JSON") from None


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, never reading past ``limit``. Raises ``PayloadTooLarge``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise errors.InvalidRequest([{"loc": ["header", "content-length"], "msg": "not a number"}])
        if int(declared) > limit:
            raise errors.PayloadTooLarge(f"the body must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"the body must be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
    settings, request = call.api.settings, call.request
    header = settings.client_ip_header
    address = credentials.client_address(
        settings, request.headers.getlist(header) if header else [], request.client.host if request.client else None
    )
    result = await call.api.service.login(
        req, user_agent=call.user_agent(), device=call.device_cookie(), address=address
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
    return _profile_response(await call.api.service.update_profile(ctx, req, if_match=if_match))


async def _change_password(call: Call) -> Response:
    ctx = await call.authenticate()
    req = await call.body(PasswordChangeRequest)
    result = await call.api.service.change_password(ctx, req, user_agent=call.user_agent(), device=call.device_cookie())
    call.log_fields["sid"] = tokens.log_id(tokens.hash_token(result.token))
    return _login_response(call.api.settings, result)


async def _reauthenticate(call: Call) -> Response:
    ctx = await call.authenticate()
    req = await call.body(ReauthenticateRequest)
    result = await call.api.service.reauthenticate(ctx, req, device=call.device_cookie())
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


async def _list_sessions(call: Call) -> Response:
    limit = _parse_limit(call)
    try:
        after = SessionService.page_position(call.request.query_params.get("page_token"))
    except pages.BadPageToken as exc:
        raise exc.located("query") from None
    ctx = await call.authenticate()
    return json_response(await call.api.service.list_sessions(ctx, limit=limit, after=after))


async def _revoke_all(call: Call) -> Response:
    include_current = _parse_bool(call, "include_current")
    ctx = await call.authenticate()
    await call.api.service.revoke_all(ctx, include_current=include_current, device=call.device_cookie())
    response = Response(status_code=204)
    return _clear_cookie(call.api.settings, response) if include_current else response


async def _revoke_one(call: Call) -> Response:
    ctx = await call.authenticate()
    was_current = await call.api.service.revoke_session(ctx, call.params[0])
    response = Response(status_code=204)
    return _clear_cookie(call.api.settings, response) if was_current else response


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


# --- the browser page (under `api` only) ---

STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


PAGE_API_META = '<meta name="session-api-origin" content="{}">'
PAGE_CSP_META = '<meta http-equiv="Content-Security-Policy" content="{}">'


def page_csp(api_origin: str | None, *, meta: bool = False) -> str:
    """The page's Content-Security-Policy: connections to its own origin and ``api_origin`` only.

    ``meta``: the form inside the page, which must leave out ``frame-ancestors``
    (browsers ignore it there; the header carries it).
    """
    connect = "'self'" + (f" {api_origin}" if api_origin else "")
    policy = f"default-src 'self'; connect-src {connect}; base-uri 'none'; form-action 'none'"
    return policy if meta else f"{policy}; frame-ancestors 'none'"


def render_page(html: str, api_origin: str | None) -> str:
    """``index.html`` naming ``api_origin`` (a validated origin) as the API, in its meta tag and its CSP."""
    if not api_origin:
        return html
    origin = escape(api_origin)
    return html.replace(PAGE_API_META.format(""), PAGE_API_META.format(origin)).replace(
        PAGE_CSP_META.format(page_csp(None, meta=True)), PAGE_CSP_META.format(page_csp(origin, meta=True))
    )


def static_file(segments: tuple[str, ...], api_origin: str | None = None) -> Response | None:
    """A file of ``static/`` (flat: no sub-folders, no dot-files), or ``None``.

    The page may connect only to its own origin and ``api_origin``
    (``SESSION_PAGE_API_ORIGIN``): the CSP says so, and ``index.html`` is
    served naming it. No URL parameter can point the page elsewhere.
    """
    if len(segments) != 1 or segments[0].startswith(".") or "\\" in segments[0]:
        return None
    path = STATIC_DIR / segments[0]
    media_type = _STATIC_TYPES.get(path.suffix)
    if media_type is None or not path.is_file():
        return None
    body = path.read_bytes()
    if path.name == "index.html":
        body = render_page(body.decode("utf-8"), api_origin).encode("utf-8")
    return Response(
        body,
        media_type=media_type,
        headers={
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": page_csp(api_origin),
        },
    )


# --- the API's own description (under `api` only) ---

OPENAPI_TYPES = {"openapi.yaml": "application/yaml", "openapi.json": JSON}


@functools.cache
def _openapi_bytes(name: str) -> bytes:
    # Read on first request, not at import: cold start does not pay for it.
    return (resources.files("session") / name).read_bytes()


def openapi_document(name: str) -> Response:
    """``openapi.yaml`` or ``openapi.json`` of this package, as generated by ``make openapi``."""
    return Response(
        _openapi_bytes(name),
        media_type=OPENAPI_TYPES[name],
        headers={
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            # A public document: any origin's API tools may read it (no credentials involved).
            "Access-Control-Allow-Origin": "*",
        },
    )


def public_file(endpoint: str, segments: tuple[str, ...], api_origin: str | None = None) -> Response | None:
    """What ``api`` serves without routing to an endpoint: the page, its files, the OpenAPI document."""
    if endpoint in OPENAPI_TYPES and not segments:
        return openapi_document(endpoint)
    if endpoint == "static" or (endpoint == "" and not segments):
        return static_file(segments if endpoint else ("index.html",), api_origin)
    return None


def path_segments(request: Request) -> tuple[str, ...]:
    """The non-empty segments of the request path, exactly as received (percent-decoded).

    From the ASGI scope, not ``request.url``: rebuilding the URL drops tabs and
    newlines (``urlsplit`` strips them), which would turn ``/%0A`` into ``/``.
    """
    path = request.scope.get("path") or request.url.path
    return tuple(s for s in path.split("/") if s)


# --- the application ---------------------------------------------------------------------------


class _RequestScope:
    """The per-request context: the trace for every log record, the Firestore op count, the clock.

    Entered once per routed request; ``first`` is True until structured logging is set up.
    """

    def __init__(self, settings: Settings, request: Request) -> None:
        self.settings = settings
        self.request = request
        self.ops = OpCounts()
        self.started = 0.0
        self.first = False

    def __enter__(self) -> _RequestScope:
        self.first = logs.hold(self.settings)
        self.started = time.perf_counter()
        headers = self.request.headers
        trace = logs.parse_trace(headers.get("traceparent"), headers.get("x-cloud-trace-context"))
        self._ops_token = current_ops.set(self.ops)
        self._trace_token = logs.current_trace.set(
            (f"projects/{self.settings.project}/traces/{trace[0]}", trace[1], trace[2]) if trace else None
        )
        return self

    def __exit__(self, *exc: object) -> None:
        logs.current_trace.reset(self._trace_token)
        current_ops.reset(self._ops_token)


class Api:
    """Settings, store and service for one instance, and the request pipeline around them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.service = runtime.service
        self.origins = runtime.origins

    @classmethod
    def from_environment(cls) -> Api:
        """Validate the settings (cold start). Exits with a readable message if they are invalid."""
        try:
            return cls(build())
        except ConfigError as exc:
            raise SystemExit(f"session service: {exc}") from None

    # --- CSRF and CORS ---

    def _cors_headers(self, request: Request, response: Response) -> None:
        if not self.origins:
            return
        response.headers.append("Vary", "Origin")
        origin = request.headers.get("origin")
        if origin and credentials.origin_allowed(origin, self.origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS

    def _preflight(self, request: Request, methods: dict[str, Operation]) -> Response:
        response = Response(status_code=204)
        origin = request.headers.get("origin")
        if origin and credentials.origin_allowed(origin, self.origins):
            response.headers["Access-Control-Allow-Methods"] = ", ".join([*methods, "OPTIONS"])
            response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response.headers["Allow"] = ", ".join([*methods, "OPTIONS"])
        return response

    # --- the pipeline ---

    async def handle(self, request: Request, endpoint: str | None = None) -> Response:
        """Serve one request for ``endpoint`` (``None``: route by the first path segment).

        A short pipeline: the public files of ``api`` need nothing else; every other
        request is routed, dispatched with its errors mapped to problem documents,
        finished (caching, the refreshed cookie, CORS) and logged as one line, inside
        the request's trace and Firestore op count.
        """
        endpoint, segments = self._route_target(request, endpoint)
        if endpoint is None:
            endpoint, segments = (segments[0], segments[1:]) if segments else ("", ())
            if request.method in ("GET", "HEAD"):
                page = public_file(endpoint, segments, self.settings.page_api_origin)
                if page is not None:
                    return page
        with _RequestScope(self.settings, request) as scope:
            call = Call(self, request, endpoint, ())
            response, code = await self._dispatch(call, segments)
            self._finish(call, response)
            self._log(request, endpoint, response.status_code, code, scope.started, scope.ops, call)
            if scope.first and response.background is None:
                response.background = BackgroundTask(self._after_first_response)
        return response

    @staticmethod
    def _route_target(request: Request, endpoint: str | None) -> tuple[str | None, tuple[str, ...]]:
        """The endpoint and the path below it; a Hosting rewrite's "/login" reaching `login` loses its prefix."""
        segments = path_segments(request)
        if endpoint is not None and segments[:1] == (endpoint,):
            segments = segments[1:]
        return endpoint, segments

    async def _dispatch(self, call: Call, segments: tuple[str, ...]) -> tuple[Response, str]:
        """Route and run the handler; every failure becomes a problem response. Returns it and its code."""
        try:
            try:
                methods, call.params = resolve(call.endpoint, segments)
                if call.request.method == "OPTIONS":
                    return self._preflight(call.request, methods), "ok"
                operation = methods.get(call.request.method)
                if operation is None:
                    raise errors.MethodNotAllowed([*methods, "OPTIONS"])
                return await operation.handler(call), "ok"
            except StoreError as exc:
                raise store_failure(self.settings, exc) from exc
        except errors.SessionError as exc:
            return problem_response(exc), exc.code
        except Exception as exc:  # the last line of defence: never a stack trace to the client
            log.error("unhandled error", exc_info=exc)
            return problem_response(errors.InternalError("internal error")), "internal_error"

    def _finish(self, call: Call, response: Response) -> None:
        """What every answer carries: no caching, the re-sent cookie of an extended session, CORS."""
        response.headers.setdefault("Cache-Control", "no-store")
        edge.resend_cookie(response, call.refreshed_cookie)
        self._cors_headers(call.request, response)

    def _after_first_response(self) -> None:
        """Once per instance, after a response has gone out: the work that need not delay it.

        Sets up structured logging, then moves
        everything allocated so far (imports, clients) out of the garbage
        collector's reach, so that collections triggered by requests stop
        re-scanning it.
        """
        logs.configure(self.settings)
        gc.freeze()

    def _log(
        self, request: Request, endpoint: str, status: int, code: str, started: float, ops: OpCounts, call: Call
    ) -> None:
        latency = time.perf_counter() - started
        level = logging.ERROR if status >= 500 else logging.WARNING if status in (401, 403, 429) else logging.INFO
        log.log(
            level,
            f"{request.method} {request.url.path} {status}",
            extra={
                "http_request": {
                    "requestMethod": request.method,
                    "requestUrl": request.url.path,
                    "status": status,
                    "latency": f"{latency:.6f}s",
                    "userAgent": (request.headers.get("user-agent") or "")[:200],
                    "remoteIp": request.client.host if request.client else None,
                    "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
                },
                "json_fields": {
                    "entry_point": endpoint,
                    "code": code,
                    "firestore": ops.as_dict(),
                    **call.log_fields,
                },
            },
        )
