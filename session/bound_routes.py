"""The DBSC endpoints (``SESSION_DBSC=on``): ``POST /dbsc/register`` and ``POST /dbsc/refresh``.

Served by the ``api`` function and by the ``dbsc`` entry point. Both read the session cookie
themselves, without the CSRF rule of other cookie requests: the browser sends them on its own
(same origin, the SameSite=Lax cookie), and what they change needs a proof no other site can make
(the browser's key over a challenge only this origin was sent). The rules are ``session.binding``'s.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from session import binding, dbsc, errors, tokens
from session.call import JSON, Call

PROOF_HEADER = "secure-session-response"
SESSION_ID_HEADER = "sec-secure-session-id"


class BoundScope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    origin: str = Field(description="The origin the bound session covers (`https://host[:port]`).")
    include_site: bool = False


class BoundCredentialOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = "cookie"
    name: str = Field(description="The bound cookie's name.")
    attributes: str = Field(description="Exactly the attributes of its `Set-Cookie`, without `Max-Age`.")


class SessionInstructions(BaseModel):
    """The W3C DBSC session instructions: what the browser keeps alive, and where it refreshes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    session_identifier: str = Field(description="The session's public id (the `id` of `GET /sessions`).")
    refresh_url: str
    scope: BoundScope
    credentials: list[BoundCredentialOut]


class SessionEnded(BaseModel):
    """The answer to a refresh of a session that is gone: the browser ends its bound session."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    continue_: bool = Field(False, alias="continue")


def _origin(call: Call) -> str:
    """The origin the browser is on: DBSC runs on HTTPS only, whatever hop terminated TLS before us."""
    host = call.request.headers.get("host") or call.request.url.netloc
    return f"https://{host}"


def _bound_answer(call: Call, issued: binding.Issued) -> Response:
    cookie = binding.BOUND_COOKIE
    body = dbsc.session_instructions(issued.session_id, binding.REFRESH_PATH, _origin(call), cookie)
    response = Response(SessionInstructions.model_validate(body).model_dump_json(), media_type=JSON)
    response.headers.append("set-cookie", cookie.set_cookie(issued.value, call.api.service.binder.cookie_seconds))
    return response


def _proof(call: Call, required: bool) -> str | None:
    value = call.request.headers.get(PROOF_HEADER)
    if value is None and required:
        raise errors.InvalidRequest([{"loc": ["header", PROOF_HEADER], "msg": "the signed proof (a JWT) is required"}])
    return value.strip() if value is not None else None


def _require_on(call: Call) -> None:
    if not binding.enabled(call.api.settings):
        raise errors.NotFound("device bound sessions are off (SESSION_DBSC)")


async def register(call: Call) -> Response:
    """Bind the session of the session cookie to the browser's key; 200 with the instructions and the bound cookie."""
    _require_on(call)
    proof = _proof(call, required=True)
    assert proof is not None
    token = call.request.cookies.get(call.api.settings.cookie_name)
    issued = await call.api.service.binder.register(token, proof, call.origin())
    call.log_fields["sid"] = tokens.log_id(tokens.hash_token(token or ""))  # a live session's: token is set
    call.log_fields["dbsc"] = "bound"
    return _bound_answer(call, issued)


async def refresh(call: Call) -> Response:
    """A new bound cookie for a proof over the pending challenge; else 403 with a challenge, or ``continue: false``."""
    _require_on(call)
    token = call.request.cookies.get(call.api.settings.cookie_name)
    session_id = (call.request.headers.get(SESSION_ID_HEADER) or "").strip().strip('"') or None
    outcome = await call.api.service.binder.refresh(token, session_id, _proof(call, required=False), call.origin())
    if token and tokens.parse(token) is not None:
        call.log_fields["sid"] = tokens.log_id(tokens.hash_token(token))
    if isinstance(outcome, binding.Ended):
        call.log_fields["dbsc"] = f"ended:{outcome.reason}"
        return Response(SessionEnded().model_dump_json(by_alias=True), media_type=JSON)
    if isinstance(outcome, binding.Challenged):
        call.log_fields["dbsc"] = "challenged"
        raise errors.BoundChallenge(dbsc.challenge_header(outcome.challenge, outcome.session_id))
    call.log_fields["dbsc"] = "refreshed"
    return _bound_answer(call, outcome)
