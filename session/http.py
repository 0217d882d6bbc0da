"""The HTTP edge: routing, request parsing, cookies, CSRF and CORS, errors as problem+json.

Each functions-framework entry point in ``main.py`` hands its Starlette request to ``Api.handle``
with the name of its endpoint; the ``api`` entry point serves them all under path prefixes. Every
failure becomes an RFC 9457 problem response with a stable ``code``; nothing a client sends can
produce a stack trace or a 500. The parts: ``session.call`` (one request: its body and credential),
``session.routes`` (the route table and its handlers), ``session.public`` (the page and the
OpenAPI document); this module holds the pipeline around them.
"""

from __future__ import annotations

import gc
import logging
import time

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from session import binding, credentials, edge, errors, logs
from session.call import JSON, MAX_BODY_BYTES, Call, parse_json, read_body
from session.config import ConfigError, Settings
from session.public import page_csp, path_segments, public_file, render_page, static_file
from session.routes import IF_MATCH_PATTERN, ROUTES, Operation, json_response, problem_response, resolve
from session.runtime import Runtime, build, store_failure
from session.store import OpCounts, StoreError, current_ops

CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
CORS_EXPOSE_HEADERS = "ETag, Retry-After, WWW-Authenticate"
log = logging.getLogger("session.request")
# The young generation's threshold once the cold-start objects are frozen (CPython's default is 700). A request
# allocates a few hundred container objects and frees nearly all of them by reference counting, so with 32 requests
# in flight the default collects every couple of requests and sweeps their live objects for almost nothing freed
# (bench/PROFILE.md); 10,000 collects about every 30 requests.
GC_YOUNG_THRESHOLD = 10_000

__all__ = [
    "IF_MATCH_PATTERN",
    "JSON",
    "MAX_BODY_BYTES",
    "ROUTES",
    "Api",
    "Call",
    "Operation",
    "json_response",
    "page_csp",
    "parse_json",
    "problem_response",
    "read_body",
    "render_page",
    "resolve",
    "static_file",
]


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
            self._log(call, response.status_code, code, scope)
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
        self._offer_binding(response)  # before the re-sent cookie: only a new session is offered
        edge.resend_cookie(response, call.refreshed_cookie)
        self._cors_headers(call.request, response)

    def _offer_binding(self, response: Response) -> None:
        """With ``SESSION_DBSC=on``, a response that sets a new session cookie offers DBSC registration.

        A login, a password change and a re-authentication: their session's record holds the
        challenge's hash from the commit that created it (``binding.initial_state``).
        """
        if not binding.enabled(self.settings) or response.status_code != 200:
            return
        prefix = f"{self.settings.cookie_name}="
        for value in response.headers.getlist("set-cookie"):
            if value.startswith(prefix):
                token = value[len(prefix) :].partition(";")[0].strip()
                if token:
                    response.headers["Secure-Session-Registration"] = binding.registration_header(token)

    def _after_first_response(self) -> None:
        """Once per instance, after a response has gone out: the work that need not delay it.

        Sets up structured logging, then moves
        everything allocated so far (imports, clients) out of the garbage
        collector's reach, so that collections triggered by requests stop
        re-scanning it, and raises the young generation's threshold
        (``GC_YOUNG_THRESHOLD``); the older generations keep theirs.
        """
        logs.configure(self.settings)
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)

    def _log(self, call: Call, status: int, code: str, scope: _RequestScope) -> None:
        """The one line of a request: its outcome, its latency and the Firestore work it did."""
        request, ops = call.request, scope.ops
        latency = time.perf_counter() - scope.started
        path = request.scope["path"]  # as received; request.url would rebuild the whole URL
        level = logging.ERROR if status >= 500 else logging.WARNING if status in (401, 403, 429) else logging.INFO
        log.log(
            level,
            f"{request.method} {path} {status}",
            extra={
                "http_request": {
                    "requestMethod": request.method,
                    "requestUrl": path,
                    "status": status,
                    "latency": f"{latency:.6f}s",
                    "userAgent": (request.headers.get("user-agent") or "")[:200],
                    "remoteIp": request.client.host if request.client else None,
                    "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
                },
                "json_fields": {
                    "entry_point": call.endpoint,
                    "code": code,
                    "firestore": ops.as_dict(),
                    **call.log_fields,
                },
            },
        )
