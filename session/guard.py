"""Sessions for the project's other functions: ``@require_session`` and ``verify``.

    @functions_framework.http
    @require_session(permissions={"orders:write"})
    def create_order(request, principal): ...

The decorator authenticates exactly as ``profile`` does (``SessionService.authenticate``:
one Firestore round trip, expiry, touch, disabled users; CSRF for cookie
requests that change state) and answers failures with the same problem+json.
It works on Flask functions (``functions_framework.http``) and on async ones
(``functions_framework.aio.http``, sync or async).

Settings, store and service are made once per process on first use. An async
function runs the service on the event loop that serves it; a sync one hands
the call to one long-lived background loop per process, because a Firestore
``AsyncClient`` belongs to the loop that made it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Collection, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from session import errors, logs
from session.config import ConfigError, Settings, load_settings
from session.http import PROBLEM_JSON, problem_body, required_credential, store_failure
from session.service import AuthContext, Principal, SessionService
from session.store import FirestoreStore, OpCounts, StoreCorrupt, StoreRejected, StoreUnavailable, current_ops

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("session.guard")


@dataclass(frozen=True, slots=True)
class _Runtime:
    settings: Settings
    service: SessionService
    origins: frozenset[str]


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def _get_runtime() -> _Runtime:
    """Settings, store and service of this process, made on first use. Raises ``ConfigError``."""
    global _runtime
    runtime = _runtime
    if runtime is None:
        with _runtime_lock:
            runtime = _runtime
            if runtime is None:
                settings = load_settings()
                logs.configure(settings)
                service = SessionService(settings, FirestoreStore(settings))
                runtime = _runtime = _Runtime(settings, service, frozenset(settings.allowed_origins))
    return runtime


def reset() -> None:
    """Forget the settings and service, so the next use reads the environment again (tests)."""
    global _runtime
    with _runtime_lock:
        _runtime = None


class _LoopThread:
    """One event loop on a daemon thread, per process, for sync callers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # After a fork the thread is gone but the loop object was copied: start afresh.
            if self._loop is None or self._pid != os.getpid() or not (self._thread and self._thread.is_alive()):
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="session-guard-loop", daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the background loop and wait for its result (or exception)."""
        loop = self._ensure()
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("verify() would block its own event loop; use await verify_async() there")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result()


_loop_thread = _LoopThread()


async def _counted(pending: Awaitable[T], ops: OpCounts | None) -> T:
    """Await ``pending`` with the caller's Firestore op counter (contextvars do not cross threads)."""
    if ops is None:
        return await pending
    token = current_ops.set(ops)
    try:
        return await pending
    finally:
        current_ops.reset(token)


async def _authenticate(runtime: _Runtime, token: str) -> AuthContext:
    try:
        return await runtime.service.authenticate(token)
    except (StoreUnavailable, StoreCorrupt, StoreRejected) as exc:
        raise store_failure(runtime.settings, exc) from exc


async def verify_async(token: str) -> Principal:
    """The principal of a session token, for async code that is not an HTTP function.

    Same rules and single round trip as ``profile``. Raises ``session.errors.Unauthenticated``,
    ``ServiceUnavailable`` when the store is down, ``InternalError``.
    """
    ctx = await _authenticate(_get_runtime(), token)
    return ctx.principal


def verify(token: str) -> Principal:
    """The principal of a session token, for sync code that is not an HTTP function (a Pub/Sub handler).

    Blocks on the process's background event loop. Raises as ``verify_async``,
    and ``ConfigError`` when the settings are invalid.
    """
    runtime = _get_runtime()
    ctx = _loop_thread.run(_counted(_authenticate(runtime, token), current_ops.get()))
    return ctx.principal


# --- the decorator -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Presented:
    """What the guard reads from a request, whichever framework made it."""

    method: str
    path: str
    authorization: str | None
    cookie: str | None
    origin: str | None
    referer: str | None


def _presented(request: Any, cookie_name: str) -> _Presented:
    path = request.url.path if _is_starlette(request) else request.path
    headers = request.headers
    return _Presented(
        method=request.method,
        path=path,
        authorization=headers.get("authorization"),
        cookie=request.cookies.get(cookie_name),
        origin=headers.get("origin"),
        referer=headers.get("referer"),
    )


def _check_request(runtime: _Runtime, seen: _Presented) -> str:
    """The token to authenticate; raises ``Unauthenticated`` or ``CsrfRejected`` before any store access."""
    token, _ = required_credential(
        seen.authorization,
        seen.cookie,
        method=seen.method,
        origin=seen.origin,
        referer=seen.referer,
        path=seen.path,
        allowed=runtime.origins,
    )
    return token


def _authorize(principal: Principal, required: frozenset[str]) -> None:
    missing = required - principal.permissions
    if missing:
        raise errors.Forbidden(f"missing permission: {', '.join(sorted(missing))}")


def _problem(request: Any, exc: errors.SessionError) -> Any:
    """A problem+json response of the kind the request's framework expects."""
    headers = {**exc.headers(), "Cache-Control": "no-store"}
    if _is_starlette(request):
        from starlette.responses import Response

        return Response(problem_body(exc), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)
    import flask

    return flask.Response(problem_body(exc), status=exc.status, mimetype=PROBLEM_JSON, headers=headers)


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
    the function itself pass through untouched.
    """
    if isinstance(permissions, str):
        raise TypeError("permissions must be a collection of names, not one string")
    required = frozenset(permissions)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_guarded(request: Any) -> Any:
                try:
                    runtime = _get_runtime()
                    token = _check_request(runtime, _presented(request, runtime.settings.cookie_name))
                    principal = (await _authenticate(runtime, token)).principal
                    _authorize(principal, required)
                except ConfigError as exc:
                    return _problem(request, _config_failure(exc))
                except errors.SessionError as exc:
                    return _problem(request, exc)
                return await fn(request, principal)

            return cast(F, async_guarded)

        @functools.wraps(fn)
        def guarded(request: Any) -> Any:
            try:
                runtime = _get_runtime()
                token = _check_request(runtime, _presented(request, runtime.settings.cookie_name))
                ctx = _loop_thread.run(_counted(_authenticate(runtime, token), current_ops.get()))
                _authorize(ctx.principal, required)
            except ConfigError as exc:
                return _problem(request, _config_failure(exc))
            except errors.SessionError as exc:
                return _problem(request, exc)
            return fn(request, ctx.principal)

        return cast(F, guarded)

    return decorate


__all__ = ["Principal", "require_session", "reset", "verify", "verify_async"]
