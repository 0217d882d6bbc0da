"""openapi.yaml: generated from the models, the routes and the error tree, and never drifting from them."""

from __future__ import annotations

from typing import Any

import openapi  # scripts/openapi.py (conftest puts scripts/ on the path)
import pytest
import yaml

from session import errors
from session.http import ROUTES

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


def test_every_route_is_described_and_nothing_else(committed: dict[str, Any]) -> None:
    described = {(path, m) for path, ops in committed["paths"].items() for m in ops if m in METHODS}
    assert described == _route_paths()
    for ops in committed["paths"].values():
        assert "options" in ops


def test_request_and_response_schemas_are_the_models(committed: dict[str, Any]) -> None:
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema(openapi.MODELS, ref_template="#/components/schemas/{model}")
    assert committed["components"]["schemas"] == defs["$defs"]


def test_every_problem_response_names_real_codes_with_their_status(committed: dict[str, Any]) -> None:
    known: dict[str, set[int]] = {}
    for cls in _all_errors(errors.SessionError):
        known.setdefault(cls.code, set()).add(cls.status)
    for ops in committed["paths"].values():
        for method, op in ops.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                content = response.get("content", {})
                if "application/problem+json" not in content:
                    continue
                pinned = content["application/problem+json"]["schema"]["allOf"][1]["properties"]
                assert pinned["status"]["const"] == int(status)
                for code in pinned["code"]["enum"]:
                    assert int(status) in known[code], (code, status)


def _all_errors(cls: type[errors.SessionError]) -> list[type[errors.SessionError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _all_errors(direct))]


def test_problem_responses_carry_their_required_headers(committed: dict[str, Any]) -> None:
    for path, ops in committed["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            responses = op["responses"]
            if "401" in responses and path != "/login":
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
