"""An example of the project's own functions guarded by the session service.

It depends on the ``session-service`` package like any project would
(requirements.txt), and reads the same Firestore database and SESSION_*
settings as the session functions, so a session opened by `login` is accepted
here without an HTTP hop to the session service. Its own errors are the same
RFC 9457 problem documents as the service's.
"""

from __future__ import annotations

import uuid

import flask
import functions_framework
import functions_framework.aio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from session import Principal, errors, require_session
from session.errors import PROBLEM_JSON, problem_body


class OrderRequest(BaseModel):
    """The body of ``POST`` to ``create_order``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(default=1, ge=1, le=1000)


def problem(exc: errors.SessionError) -> flask.Response:
    """``exc`` as the service's own problem+json response."""
    response = flask.Response(problem_body(exc), status=exc.status, mimetype=PROBLEM_JSON)
    response.headers.update(exc.headers())
    response.headers["Cache-Control"] = "no-store"
    return response


def parse_order(request: flask.Request) -> OrderRequest:
    """The validated order. Raises ``UnsupportedMediaType``, ``InvalidJson`` or ``InvalidRequest``."""
    if request.mimetype != "application/json":
        raise errors.UnsupportedMediaType("send the order as application/json")
    try:
        return OrderRequest.model_validate_json(request.get_data())
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise errors.InvalidJson("the body is not valid JSON") from None
        raise errors.InvalidRequest([{"loc": list(p["loc"]), "msg": p["msg"]} for p in problems]) from None


@functions_framework.http
@require_session(permissions={"orders:write"})
def create_order(request: flask.Request, principal: Principal) -> flask.Response:
    """Place an order for the caller (a real one would store it)."""
    try:
        order = parse_order(request)
    except errors.SessionError as exc:
        return problem(exc)
    placed = {
        "order_id": uuid.uuid4().hex,
        "user_id": principal.user_id,
        "username": principal.username,
        "item": order.item,
        "quantity": order.quantity,
    }
    return flask.make_response(flask.jsonify(placed), 201)


@functions_framework.aio.http
@require_session()
async def whoami(request: Request, principal: Principal) -> JSONResponse:
    """Who the caller is: any live session will do (an async function)."""
    return JSONResponse(
        {
            "user_id": principal.user_id,
            "username": principal.username,
            "permissions": sorted(principal.permissions),
            "session_id": principal.session_id,
            "expires_at": principal.expires_at.isoformat(),
        }
    )
