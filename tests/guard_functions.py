"""Functions-framework targets guarded by ``@require_session``, one per kind of function, for tests/test_guard.py."""

from __future__ import annotations

from typing import Any

import flask
import functions_framework
import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from session import Principal, require_session
from session.store import OpCounts, current_ops


def _body(request: Any, principal: Principal) -> dict[str, Any]:
    return {
        "user_id": principal.user_id,
        "username": principal.username,
        "permissions": sorted(principal.permissions),
        "session_id": principal.session_id,
        "expires_at": principal.expires_at.isoformat(),
        "method": request.method,
    }


# --- Flask (functions_framework.http) ---


@functions_framework.http
@require_session(permissions={"orders:write"})
def flask_orders(request: flask.Request, principal: Principal) -> Any:
    return flask.jsonify(_body(request, principal))


@functions_framework.http
@require_session(permissions={"orders:write", "admin"})
def flask_admin(request: flask.Request, principal: Principal) -> Any:
    return flask.jsonify(_body(request, principal))


@require_session()
def _flask_any(request: flask.Request, principal: Principal) -> Any:
    return flask.jsonify(_body(request, principal))


@functions_framework.http
def flask_counted(request: flask.Request) -> Any:
    """Counts the Firestore work the guard does for one request."""
    ops = OpCounts()
    token = current_ops.set(ops)
    try:
        response = flask.make_response(_flask_any(request))
    finally:
        current_ops.reset(token)
    response.headers["X-Round-Trips"] = str(ops.round_trips)
    return response


# --- async (functions_framework.aio.http) ---


@functions_framework.aio.http
@require_session(permissions={"orders:write"})
async def aio_orders(request: Request, principal: Principal) -> Response:
    return JSONResponse(_body(request, principal))


@functions_framework.aio.http
@require_session(permissions={"orders:write", "admin"})
async def aio_admin(request: Request, principal: Principal) -> Response:
    return JSONResponse(_body(request, principal))


@require_session()
async def _aio_any(request: Request, principal: Principal) -> Response:
    return JSONResponse(_body(request, principal))


@functions_framework.aio.http
async def aio_counted(request: Request) -> Response:
    ops = OpCounts()
    token = current_ops.set(ops)
    try:
        response: Response = await _aio_any(request)
    finally:
        current_ops.reset(token)
    response.headers["X-Round-Trips"] = str(ops.round_trips)
    return response


# --- a sync function under functions_framework.aio.http (run in a worker thread, Starlette request) ---


@functions_framework.aio.http
@require_session(permissions={"orders:write"})
def aiosync_orders(request: Request, principal: Principal) -> Response:
    return JSONResponse(_body(request, principal))


@functions_framework.aio.http
@require_session(permissions={"orders:write", "admin"})
def aiosync_admin(request: Request, principal: Principal) -> Response:
    return JSONResponse(_body(request, principal))


# --- functions that set the session cookie themselves (a sign-out page): the guard must not add its own ---


@functions_framework.http
@require_session(permissions={"orders:write"})
def flask_signs_out(request: flask.Request, principal: Principal) -> Any:
    response = flask.make_response(flask.jsonify(_body(request, principal)))
    response.set_cookie("__session", "", max_age=0, path="/", secure=True, httponly=True, samesite="lax")
    return response


@functions_framework.aio.http
@require_session(permissions={"orders:write"})
async def aio_signs_out(request: Request, principal: Principal) -> Response:
    response = JSONResponse(_body(request, principal))
    response.set_cookie("__session", "", max_age=0, path="/", secure=True, httponly=True, samesite="lax")
    return response


@functions_framework.aio.http
@require_session(permissions={"orders:write"})
def aiosync_signs_out(request: Request, principal: Principal) -> Response:
    response = JSONResponse(_body(request, principal))
    response.set_cookie("__session", "", max_age=0, path="/", secure=True, httponly=True, samesite="lax")
    return response
