"""Bad input: a clear 4xx problem with a stable code, never a 500 and never a stack trace."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

JSON = {"Content-Type": "application/json"}
GOOD = '{"username":"alice","password":"correct horse battery"}'

CASES: list[tuple[str, str, str, dict[str, str], Any, int, str]] = [
    # id, method, path, headers, body, status, code
    ("not-json", "POST", "/register", JSON, "{nope", 400, "invalid_json"),
    ("empty-body", "POST", "/login", JSON, "", 400, "invalid_json"),
    ("bad-utf8", "POST", "/login", JSON, b'{"username":"\xff\xfe"}', 400, "invalid_json"),
    ("array", "POST", "/login", JSON, "[]", 400, "invalid_request"),
    ("missing-field", "POST", "/login", JSON, '{"username":"alice"}', 400, "invalid_request"),
    ("unknown-field", "POST", "/register", JSON, GOOD[:-1] + ',"admin":true}', 400, "invalid_request"),
    (
        "short-username",
        "POST",
        "/register",
        JSON,
        '{"username":"ab","password":"correct horse"}',
        400,
        "invalid_request",
    ),
    (
        "long-username",
        "POST",
        "/register",
        JSON,
        '{"username":"' + "a" * 65 + '","password":"correct horse"}',
        400,
        "invalid_request",
    ),
    (
        "bad-chars",
        "POST",
        "/register",
        JSON,
        '{"username":"al ice","password":"correct horse"}',
        400,
        "invalid_request",
    ),
    (
        "kelvin-sign",
        "POST",
        "/register",
        JSON,
        '{"username":"\u212aelvin","password":"correct horse"}',
        400,
        "invalid_request",
    ),
    ("short-password", "POST", "/register", JSON, '{"username":"alice","password":"short"}', 400, "invalid_request"),
    (
        "long-password",
        "POST",
        "/register",
        JSON,
        '{"username":"alice","password":"' + "p" * 1025 + '"}',
        400,
        "invalid_request",
    ),
    (
        "long-display-name",
        "POST",
        "/register",
        JSON,
        '{"username":"alice","password":"correct horse","display_name":"' + "d" * 101 + '"}',
        400,
        "invalid_request",
    ),
    (
        "bad-email",
        "POST",
        "/register",
        JSON,
        '{"username":"alice","password":"correct horse","email":"not-an-email"}',
        400,
        "invalid_request",
    ),
    ("number-as-string", "POST", "/login", JSON, '{"username":"alice","password":12345678}', 400, "invalid_request"),
    ("deep-nesting", "POST", "/login", JSON, "[" * 5000 + "]" * 5000, 400, "invalid_json"),
    (
        "form-body",
        "POST",
        "/login",
        {"Content-Type": "application/x-www-form-urlencoded"},
        "username=a",
        415,
        "unsupported_media_type",
    ),
    ("text-plain", "POST", "/register", {"Content-Type": "text/plain"}, GOOD, 415, "unsupported_media_type"),
    ("no-content-type", "POST", "/login", {}, GOOD, 415, "unsupported_media_type"),
    (
        "latin1-charset",
        "POST",
        "/login",
        {"Content-Type": "application/json; charset=latin-1"},
        GOOD,
        415,
        "unsupported_media_type",
    ),
    ("too-large", "POST", "/register", JSON, '{"username":"' + "a" * 17000 + '"}', 413, "payload_too_large"),
    ("get-login", "GET", "/login", {}, None, 405, "method_not_allowed"),
    ("put-profile", "PUT", "/profile", {}, None, 405, "method_not_allowed"),
    ("delete-register", "DELETE", "/register", {}, None, 405, "method_not_allowed"),
    ("unknown-path", "GET", "/nope", {}, None, 404, "not_found"),
    ("too-deep", "GET", "/profile/a/b", {}, None, 404, "not_found"),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_gets_a_problem(
    static_client: TestClient, method: str, path: str, headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    response = static_client.request(method, path, headers=headers, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert {"type", "title", "status", "detail", "code"} <= set(problem)
    assert "Traceback" not in response.text
    if code == "invalid_request":
        assert problem["errors"] and all(set(e) == {"loc", "msg"} for e in problem["errors"])
    if status == 405:
        assert "OPTIONS" in response.headers["allow"]
        assert method not in response.headers["allow"].split(", ")


def test_validation_errors_never_echo_the_password(static_client: TestClient) -> None:
    response = static_client.post("/register", json={"username": "a", "password": "s3cr3t!"})
    assert response.status_code == 400
    assert "s3cr3t!" not in response.text


def test_oversized_body_is_refused_from_content_length_alone(static_client: TestClient) -> None:
    client = static_client

    def never_ending() -> Any:
        yield b'{"username": "'
        while True:  # the server must answer without reading all of this
            yield b"a" * 4096

    response = client.post("/login", headers={**JSON, "Content-Length": str(10**9)}, content=b"x" * 10)
    assert response.status_code == 413
    streamed = client.post("/login", headers=JSON, content=_limited(never_ending(), 64))
    assert streamed.status_code == 413


def _limited(chunks: Any, count: int) -> Any:
    for _, chunk in zip(range(count), chunks, strict=False):
        yield chunk
