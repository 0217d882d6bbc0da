"""session/openapi.yaml: generated from the models, the routes and the error tree, never drifting from them, served."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from scripts import openapi
from session import errors
from session.http import ROUTES
from tests.conftest import ROOT

METHODS = ("get", "post", "put", "patch", "delete")


def _route_paths() -> set[tuple[str, str]]:
    found = set()
    for endpoint, routes in ROUTES.items():
        for pattern, methods in routes:
            path = "/" + "/".join([endpoint, *("{id}" if p == "*" else p for p in pattern)])
            found |= {(path, m.lower()) for m in methods}
    return found


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return dict(yaml.safe_load(openapi.OUTPUT.read_text()))


def test_the_committed_file_is_what_the_generator_writes() -> None:
    expected = openapi.render(openapi.build())
    assert openapi.OUTPUT.read_text() == expected, "openapi.yaml is out of date: run python scripts/openapi.py"


# The API as the README's endpoint table promises it, written out here: not read from ROUTES, which the
# generator reads too (a route dropped from both would otherwise pass unseen).
CONTRACT = {
    ("/register", "post"),
    ("/login", "post"),
    ("/logout", "post"),
    ("/profile", "get"),
    ("/profile", "patch"),
    ("/profile/password", "post"),
    ("/reauthenticate", "post"),
    ("/sessions", "get"),
    ("/sessions", "delete"),
    ("/sessions/{id}", "delete"),
    ("/security-events", "get"),
    ("/devices", "get"),
    ("/devices/{id}", "delete"),
    ("/dbsc/register", "post"),
    ("/dbsc/refresh", "post"),
}


def test_every_route_is_described_and_nothing_else(committed: dict[str, Any]) -> None:
    described = {(path, m) for path, ops in committed["paths"].items() for m in ops if m in METHODS}
    assert described == CONTRACT
    for ops in committed["paths"].values():
        assert "options" in ops


def test_the_app_serves_each_described_operation_and_no_other_method(
    static_client: TestClient, committed: dict[str, Any]
) -> None:
    """Asked, not read: each described operation is routed by the running app, and its 405 lists exactly them."""
    for path, ops in committed["paths"].items():
        sent = path.replace("{id}", "an-id")
        described = {m.upper() for m in ops if m in METHODS}
        for method in described:
            # No credentials, no body: answered before any store access, but by the operation, not the router.
            response = static_client.request(method, sent)
            if path.startswith("/dbsc/"):  # SESSION_DBSC is off by default: the operation itself says 404
                assert "SESSION_DBSC" in response.json()["detail"], (method, path, response.text)
                continue
            assert response.status_code in (401, 415), (method, path, response.text)
        other = static_client.request("PUT", sent)
        assert (other.status_code, other.json()["code"]) == (405, "method_not_allowed"), path
        assert set(other.headers["allow"].split(", ")) == described | {"OPTIONS"}, path


def _validator(committed: dict[str, Any], name: str) -> Any:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator({**committed, "$ref": f"#/components/schemas/{name}"})


LONG = "x" * 1025
# (schema, a body, whether the README's rules accept it): the rules as the README states them, not as the models do.
BODIES = [
    ("RegisterRequest", {"username": "alice", "password": "correct horse battery"}, True),
    (
        "RegisterRequest",
        {"username": "Al.i_c-e9", "password": "8 chars!", "display_name": "A", "email": "a@b.co"},
        True,
    ),
    ("RegisterRequest", {"username": "al", "password": "correct horse battery"}, False),  # 3-64 characters
    ("RegisterRequest", {"username": "a" * 65, "password": "correct horse battery"}, False),
    ("RegisterRequest", {"username": "al ice", "password": "correct horse battery"}, False),
    ("RegisterRequest", {"username": "__x__", "password": "correct horse battery"}, False),  # reserved by Firestore
    ("RegisterRequest", {"username": "alice", "password": "7 chars"}, False),  # passwords 8-1024
    ("RegisterRequest", {"username": "alice", "password": LONG}, False),
    ("RegisterRequest", {"username": "alice", "password": "correct horse battery", "display_name": "d" * 101}, False),
    ("RegisterRequest", {"username": "alice", "password": "correct horse battery", "admin": True}, False),
    ("RegisterRequest", {"password": "correct horse battery"}, False),
    ("LoginRequest", {"username": "alice", "password": "correct horse battery"}, True),
    ("LoginRequest", {"username": "alice"}, False),
    ("ProfileUpdateRequest", {}, True),
    ("ProfileUpdateRequest", {"display_name": "Alice B."}, True),
    ("ProfileUpdateRequest", {"username": "bob"}, False),  # a username is not a profile field
    ("PasswordChangeRequest", {"current_password": "correct horse battery", "new_password": "a new long one"}, True),
    ("PasswordChangeRequest", {"current_password": "correct horse battery", "new_password": "short"}, False),
    ("ReauthenticateRequest", {"password": "correct horse battery"}, True),
    ("ReauthenticateRequest", {}, False),
]


@pytest.mark.parametrize(("name", "body", "valid"), BODIES)
def test_request_schemas_accept_what_the_readme_allows(
    committed: dict[str, Any], name: str, body: dict[str, Any], valid: bool
) -> None:
    assert _validator(committed, name).is_valid(body) is valid


# Each success body as the README's endpoint block lists its members (the members every answer has).
RESPONSE_MEMBERS = {
    "UserOut": {"user_id", "username", "display_name", "email", "permissions", "created_at"},
    "LoginOut": {"token", "token_type", "user_id", "username", "permissions", "logged_in_at", "expires_at"},
    "ProfileOut": {"user_id", "username", "display_name", "email", "permissions", "version", "session"},
    "SessionsOut": {"sessions", "next_page_token"},
    "SessionOut": {
        "id",
        "created_at",
        "last_seen_at",
        "expires_at",
        "user_agent",
        "device",
        "network",
        "place",
        "current",
    },
    "SecurityEventsOut": {"events", "next_page_token"},
    "SecurityEvent": {"id", "type", "at", "session_id", "device", "network", "detail"},
    "DevicesOut": {"devices"},
    "DeviceOut": {"id", "device", "created_at", "last_used_at", "current"},
}


@pytest.mark.parametrize("name", sorted(RESPONSE_MEMBERS))
def test_response_schemas_have_the_members_the_readme_promises(committed: dict[str, Any], name: str) -> None:
    schema = committed["components"]["schemas"][name]
    assert set(schema["properties"]) == RESPONSE_MEMBERS[name]
    # Every member but one a client may leave out of its checks (token_type's default, "Bearer") is always sent.
    assert set(schema["properties"]) - set(schema.get("required", [])) <= {"token_type"}


def _readme_errors() -> dict[str, int]:
    """The table of error codes in docs/api.md: code -> status, as a client reads them."""
    page = (ROOT / "docs" / "api.md").read_text()
    table = page[page.index("### Errors") :].split("\n## ", 1)[0]
    return {code: int(status) for code, status in re.findall(r"^\| `(\w+)` \| (\d{3}) \|", table, re.MULTILINE)}


def test_request_and_response_schemas_are_the_models(committed: dict[str, Any]) -> None:
    """The bodies above by name, and besides them exactly the problems the operations answer, as the README has them."""
    schemas = committed["components"]["schemas"]
    answered = {
        schema["title"]
        for _, _, op in _operations(committed)
        for response in op["responses"].values()
        if "application/problem+json" in response.get("content", {})
        for schema in _problem_schemas(committed, response)
    }
    problems = {name for name in schemas if name.endswith("Problem") and name != "Problem"}
    assert problems == answered  # no problem schema that no operation answers with
    readme = _readme_errors()
    for name in problems:
        code, status = schemas[name]["properties"]["code"]["const"], schemas[name]["properties"]["status"]["const"]
        assert readme.get(code) == status, (name, code, status)
    assert {"Problem", *(body[0] for body in BODIES), *RESPONSE_MEMBERS} <= set(schemas) - problems


def _all_errors(cls: type[errors.SessionError]) -> list[type[errors.SessionError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _all_errors(direct))]


# One instance of every error class, for what its declarations must match.
SAMPLE_ARGS: dict[type[errors.SessionError], tuple[Any, ...]] = {
    errors.InvalidRequest: ([{"loc": ["body"], "msg": "bad"}],),
    errors.MethodNotAllowed: (["GET"],),
    errors.Unauthenticated: (errors.UnauthenticatedReason.EXPIRED,),
    errors.ReauthenticationRequired: (300,),
    errors._RetryAfter: (30,),
    errors.TooManyAttempts: (30,),
    errors.BoundProofRefused: ("bad_signature",),
    errors.BoundChallenge: ('"c";id="s"',),
}


@pytest.mark.parametrize("error", _all_errors(errors.SessionError), ids=lambda e: e.__name__)
def test_each_error_declares_the_headers_and_members_it_sends(error: type[errors.SessionError]) -> None:
    instance = error(*SAMPLE_ARGS.get(error, ()))
    assert tuple(instance.headers()) == error.header_names
    assert tuple(instance.extra()) == error.members
    body = json.loads(errors.problem_body(instance))
    assert set(body) == {"type", "title", "status", "detail", "code", *error.members}


def _problem_schemas(committed: dict[str, Any], response: dict[str, Any]) -> list[dict[str, Any]]:
    """The problem schemas a problem response can carry (one, or the ``oneOf`` of several)."""
    schema = response["content"]["application/problem+json"]["schema"]
    refs = schema.get("oneOf", [schema])
    assert all(set(ref) == {"$ref"} for ref in refs), schema  # named schemas only: generators name them well
    return [committed["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]] for ref in refs]


def _operations(committed: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, ops in committed["paths"].items()
        for method, op in ops.items()
        if method != "parameters"
    ]


def _declared(path: str, method: str) -> list[type[errors.SessionError]]:
    declared = openapi._raises(path, method.upper()) if method in METHODS else []
    return [*declared, errors.NotFound] if "{" in path else declared  # an unroutable path parameter


def test_every_problem_response_names_the_codes_the_route_table_declares(committed: dict[str, Any]) -> None:
    for path, method, op in _operations(committed):
        documented: dict[str, set[str]] = {}
        for status, response in op["responses"].items():
            if "application/problem+json" not in response.get("content", {}):
                continue
            for schema in _problem_schemas(committed, response):
                pinned = schema["properties"]
                assert pinned["status"] == {"type": "integer", "const": int(status)}
                code = pinned["code"]["const"]
                assert pinned["type"] == {"type": "string", "const": errors.PROBLEM_TYPE + code}
                documented.setdefault(status, set()).add(code)
        expected: dict[str, set[str]] = {}
        for error in _declared(path, method):
            expected.setdefault(str(error.status), set()).add(error.code)
        assert documented == expected, (path, method)


def test_each_problem_schema_is_its_error(committed: dict[str, Any]) -> None:
    problem = committed["components"]["schemas"]["Problem"]
    for error in openapi.documented_errors():
        schema = committed["components"]["schemas"][openapi.problem_name(error)]
        assert schema["type"] == "object"
        assert schema["properties"]["code"]["const"] == error.code
        assert schema["properties"]["status"]["const"] == error.status
        # Every member of Problem it carries, typed (never a bare const a generator cannot merge); its own required.
        assert set(schema["properties"]) == {*problem["required"], *error.members}
        assert all("type" in member or "$ref" in member for member in schema["properties"].values()), error
        assert schema["required"] == [*problem["required"], *error.members]


def test_problem_responses_carry_the_headers_their_errors_send(committed: dict[str, Any]) -> None:
    by_code = {e.code: e for e in _all_errors(errors.SessionError)}
    for path, method, op in _operations(committed):
        for status, response in op["responses"].items():
            if "application/problem+json" not in response.get("content", {}):
                continue
            group = [by_code[s["properties"]["code"]["const"]] for s in _problem_schemas(committed, response)]
            documented = response.get("headers", {})
            sent = {name for e in group for name in e.header_names}
            assert set(documented) == sent, (path, method, status)
            for name, header in documented.items():
                if "$ref" in header:
                    header = committed["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
                assert header["required"] is all(name in e.header_names for e in group), (path, method, status, name)


def test_every_401_names_its_scheme_and_every_429_and_503_when_to_retry(committed: dict[str, Any]) -> None:
    for path, method, op in _operations(committed):
        responses = op["responses"]
        if "401" in responses:  # RFC 9110: a 401 names the scheme, at /login too
            assert "WWW-Authenticate" in responses["401"]["headers"], (path, method)
        for status in ("429", "503"):
            if status in responses:
                assert "Retry-After" in responses[status]["headers"], (path, method, status)
        if method in METHODS:
            assert "503" in responses, (path, method)


def test_security_schemes_are_bearer_and_the_session_cookie(committed: dict[str, Any]) -> None:
    schemes = committed["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert (schemes["cookie"]["type"], schemes["cookie"]["in"], schemes["cookie"]["name"]) == (
        "apiKey",
        "cookie",
        "__session",
    )


def test_schemathesis_accepts_the_document() -> None:
    import schemathesis

    schema = schemathesis.openapi.from_path(str(openapi.OUTPUT))
    operations = {(op.ok().method.lower(), op.ok().path) for op in schema.get_all_operations()}
    assert {(m, p) for p, m in _route_paths()} <= operations


# --- the document the `api` function serves ---


def test_the_committed_json_is_the_same_document(committed: dict[str, Any]) -> None:
    assert openapi.JSON_OUTPUT.read_text() == openapi.render_json(openapi.build()), "run make openapi"
    assert json.loads(openapi.JSON_OUTPUT.read_text()) == committed


def test_api_serves_the_committed_documents(static_client: TestClient) -> None:
    client = static_client
    served_yaml = client.get("/openapi.yaml")
    assert served_yaml.status_code == 200
    assert served_yaml.headers["content-type"] == "application/yaml"
    assert served_yaml.content == openapi.OUTPUT.read_bytes()
    served_json = client.get("/openapi.json")
    assert served_json.status_code == 200
    assert served_json.headers["content-type"] == "application/json"
    assert served_json.content == openapi.JSON_OUTPUT.read_bytes()
    assert served_json.json() == yaml.safe_load(served_yaml.text)


def test_the_package_ships_the_documents() -> None:
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {openapi.OUTPUT.name, openapi.JSON_OUTPUT.name} <= set(package_data["session"])
    assert openapi.OUTPUT.parent == openapi.JSON_OUTPUT.parent == ROOT / "session"


# --- every answer a client can get is documented; every answer of the service's own is problem+json ---

# (method, path as sent, the operation's path in the document or None for no operation)
ODD_PATHS = [
    ("GET", "/%0A", None),  # a line break alone: once the page, now the service's 404
    ("GET", "/static/%0A", None),
    ("GET", "/openapi.yaml%0A", None),
    ("OPTIONS", "/sessions/%0Ax", "/sessions/{id}"),  # functions-framework cannot route it: its plain 404
    ("DELETE", "/sessions/%0Ax", "/sessions/{id}"),
    ("OPTIONS", "/sessions/a%2Fb", "/sessions/{id}"),  # a longer path: the service's 404
    ("DELETE", "/sessions/a%2Fb", "/sessions/{id}"),
    ("OPTIONS", "/sessions/%0A", "/sessions/{id}"),  # a trailing line break is routed: the service answers
    ("DELETE", "/sessions/%0A", "/sessions/{id}"),
    ("DELETE", "/sessions/%09", "/sessions/{id}"),
]


@pytest.mark.parametrize(("method", "path", "operation"), ODD_PATHS)
def test_odd_paths_get_documented_answers(
    static_client: TestClient, committed: dict[str, Any], method: str, path: str, operation: str | None
) -> None:
    response = static_client.request(method, path)
    media_type = response.headers.get("content-type", "").split(";")[0]
    if operation is None:
        assert (response.status_code, media_type) == (404, "application/problem+json")
        assert response.json()["code"] == "not_found"
        return
    documented = committed["paths"][operation][method.lower()]["responses"]
    assert str(response.status_code) in documented, (response.status_code, response.text)
    if response.status_code != 204:
        assert media_type in documented[str(response.status_code)]["content"], (response.status_code, media_type)
    if media_type == "text/plain":  # only ever the framework's answer, before the service saw the request
        assert (response.status_code, response.text) == (404, "Not Found")
    elif response.status_code >= 400:
        assert media_type == "application/problem+json"


def test_every_parameterised_operation_documents_the_unroutable_404(committed: dict[str, Any]) -> None:
    for path, ops in committed["paths"].items():
        if "{" not in path:
            continue
        for method, op in ops.items():
            if method != "parameters":
                assert set(op["responses"]["404"]["content"]) == {"application/problem+json", "text/plain"}, method
