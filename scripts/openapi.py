"""Generate ``session/openapi.yaml`` (and ``.json``) from the pydantic models, the routes and the error tree.

    python scripts/openapi.py            write session/openapi.yaml and session/openapi.json
    python scripts/openapi.py --check    exit 1 if either differs from what would be written

The document describes the ``api`` entry point (every endpoint under its path
prefix), which serves both files at ``/openapi.yaml`` and ``/openapi.json``:
they live in the package so that they travel with it. Bodies come from
``session.models``. Each error of ``session.errors`` that some route can answer
with has a problem schema of its own (``InvalidCredentialsProblem``: its status,
code and type pinned, its members required), and each problem response is the
one, or the ``oneOf``, of the codes its operation declares at that status, with
the headers those errors declare (``header_names``). So a schema check catches a
wrong status or code, not only a wrong shape, and client generators
(openapi-python-client, openapi-typescript: tests/test_clients.py) read every
problem as a typed value.
``tests/test_openapi.py`` regenerates it in memory and fails on any drift.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from session import binding, errors  # noqa: E402
from session.bound_routes import SessionEnded, SessionInstructions  # noqa: E402
from session.config import Settings  # noqa: E402
from session.credentials import DEVICE_COOKIE  # noqa: E402
from session.errors import PROBLEM_JSON, PROBLEM_TYPE  # noqa: E402
from session.events import SecurityEventsOut  # noqa: E402
from session.http import IF_MATCH_PATTERN, ROUTES  # noqa: E402
from session.models import (  # noqa: E402
    DevicesOut,
    LoginOut,
    LoginRequest,
    PasswordChangeRequest,
    Problem,
    ProfileOut,
    ProfileUpdateRequest,
    ReauthenticateRequest,
    RegisterRequest,
    SessionsOut,
    UserOut,
)
from session.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE  # noqa: E402
from session.tokens import MAX_TOKEN_LENGTH  # noqa: E402

OUTPUT = ROOT / "session" / "openapi.yaml"
JSON_OUTPUT = ROOT / "session" / "openapi.json"
JSON = "application/json"
# functions-framework (Starlette) answers a path it cannot route with a plain-text 404 before the service sees
# the request: a path parameter holding a line break, such as `/sessions/%0Ax`, does not match its route pattern.
FRAMEWORK_NOT_FOUND = {"text/plain": {"schema": {"type": "string", "const": "Not Found"}}}

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (RegisterRequest, "validation"),
    (LoginRequest, "validation"),
    (ProfileUpdateRequest, "validation"),
    (PasswordChangeRequest, "validation"),
    (ReauthenticateRequest, "validation"),
    (UserOut, "serialization"),
    (LoginOut, "serialization"),
    (ProfileOut, "serialization"),
    (SessionsOut, "serialization"),
    (SecurityEventsOut, "serialization"),
    (DevicesOut, "serialization"),
    (SessionInstructions, "serialization"),
    (SessionEnded, "serialization"),
    (Problem, "serialization"),
]

SECURITY = [{"bearer": []}, {"cookie": []}]
REAUTH_NOTE = (
    "Needs the password proved within `SESSION_REAUTH_SECONDS` (the session's `auth_time`); otherwise"
    " `403 reauthentication_required`, whose `max_age` says how recent: `POST /reauthenticate`, then retry."
)


def _ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _header(description: str, *, required: bool = True, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def _set_cookie(when: str) -> dict[str, Any]:
    name = {"set": "SetSessionCookie", "login": "SetLoginCookies"}.get(when, "ClearSessionCookie")
    return {"Set-Cookie": _ref(name, "headers")}


def _new_session(when: str) -> dict[str, Any]:
    """The headers of a response that opens a session: its cookie(s), and the DBSC registration offer."""
    return {**_set_cookie(when), "Secure-Session-Registration": _ref("SecureSessionRegistration", "headers")}


def _dbsc_operation(operation_id: str, summary: str, description: str, responses: dict[str, Any]) -> dict[str, Any]:
    path = binding.REGISTRATION_PATH if operation_id == "registerBoundSession" else binding.REFRESH_PATH
    op = _operation(operation_id, summary, responses, _raises(path, "POST"), description=description)
    cookie = Settings.model_fields["cookie_name"].default
    op["parameters"] = [
        {
            "in": "cookie",
            "name": cookie,
            "required": False,  # with SESSION_DBSC off, nothing is: the answer is 404
            "description": "The session cookie: it names the session (no CSRF origin check: what changes needs a"
            " proof by the browser's key). Without it: 401 (register), or the end of the bound session (refresh).",
            "schema": {"type": "string"},
        },
        {
            "in": "header",
            "name": "Secure-Session-Response",
            "required": operation_id == "registerBoundSession",
            "description": "The browser's proof: a JWT (ES256, `typ` dbsc+jwt) whose `jti` is the challenge"
            + (
                ", with the public key as `jwk` in its header. Without it: 400 `invalid_request`."
                if operation_id == "registerBoundSession"
                else ". Without it: 403 `bound_challenge`, a challenge to sign."
            ),
            "schema": {"type": "string"},
        },
    ]
    if operation_id == "refreshBoundSession":
        op["parameters"].append(
            {
                "in": "header",
                "name": "Sec-Secure-Session-Id",
                "required": False,
                "description": "The `session_identifier` the instructions gave.",
                "schema": {"type": "string"},
            }
        )
    return op


def _device_cookie_parameter() -> dict[str, Any]:
    return {
        "in": "cookie",
        "name": f"__Host-{DEVICE_COOKIE}",
        "required": False,
        "description": f"The device cookie an earlier successful login from this browser set (`{DEVICE_COOKIE}`"
        " without the prefix when `SESSION_COOKIE_SECURE` is false). When it is a live device of the user"
        " logging in, the guess is counted and judged on that device's own limit (`SESSION_DEVICE_MAX_FAILURES`),"
        " not the username's: an attacker who locked the username does not lock this browser out. Unknown,"
        " expired, malformed or another user's: ignored (the username's limit).",
        "schema": {"type": "string"},
    }


# The component each header an error sends is documented by (session.errors: ``header_names``).
ERROR_HEADERS = {
    "WWW-Authenticate": "WWWAuthenticate",
    "Retry-After": "RetryAfter",
    "Allow": "Allow",
    "Secure-Session-Challenge": "SecureSessionChallenge",
}


def _error_headers(error: type[errors.SessionError]) -> dict[str, Any]:
    return {name: _ref(ERROR_HEADERS[name], "headers") for name in error.header_names}


def problem_name(error: type[errors.SessionError]) -> str:
    """The schema of one error's problem document: ``invalid_credentials`` -> ``InvalidCredentialsProblem``."""
    return "".join(part.title() for part in error.code.split("_")) + "Problem"


def _problem_schema(error: type[errors.SessionError], problem: dict[str, Any]) -> dict[str, Any]:
    """The problem document of one error: ``Problem`` with its type, status and code pinned, its members required.

    A schema of its own rather than ``allOf`` of ``Problem`` and the pins: client generators cannot merge an
    ``integer`` with a ``const`` (openapi-python-client drops such a response), and a ``const`` per member lets a
    typed client tell the problems of one status apart by ``code``.
    """
    members = problem["properties"]
    properties: dict[str, Any] = {
        "type": {"type": "string", "const": PROBLEM_TYPE + error.code},
        "title": {"type": "string"},
        "status": {"type": "integer", "const": error.status},
        "detail": {"type": "string"},
        "code": {"type": "string", "const": error.code},
    }
    for member in error.members:
        # Optional (nullable) on Problem, always there on this error's document.
        branches = [b for b in members[member]["anyOf"] if b != {"type": "null"}]
        (properties[member],) = branches
    return {
        "title": problem_name(error),
        "description": f"`{error.code}` ({error.status}): {error.title}.",
        "type": "object",
        "properties": properties,
        "required": [*problem["required"], *error.members],
    }


def _problems(errs: list[type[errors.SessionError]]) -> dict[str, Any]:
    """Problem responses grouped by status: each is one of the problem schemas of its codes."""
    by_status: dict[int, list[type[errors.SessionError]]] = {}
    for error in sorted(set(errs), key=lambda e: e.code):
        by_status.setdefault(error.status, []).append(error)
    responses: dict[str, Any] = {}
    for status in sorted(by_status):
        group = by_status[status]
        headers: dict[str, Any] = {}
        for error in group:
            headers.update(_error_headers(error))
        # A header only some codes of this status carry is not required for the others.
        for name in headers:
            if not all(name in e.header_names for e in group):
                headers[name] = {**_component_header(ERROR_HEADERS[name]), "required": False}
        refs = [_ref(problem_name(e)) for e in group]
        schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
        response: dict[str, Any] = {
            "description": "; ".join(f"`{e.code}`: {e.title}" for e in group),
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        if headers:
            response["headers"] = headers
        responses[str(status)] = response
    return responses


def documented_errors() -> list[type[errors.SessionError]]:
    """Every error some operation of the route table can answer with (and 404 for an unroutable path)."""
    found = {errors.NotFound}
    for routes in ROUTES.values():
        for _, methods in routes:
            for operation in methods.values():
                found.update(operation.raises)
    return sorted(found, key=lambda e: e.code)


def _component_header(name: str) -> dict[str, Any]:
    return dict(_components_headers()[name])


def _components_headers() -> dict[str, dict[str, Any]]:
    cookie = Settings.model_fields["cookie_name"].default
    return {
        "SetSessionCookie": _header(
            f"The session cookie `{cookie}` (HttpOnly, SameSite=Lax, Path=/, Secure unless configured off),"
            " carrying the same token as the body."
        ),
        "SetLoginCookies": _header(
            f"Two cookies (two `Set-Cookie` fields): the session cookie `{cookie}` (HttpOnly, SameSite=Lax, Path=/,"
            " Secure unless configured off), carrying the same token as the body; and the device cookie"
            f" `__Host-{DEVICE_COOKIE}` (`{DEVICE_COOKIE}` when `SESSION_COOKIE_SECURE` is false; HttpOnly,"
            " SameSite=Strict, Path=/, Max-Age of `SESSION_DEVICE_COOKIE_DAYS`), which marks this browser as a"
            " trusted device of the user for later logins."
        ),
        "ClearSessionCookie": _header(
            f"Clears the session cookie `{cookie}` (Max-Age=0) when the caller's own session ended.", required=False
        ),
        "WWWAuthenticate": _header('The scheme to authenticate with: `Bearer realm="session"`.'),
        "RetryAfter": _header("Seconds to wait before trying again.", schema={"type": "string", "pattern": r"^\d+$"}),
        "ETag": _header(
            'The profile version as a strong entity tag, e.g. `"3"`; send it back in `If-Match`.',
            schema={"type": "string", "pattern": r'^"\d+"$'},
        ),
        "Allow": _header("The methods this path supports."),
        "SecureSessionChallenge": _header(
            'The challenge a DBSC refresh must sign, and the session it is for: `"<challenge>";id="<session id>"`.'
        ),
        "SecureSessionRegistration": _header(
            "With `SESSION_DBSC=on`: the offer to bind this new session to the browser's key,"
            f' `(ES256);path="{binding.REGISTRATION_PATH}";challenge="<challenge>"` (W3C DBSC).',
            required=False,
        ),
        "SetBoundCookie": _header(
            f"The short-lived bound cookie `{binding.BOUND_COOKIE.name}` ({binding.BOUND_COOKIE.attributes};"
            " Max-Age of `SESSION_DBSC_COOKIE_SECONDS`): every request of the bound session must carry it."
        ),
    }


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(model.__name__)}}}


def _ok(model: type[BaseModel], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ref(model.__name__)}}}
    if headers:
        response["headers"] = headers
    return response


def _no_content(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if headers:
        response["headers"] = headers
    return response


def _raises(path: str, method: str) -> list[type[errors.SessionError]]:
    """The problems an operation can answer with, as the route table in session/routes.py declares them."""
    endpoint, *below = path.strip("/").split("/")
    pattern = tuple("*" if part.startswith("{") else part for part in below)
    for route, methods in ROUTES[endpoint]:
        if route == pattern:
            return list(methods[method].raises)
    raise KeyError(f"{method} {path} is not in session.routes.ROUTES")


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    errs: list[type[errors.SessionError]],
    *,
    body: type[BaseModel] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    secured: bool = False,
    description: str | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = _body(body)
    if secured:
        op["security"] = SECURITY
    op["responses"] = {**responses, **_problems(errs)}
    return op


def _options(methods: list[str]) -> dict[str, Any]:
    allow = ", ".join([*methods, "OPTIONS"])
    return {
        "summary": "The methods of this path (a CORS preflight from an allowed origin gets the CORS headers instead)",
        "operationId": None,  # filled in by the caller
        "responses": {
            "204": {
                "description": f"No content; `Allow: {allow}` unless this is a preflight from an allowed origin.",
                "headers": {"Allow": {**_component_header("Allow"), "required": False}},
            }
        },
    }


def _document_unroutable(operations: dict[str, Any]) -> None:
    """A path parameter can make a path no route matches: the framework's plain 404, or the service's own.

    The service's 404 (`not_found`, problem+json) comes for a parameter that holds a `/` (a longer path);
    the framework's `Not Found` (text/plain) for one that holds a line break.
    """
    for method, op in operations.items():
        if method == "parameters":
            continue
        responses = op["responses"]
        if "404" not in responses:
            responses["404"] = _problems([errors.NotFound])["404"]
        not_found = responses["404"]
        not_found["content"] = {**not_found["content"], **copy.deepcopy(FRAMEWORK_NOT_FOUND)}
        not_found["description"] += (
            "; or, as text/plain, functions-framework's `Not Found` for a path it cannot route"
            " (a parameter holding a line break)"
        )
        op["responses"] = dict(sorted(responses.items()))


def build() -> dict[str, Any]:
    """The whole OpenAPI document, as plain data."""
    _, defs = models_json_schema(MODELS, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(sorted(defs["$defs"].items()))
    for error in documented_errors():
        assert problem_name(error) not in schemas, f"{problem_name(error)} is also a model's name"
        schemas[problem_name(error)] = _problem_schema(error, defs["$defs"]["Problem"])

    include_current = {
        "name": "include_current",
        "in": "query",
        "required": False,
        "description": "Also revoke the session making this request (and clear its cookie).",
        "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", ""]},
    }
    limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Sessions per page, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}). A page is short only"
        " when it is the last.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
    }
    page_token = {
        "name": "page_token",
        "in": "query",
        "required": False,
        "description": "The `next_page_token` of the previous page; leave it out for the first page. Opaque: it names"
        " a position in the caller's own listing and nothing else. One that is not such a token answers 400"
        " `invalid_request`.",
        "schema": {"type": "string", "pattern": f"^[A-Za-z0-9_-]{{1,{MAX_TOKEN_LENGTH}}}$"},
    }
    if_match = {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": 'The `ETag` of the profile this change is based on (`"3"`, `W/"3"` or `*`);'
        " a different stored version answers 412.",
        "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
    }
    session_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "The public id of a session, as listed by `GET /sessions`.",
        "schema": {"type": "string"},
    }

    paths: dict[str, dict[str, Any]] = {
        "/register": {
            "post": _operation(
                "register",
                "Create an account",
                {"201": _ok(UserOut, "The new account.")},
                _raises("/register", "POST"),
                body=RegisterRequest,
            ),
        },
        "/login": {
            "post": _operation(
                "login",
                "Open a session with a username and password",
                {"200": _ok(LoginOut, "A new session; the token is also set as a cookie.", _new_session("login"))},
                _raises("/login", "POST"),
                body=LoginRequest,
                parameters=[_device_cookie_parameter()],
            ),
        },
        "/logout": {
            "post": _operation(
                "logout",
                "End the presented session (idempotent)",
                {
                    "204": _no_content(
                        "The session is gone (or never existed); the cookie is cleared.", _set_cookie("clear")
                    )
                },
                _raises("/logout", "POST"),
                secured=True,
            ),
        },
        "/profile": {
            "get": _operation(
                "getProfile",
                "The caller's profile and session",
                {"200": _ok(ProfileOut, "The profile.", {"ETag": _ref("ETag", "headers")})},
                _raises("/profile", "GET"),
                secured=True,
            ),
            "patch": _operation(
                "updateProfile",
                "Change the display name or email",
                {"200": _ok(ProfileOut, "The updated profile.", {"ETag": _ref("ETag", "headers")})},
                _raises("/profile", "PATCH"),
                body=ProfileUpdateRequest,
                parameters=[if_match],
                secured=True,
                description=REAUTH_NOTE.replace("Needs", "A new `email` (one other than the stored one) needs"),
            ),
        },
        "/profile/password": {
            "post": _operation(
                "changePassword",
                "Change the password: every session of the user ends and a new one opens",
                {"200": _ok(LoginOut, "The new session.", _new_session("set"))},
                _raises("/profile/password", "POST"),
                body=PasswordChangeRequest,
                secured=True,
            ),
        },
        "/reauthenticate": {
            "post": _operation(
                "reauthenticate",
                "Prove the password again: the session is replaced by a new one with `auth_time` now",
                {"200": _ok(LoginOut, "The new session; the old token is ended.", _new_session("set"))},
                _raises("/reauthenticate", "POST"),
                body=ReauthenticateRequest,
                secured=True,
                description=(
                    "The answer to `403 reauthentication_required`. The password is counted on the same"
                    " failed-login limit as `POST /login` before it is judged. Of parallel requests with one"
                    " token, one succeeds and the others get 401."
                ),
            ),
        },
        "/sessions": {
            "get": _operation(
                "listSessions",
                "The caller's live sessions, newest first, one page at a time",
                {
                    "200": _ok(
                        SessionsOut, "A page of sessions (never their tokens); `next_page_token` is null on the last."
                    )
                },
                _raises("/sessions", "GET"),
                parameters=[limit, page_token],
                secured=True,
                description=REAUTH_NOTE,
            ),
            "delete": _operation(
                "revokeAllSessions",
                "Revoke every session of the caller, except the current one unless asked",
                {"204": _no_content("Revoked.", _set_cookie("clear"))},
                _raises("/sessions", "DELETE"),
                parameters=[include_current],
                secured=True,
                description=REAUTH_NOTE,
            ),
        },
        "/sessions/{id}": {
            "delete": _operation(
                "revokeSession",
                "Revoke one of the caller's sessions",
                {"204": _no_content("Revoked.", _set_cookie("clear"))},
                _raises("/sessions/{id}", "DELETE"),
                secured=True,
                description=REAUTH_NOTE + " Revoking the current session needs none.",
            ),
            "parameters": [session_id],
        },
        "/security-events": {
            "get": _operation(
                "listSecurityEvents",
                "What happened to the caller's account, newest first, one page at a time",
                {
                    "200": _ok(
                        SecurityEventsOut,
                        "A page of events (never a secret); `next_page_token` is null on the last. Events are kept"
                        " `SESSION_EVENTS_DAYS` (a TTL policy).",
                    )
                },
                _raises("/security-events", "GET"),
                parameters=[limit, page_token],
                secured=True,
                description=REAUTH_NOTE
                + " Each event is written in the same commit as the change it records: it exists if and only if"
                " the change happened.",
            ),
        },
        "/devices": {
            "get": _operation(
                "listDevices",
                "The caller's trusted devices (browsers holding a device cookie), most recently used first",
                {"200": _ok(DevicesOut, "The trusted devices; `current` is the one making this request.")},
                _raises("/devices", "GET"),
                parameters=[_device_cookie_parameter()],
                secured=True,
                description=REAUTH_NOTE,
            ),
        },
        "/devices/{id}": {
            "delete": _operation(
                "revokeDevice",
                "End the trust of one of the caller's devices (its sessions stay)",
                {"204": _no_content("Its device cookie no longer judges logins on its own counter.")},
                _raises("/devices/{id}", "DELETE"),
                secured=True,
                description=REAUTH_NOTE + " An unknown id, or another user's, answers 404.",
            ),
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "description": "The id of a device, as listed by `GET /devices`.",
                    "schema": {"type": "string"},
                }
            ],
        },
        binding.REGISTRATION_PATH: {
            "post": _dbsc_operation(
                "registerBoundSession",
                "Bind the session to the browser's key (DBSC registration; `SESSION_DBSC=on`)",
                "Sent by the browser itself after a response carrying `Secure-Session-Registration`. The proof's"
                " challenge is single use. Once bound, every request of the session needs the bound cookie too,"
                " and its token is refused as a Bearer token. 404 `not_found` when `SESSION_DBSC` is off.",
                {
                    "200": _ok(
                        SessionInstructions,
                        "Bound: the session instructions, and the bound cookie.",
                        {"Set-Cookie": _ref("SetBoundCookie", "headers")},
                    )
                },
            ),
        },
        binding.REFRESH_PATH: {
            "post": _dbsc_operation(
                "refreshBoundSession",
                "A new bound cookie, for a proof by the session's key (DBSC refresh; `SESSION_DBSC=on`)",
                "Without a proof, or with one over a challenge that is not pending (used, replaced, expired): 403"
                " `bound_challenge` with a new challenge to sign. A proof by another key: 400"
                " `bound_proof_refused`. A session cookie that names no live bound session with that id:"
                ' `{"continue": false}`, and the browser ends its bound session. Costs one read of the session'
                " (and its user) and one write per request: two of each per refresh.",
                {
                    "200": {
                        "description": "The instructions and a new bound cookie; or the end of the bound session.",
                        "headers": {"Set-Cookie": {**_component_header("SetBoundCookie"), "required": False}},
                        "content": {JSON: {"schema": {"oneOf": [_ref("SessionInstructions"), _ref("SessionEnded")]}}},
                    }
                },
            ),
        },
    }
    for path, operations in paths.items():
        options = _options([m.upper() for m in operations if m != "parameters"])
        options["operationId"] = "options" + "".join(p.strip("{}").title() for p in path.split("/") if p)
        operations["options"] = options
        if "{" in path:
            _document_unroutable(operations)

    cookie = Settings.model_fields["cookie_name"].default
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Session service",
            "version": "1",
            "description": "A serverless session service on Firestore: the `api` entry point, which serves every"
            " endpoint under its path prefix, and this document at `/openapi.yaml` and `/openapi.json`. Every"
            f" error the service answers is an RFC 9457 problem document (`{PROBLEM_JSON}`) with a stable `code`."
            " Generated by `scripts/openapi.py`: do not edit by hand.",
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "`make run`"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": _components_headers(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The `token` from `POST /login`. Exempt from the CSRF origin check.",
                },
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": cookie,
                    "description": "The session cookie set by `POST /login`. A request that changes state must"
                    " carry an `Origin` (or `Referer`) from `SESSION_ALLOWED_ORIGINS`, or it answers 403"
                    " `csrf_rejected`.",
                },
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    """The document as YAML, stable from run to run."""
    header = "# Generated by scripts/openapi.py from session/models.py, session/routes.py and session/errors.py.\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


def render_json(document: dict[str, Any]) -> str:
    """The same document as JSON."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    document = build()
    outputs = {OUTPUT: render(document), JSON_OUTPUT: render_json(document)}
    if args.check:
        stale = [path for path, text in outputs.items() if not path.exists() or path.read_text() != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run make openapi", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
