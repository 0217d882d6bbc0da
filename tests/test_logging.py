"""Structured logs (issue 5): one JSON line per request with trace and outcome, and no secrets, ever."""

from __future__ import annotations

import copy
import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from session import logs
from session.config import load_settings
from tests.conftest import ROOT, AppFactory, emulator_get

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PASSWORD = "a very secret passphrase"
NEW_PASSWORD = "another secret passphrase"


def _server_log(base: str) -> Path:
    return ROOT / f".pytest-make-run-{base.rsplit(':', 1)[1]}.log"


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))  # every structured line must parse
    return lines


def test_full_flow_logs(live_server: str, project: str, emulator_host: str) -> None:
    traceparent = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    with httpx.Client(base_url=live_server, timeout=30) as http:
        http.post("/register", json={"username": "carol", "password": PASSWORD}, headers=traceparent)
        http.post("/login", json={"username": "carol", "password": "wrong password"})
        login = http.post("/login", json={"username": "carol", "password": PASSWORD})
        token = login.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        http.get("/profile", headers={**auth, "X-Cloud-Trace-Context": f"{TRACE_ID.upper()}/123;o=1"})
        http.get("/profile", headers={"Cookie": f"__session={token}"})
        http.post("/logout", headers={"Cookie": f"__session={token}"})  # CSRF-rejected: no Origin
        changed = http.post(
            "/profile/password", headers=auth, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        )
        new_token = changed.json()["token"]
        http.delete("/sessions?include_current=true", headers={"Authorization": f"Bearer {new_token}"})
        password_hash = emulator_get(emulator_host, project, "users/carol")["fields"]["password_hash"]["stringValue"]
    time.sleep(0.5)  # let the server flush its last line

    log_path = _server_log(live_server)
    text = log_path.read_text()
    for secret in (PASSWORD, NEW_PASSWORD, token, new_token, token.split(".")[1], password_hash, f"Bearer {token[:6]}"):
        assert secret not in text

    lines = _json_lines(log_path)
    # (the fixture's readiness probe, GET /nope, comes first)
    requests = [line for line in lines if "entry_point" in line and line["httpRequest"]["requestUrl"] != "/nope"]
    assert len(requests) == 8  # exactly one line per request
    for line in requests:
        assert line["severity"] in ("INFO", "WARNING", "ERROR")
        http_request = line["httpRequest"]
        assert {"requestMethod", "requestUrl", "status", "latency"} <= set(http_request)
        assert http_request["latency"].endswith("s")
        assert line["code"]
    by_path = [(r["httpRequest"]["requestMethod"], r["httpRequest"]["status"], r["code"]) for r in requests]
    assert by_path[:3] == [("POST", 201, "ok"), ("POST", 401, "invalid_credentials"), ("POST", 200, "ok")]
    assert ("POST", 403, "csrf_rejected") in by_path

    assert requests[0]["logging.googleapis.com/trace"] == f"projects/{project}/traces/{TRACE_ID}"
    assert requests[3]["logging.googleapis.com/trace"] == f"projects/{project}/traces/{TRACE_ID}"
    assert requests[3]["logging.googleapis.com/spanId"] == format(123, "016x")
    profile = requests[3]
    assert profile["entry_point"] == "profile"
    assert profile["user_id"] == requests[0]["user_id"]
    assert len(profile["sid"]) == 12

    events = {line.get("event") for line in lines}
    assert {"login_failed", "password_changed", "sessions_revoked_all", "csrf_rejected"} <= events
    # Security events inside a traced request carry its trace too.
    registered = next(line for line in lines if line.get("event") == "user_registered")
    assert registered["logging.googleapis.com/trace"] == f"projects/{project}/traces/{TRACE_ID}"


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    yield
    logs.configure(load_settings({}), stream=sys.stdout)  # back to the default: JSON lines on stdout


@pytest.mark.usefixtures("_restore_logging")
def test_text_format_is_one_readable_line_per_record(make_client: AppFactory) -> None:
    """SESSION_LOG_FORMAT=text: the same records as JSON, one short line each, control characters escaped."""
    client = make_client(SESSION_LOG_FORMAT="text")
    stream = io.StringIO()
    logs.configure(load_settings(), stream=stream)
    client.post("/register", json={"username": "dora", "password": PASSWORD})
    client.get("/nope%1B[2J")
    lines = stream.getvalue().splitlines()
    assert not any(line.startswith("{") for line in lines)
    registered = next(line for line in lines if "POST /register 201" in line)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO    POST /register 201 \d+ms code=ok firestore=1rt/0r/2w/0d user_id=[0-9a-f]{32}",
        registered,
    ), registered
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d INFO    user_registered user_id=[0-9a-f]{32}", line) for line in lines)
    assert any("GET /nope\\x1b[2J 404" in line for line in lines)  # escaped: a path cannot drive the terminal
    assert "\x1b" not in stream.getvalue()
    assert PASSWORD not in stream.getvalue()


@pytest.mark.usefixtures("_restore_logging")
def test_json_is_the_default_format(make_static_client: AppFactory) -> None:
    make_static_client()
    stream = io.StringIO()
    logs.configure(load_settings(), stream=stream)
    logging.getLogger("session.security").info("probe", extra={"json_fields": {"event": "probe"}})
    assert json.loads(stream.getvalue().splitlines()[-1])["event"] == "probe"


def _records() -> list[logging.LogRecord]:
    """Records as the service makes them: a request line in a trace, an event, an error with a traceback."""
    logger = logging.getLogger("session.request")
    made = []
    http_request = {"requestMethod": "GET", "requestUrl": "/profile", "status": 200, "latency": "0.001000s"}
    made.append(
        logger.makeRecord(
            logger.name,
            logging.INFO,
            "/x/http.py",
            7,
            "GET /profile 200",
            (),
            None,
            "_log",
            {"http_request": http_request, "json_fields": {"entry_point": "profile", "firestore": {"reads": 2}}},
        )
    )
    made.append(
        logger.makeRecord(
            "session.security",
            logging.WARNING,
            "/x/s.py",
            9,
            "login_failed",
            (),
            None,
            "event",
            {"json_fields": {"event": "login_failed", "attempt": 2, "note": "é ✓"}},
        )
    )
    try:
        raise ValueError("boom")
    except ValueError:
        made.append(logger.makeRecord(logger.name, logging.ERROR, "/x/h.py", 3, "failed %s", ("x",), sys.exc_info()))
    made.append(logger.makeRecord(logger.name, logging.INFO, "/x/h.py", 4, "plain", (), None))
    made.append(
        logger.makeRecord(
            logger.name, logging.INFO, "/x/h.py", 5, "m", (), None, None, {"json_fields": {"severity": "X"}}
        )
    )
    return made


@pytest.mark.parametrize("traced", [False, True])
def test_json_line_handler_writes_the_structured_log_handlers_line(traced: bool) -> None:
    from google.cloud.logging_v2.handlers.structured_log import StructuredLogHandler

    from session import logs

    theirs = StructuredLogHandler(project_id="demo", stream=io.StringIO())  # type: ignore[no-untyped-call]
    ours = logs.JsonLineHandler(io.StringIO())
    token = logs.current_trace.set(("projects/demo/traces/" + TRACE_ID, "00f067aa0ba902b7", True) if traced else None)
    try:
        for record in _records():
            logs._TraceFilter().filter(record)
            expected = copy.copy(record)
            theirs.filter(expected)
            assert json.loads(ours.format(copy.copy(record))) == json.loads(theirs.format(expected))
    finally:
        logs.current_trace.reset(token)
