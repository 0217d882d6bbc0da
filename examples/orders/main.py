"""An example of the project's own functions guarded by the session service.

Deploy beside the session functions (see README.md here): both read the same
Firestore database and the same SESSION_* settings, so a session opened by
`login` is accepted here without an HTTP hop to the session service.
"""

from __future__ import annotations

import json
import uuid

import flask
import functions_framework
import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse

from session import Principal, require_session


@functions_framework.http
@require_session(permissions={"orders:write"})
def create_order(request: flask.Request, principal: Principal) -> flask.Response:
    """Place an order for the caller (a real one would store it)."""
    body = request.get_json(silent=True) or {}
    item, quantity = body.get("item"), body.get("quantity", 1)
    if not isinstance(item, str) or not item or not isinstance(quantity, int) or quantity < 1:
        problem = {"title": "Bad request", "status": 400, "detail": 'send {"item": "...", "quantity": 1}'}
        return flask.Response(json.dumps(problem), status=400, mimetype="application/problem+json")
    order = {
        "order_id": uuid.uuid4().hex,
        "user_id": principal.user_id,
        "username": principal.username,
        "item": item,
        "quantity": quantity,
    }
    return flask.make_response(flask.jsonify(order), 201)


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
