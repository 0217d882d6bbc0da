"""Sessions for the project's other functions: ``@require_session`` and ``verify``.

    @functions_framework.http
    @require_session(permissions={"orders:write"})
    def create_order(request, principal): ...

The decorator authenticates exactly as ``profile`` does (``SessionService.authenticate``:
one Firestore round trip, expiry, touch, disabled users; CSRF for cookie
requests that change state), re-sends the session cookie when a cookie request
extended its session (``session.credentials.refreshed_cookie``, the same rule as
the session endpoints), and answers failures with the same problem+json.
It works on Flask functions (``functions_framework.http``) and on async ones
(``functions_framework.aio.http``, sync or async).

The runtime (``session.runtime.build``) is made once per process on first use.
An async function runs the service on the event loop that serves it; a sync one
hands the call to one long-lived anyio blocking portal (an event loop on a
thread) per process, because a Firestore ``AsyncClient`` belongs to the loop that
made it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, cast

from session import credentials, edge, errors, logs
from session.binding import BEARER, Presented
from session.config import ConfigError
from session.runtime import Runtime, build, store_failure
from session.service import AuthContext, Principal
from session.store import OpCounts, StoreError, current_ops

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("session.guard")

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def _get_runtime() -> Runtime:
    """This process's runtime, built on first use. Raises ``ConfigError``."""
    global _runtime
    runtime = _runtime
    if runtime is None:
        with _runtime_lock:
            runtime = _runtime
            if runtime is None:
                runtime = build()
                logs.configure(runtime.settings)
                _runtime = runtime
    return runtime


def reset() -> None:
    """Forget the runtime, so the next use reads the environment again (tests)."""
    global _runtime
    with _runtime_lock:
        _runtime = None


class _Portal:
    """One anyio blocking portal (an event loop on a daemon thread) per process, for sync callers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._pid = 0

    def get(self) -> BlockingPortal:
        with self._lock:
            # After a fork the portal's thread is gone in the child: start afresh.
            if self._portal is None or self._pid != os.getpid():
                self._portal = self._start()
                self._pid = os.getpid()
            return self._portal

    @staticmethod
    def _start() -> BlockingPortal:
        # What anyio's start_blocking_portal does, minus the context manager: the loop must live as long as
        # the process, and a context manager left open would try to stop it from a finalizer at exit.
        from anyio import run
        from anyio.from_thread import BlockingPortal

        ready: Future[BlockingPortal] = Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        threading.Thread(target=run, args=(serve,), name="session-guard-portal", daemon=True).start()
        return ready.result()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the portal's loop and wait for it."""
        return self.get().call(fn, *args)


_portal = _Portal()


async def _counted(pending: Callable[[], Awaitable[T]], ops: OpCounts | None) -> T:
    """Await ``pending()`` with the caller's Firestore op counter (contextvars do not cross threads)."""
    if ops is None:
        return await pending()
    token = current_ops.set(ops)
    try:
        return await pending()
    finally:
        current_ops.reset(token)


async def _authenticate(runtime: Runtime, token: str, presented: Presented = BEARER) -> AuthContext:
    try:
        return await runtime.service.authenticate(token, presented=presented)
    except StoreError as exc:
        raise store_failure(runtime.settings, exc) from exc


def _blocking_authenticate(runtime: Runtime, token: str, presented: Presented = BEARER) -> AuthContext:
    ops = current_ops.get()
    ctx: AuthContext = _portal.call(_counted, lambda: _authenticate(runtime, token, presented), ops)
    return ctx


async def verify_async(token: str) -> Principal:
    """The principal of a session token, for async code that is not an HTTP function.

    Same rules and single round trip as ``profile``. Raises ``session.errors.Unauthenticated``,
    ``ServiceUnavailable`` when the store is down, ``InternalError``.
    """
    ctx = await _authenticate(_get_runtime(), token)
    return ctx.principal


def verify(token: str) -> Principal:
    """The principal of a session token, for sync code that is not an HTTP function (a Pub/Sub handler).

    Blocks on the process's portal. Raises as ``verify_async``, and ``ConfigError``
    when the settings are invalid; ``RuntimeError`` when called from the portal's own loop.
    """
    return _blocking_authenticate(_get_runtime(), token).principal


# --- the decorator -------------------------------------------------------------------------


def _path(request: Any) -> str:
    return str(request.url.path) if _is_starlette(request) else str(request.path)


class _Check:
    """One guarded request: the credential it presents (checked before any store access), then its admission."""

    def __init__(self, request: Any) -> None:
        self.runtime = _get_runtime()
        self.token, self.via_cookie = edge.presented_credential(
            request, path=_path(request), cookie_name=self.runtime.settings.cookie_name, allowed=self.runtime.origins
        )
        self.cookie: credentials.Cookie | None = None
        self.presented = edge.presented_binding(request, self.via_cookie)  # a bound session's bound cookie

    def admit(self, ctx: AuthContext, required: frozenset[str]) -> Principal:
        """Check the permissions of an authenticated request, and note the cookie to re-send. Raises ``Forbidden``."""
        missing = required - ctx.principal.permissions
        if missing:
            raise errors.Forbidden(f"missing permission: {', '.join(sorted(missing))}")
        self.cookie = credentials.refreshed_cookie(self.runtime.settings, self.token, self.via_cookie, ctx.extended_for)
        return ctx.principal


def _refusal(request: Any, exc: ConfigError | errors.SessionError) -> Any:
    """The problem answer for a request the guard refuses (invalid settings are a 500, logged)."""
    return _problem(request, _config_failure(exc) if isinstance(exc, ConfigError) else exc)


def _problem(request: Any, exc: errors.SessionError) -> Any:
    """A problem+json response of the kind the request's framework expects."""
    if _is_starlette(request):
        from starlette.responses import Response

        return edge.problem(exc, Response)
    import flask

    return edge.problem(exc, flask.Response)


def _with_cookie(request: Any, result: Any, cookie: credentials.Cookie | None) -> Any:
    """``result`` as a response of the request's framework, carrying ``cookie`` when there is one."""
    if cookie is None:
        return result
    if _is_starlette(request):
        from starlette.responses import JSONResponse, Response

        # What functions-framework's aio wrapper would make of the result, made here to add a header.
        if isinstance(result, str):
            result = Response(result)
        elif isinstance(result, dict):
            result = JSONResponse(result)
        elif isinstance(result, tuple) and len(result) == 2:
            content, status = result
            result = JSONResponse(content, status) if isinstance(content, dict) else Response(content, status)
        if not isinstance(result, Response):
            return result
    else:
        import flask

        result = flask.make_response(result)
    edge.resend_cookie(result, cookie)
    return result


def _is_starlette(request: Any) -> bool:
    from starlette.requests import Request

    return isinstance(request, Request)


def _config_failure(exc: ConfigError) -> errors.SessionError:
    log.error("session settings are invalid: %s", exc)
    return errors.InternalError("internal error")


def require_session(permissions: Collection[str] = ()) -> Callable[[F], F]:
    """Guard an HTTP function: it is called as ``fn(request, principal)`` only for a live session.

    ``permissions`` must all be held by the user, or the answer is 403
    ``forbidden``. Other answers: 401 ``unauthenticated``, 403 ``csrf_rejected``
    (a cookie request that changes state from an origin not in
    ``SESSION_ALLOWED_ORIGINS``), 503 ``service_unavailable``. Errors raised by
    the function itself pass through untouched. When a cookie request extended
    its session, the function's (successful) response re-sends the cookie.
    """
    if isinstance(permissions, str):
        raise TypeError("permissions must be a collection of names, not one string")
    required = frozenset(permissions)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_guarded(request: Any) -> Any:
                try:
                    check = _Check(request)
                    admitted = check.admit(await _authenticate(check.runtime, check.token, check.presented), required)
                except (ConfigError, errors.SessionError) as exc:
                    return _refusal(request, exc)
                return _with_cookie(request, await fn(request, admitted), check.cookie)

            return cast(F, async_guarded)

        @functools.wraps(fn)
        def guarded(request: Any) -> Any:
            try:
                check = _Check(request)
                admitted = check.admit(_blocking_authenticate(check.runtime, check.token, check.presented), required)
            except (ConfigError, errors.SessionError) as exc:
                return _refusal(request, exc)
            return _with_cookie(request, fn(request, admitted), check.cookie)

        return cast(F, guarded)

    return decorate


__all__ = ["Principal", "require_session", "reset", "verify", "verify_async"]
