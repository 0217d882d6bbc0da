"""The admin CLI, `python -m session`, against the emulator with the service's own settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from starlette.testclient import TestClient

import session
from session import cli as session_cli
from session import tokens
from session.config import Settings
from session.models import USERNAME_RULE
from tests.conftest import ROOT, bearer, free_port, login, register

# What the CLI may print on stderr besides its one error line: the lines naming its target and log.
TARGET_PREFIX = "session: "


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path) -> None:
    """The CLI's default log file goes under XDG_STATE_HOME: keep it in this test's folder."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path / "state")


def cli(
    *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``python -m session ARGS`` with no terminal at all (its own session, stdin a pipe or /dev/null)."""
    return subprocess.run(
        [sys.executable, "-m", "session", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ) if env is None else dict(env),
        timeout=60,
        start_new_session=True,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the target lines; asserts there is no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if not line.startswith(TARGET_PREFIX)]


def log_events(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "state" / "session-service" / "admin.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_users_create_and_permissions(client: TestClient) -> None:
    created = cli(
        "users",
        "create",
        "Dave",
        "--permission",
        "read",
        "--permission",
        "admin",
        "--password-stdin",
        stdin="dave's long password\n",
    )
    assert created.returncode == 0, created.stderr
    assert "dave" in created.stdout
    token = login(client, "dave", "dave's long password")
    assert client.get("/profile", headers=bearer(token)).json()["permissions"] == ["read", "admin"]
    changed = cli("users", "set-permissions", "dave", "orders:write")
    assert changed.returncode == 0, changed.stderr
    assert client.get("/profile", headers=bearer(token)).json()["permissions"] == ["orders:write"]


def test_disable_and_enable(client: TestClient) -> None:
    register(client)
    token = login(client)
    disabled = cli("users", "disable", "alice")
    assert disabled.returncode == 0, disabled.stderr
    assert "1 session(s) revoked" in disabled.stdout
    assert client.get("/profile", headers=bearer(token)).status_code == 401
    assert client.post("/login", json={"username": "alice", "password": "correct horse battery"}).status_code == 403
    assert cli("users", "enable", "alice").returncode == 0
    assert login(client)


def test_sessions_list_and_revoke_all(client: TestClient) -> None:
    register(client)
    tokens = [login(client) for _ in range(2)]
    listed = cli("sessions", "list", "alice")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.strip().splitlines()
    assert len(rows) == 3  # header + two sessions
    assert "testclient" in rows[1]
    for token in tokens:
        assert token not in listed.stdout and token.split(".")[1] not in listed.stdout
    revoked = cli("sessions", "revoke-all", "alice")
    assert revoked.returncode == 0 and "2 session(s) revoked" in revoked.stdout
    assert all(client.get("/profile", headers=bearer(t)).status_code == 401 for t in tokens)


@pytest.mark.parametrize(
    "args",
    [
        ("users", "disable", "nobody"),
        ("users", "set-permissions", "nobody", "read"),
        ("sessions", "list", "nobody"),
        ("sessions", "revoke-all", "nobody"),
    ],
)
def test_unknown_user_is_a_one_line_error(client: TestClient, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.returncode != 0
    [line] = error_lines(result)
    assert "nobody" in line


@pytest.mark.parametrize(
    "args",
    [
        ("users", "disable", "\u212aate"),  # the Kelvin sign lower-cases to "k": it must not name kate
        ("users", "delete", "\u212aate"),
        ("sessions", "revoke-all", "__kate__"),  # a reserved Firestore id
        ("users", "set-permissions", "k", "read"),
        ("sessions", "revoke-everyone", "--yes", "--resume-after", "\u212aate"),
    ],
)
def test_a_name_that_is_no_username_is_refused_before_the_store(
    client: TestClient, args: tuple[str, ...], tmp_path: Path
) -> None:
    """The CLI and the admin operations validate a name before lower-casing it, as the register endpoint does."""
    register(client, "kate")
    result = cli(*args)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: invalid input: username: {USERNAME_RULE}"]
    [event] = log_events(tmp_path)
    assert event["event"] == "admin_command_failed"
    assert event["target"] == (args[2] if args[0] == "users" or args[1] == "revoke-all" else "*")
    token = login(client, "kate")  # neither disabled nor deleted, and the session still stands
    assert client.get("/profile", headers=bearer(token)).status_code == 200


def test_create_existing_user_fails(client: TestClient) -> None:
    register(client)
    result = cli("users", "create", "alice", "--password-stdin", stdin="another password\n")
    assert result.returncode == 1
    assert "taken" in result.stderr


def test_bad_settings_are_one_clear_message(project: str) -> None:
    os.environ["SESSION_TTL_SECONDS"] = "-5"
    result = cli("check-config")
    assert result.returncode == 2
    assert "SESSION_TTL_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_is_the_package_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"session-service {session.__version__}"


def test_create_without_a_terminal_is_one_line(project: str) -> None:
    result = cli("users", "create", "bob")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: no terminal to ask for the password: pipe it in and pass --password-stdin"
    ], result.stderr


def test_no_environment_at_all_says_what_is_missing(tmp_path: Path) -> None:
    bare = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = cli("users", "disable", "alice", env=bare, cwd=tmp_path)
    assert result.returncode == 1
    [line] = error_lines(result)
    assert line.startswith("error: no Google credentials")
    assert "FIRESTORE_EMULATOR_HOST" in line and "GOOGLE_CLOUD_PROJECT" in line
    assert "project demo-session (default: GOOGLE_CLOUD_PROJECT is not set)" in result.stderr


@pytest.mark.parametrize(
    "args",
    [("users", "enable", "nobody"), ("sessions", "list", "nobody"), ("check-config",)],
)
def test_every_command_names_project_database_and_emulator(
    project: str, emulator_host: str, args: tuple[str, ...]
) -> None:
    os.environ["FIRESTORE_DATABASE"] = "(default)"
    result = cli(*args)
    first = result.stderr.splitlines()[0]
    assert first == f"session: project {project}, database (default), emulator {emulator_host}"


def test_security_events_go_to_the_structured_log_only(client: TestClient, tmp_path: Path) -> None:
    register(client)
    login(client)
    results = [
        cli("users", "disable", "alice"),
        cli("users", "enable", "alice"),
        cli("sessions", "revoke-all", "alice"),
    ]
    for result in results:
        assert result.returncode == 0, result.stderr
        assert error_lines(result) == []  # the target lines only: no stray `user_disabled`
        assert result.stderr.splitlines()[-1].startswith("session: security events go to ")
    events = [line for line in log_events(tmp_path) if "event" in line]
    assert [e["event"] for e in events] == ["user_disabled", "user_enabled", "sessions_revoked_all"]
    assert events[0]["severity"] == "WARNING" and events[0]["sessions_revoked"] == 1


def test_log_file_option(client: TestClient, tmp_path: Path) -> None:
    register(client)
    path = tmp_path / "audit" / "cli.jsonl"
    assert cli("--log-file", str(path), "users", "disable", "alice").returncode == 0
    events = [json.loads(line).get("event") for line in path.read_text().splitlines()]
    assert "user_disabled" in events


def test_check_config_prints_every_setting_and_its_source(project: str) -> None:
    os.environ["SESSION_TTL_SECONDS"] = "3600"
    os.environ.pop("SESSION_IDLE_SECONDS", None)
    result = cli("check-config")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:-1]}
    assert result.stdout.splitlines()[-1] == "configuration OK"
    documented = [session_cli._alias_names(name)[0] for name in Settings.model_fields]
    assert list(rows) == documented
    assert rows["SESSION_TTL_SECONDS"] == ["3600.0", "environment"]
    assert rows["SESSION_IDLE_SECONDS"][-1] == "default"
    assert rows["GOOGLE_CLOUD_PROJECT"] == [project, "environment"]


def test_check_config_hides_secrets_by_type_not_by_name() -> None:
    class WithSecrets(Settings):
        api_key: SecretStr = Field(default=SecretStr("default-secret"), validation_alias="SESSION_API_KEY")
        pepper: str = Field(default="", repr=False, validation_alias="SESSION_PEPPER")

    settings = WithSecrets.model_validate({"SESSION_API_KEY": "s3cr3t-from-env", "SESSION_PEPPER": "pepper-value"})
    rows = {variable: (value, source) for variable, value, source in session_cli.describe(settings, {})}
    assert rows["SESSION_API_KEY"] == ("(hidden)", "default")
    assert rows["SESSION_PEPPER"][0] == "(hidden)"
    text = repr(rows)
    assert "s3cr3t" not in text and "pepper-value" not in text


def test_stored_user_agents_print_escaped(client: TestClient, project: str, emulator_host: str) -> None:
    """Stored data is untrusted: a user agent holding terminal escapes prints escaped.

    The HTTP edge already replaces control characters before storing (test_hardening), so the hostile
    value is written straight into the session document, as an older release or another writer could have.
    """
    register(client)
    token = login(client)
    hostile = "ua\x1b]0;pwned\x07\x1b[2J"
    url = (
        f"http://{emulator_host}/v1/projects/{project}/databases/(default)/documents/"
        f"sessions/{tokens.hash_token(token)}?updateMask.fieldPaths=user_agent"
    )
    body = json.dumps({"fields": {"user_agent": {"stringValue": hostile}}}).encode()
    request = urllib.request.Request(url, data=body, method="PATCH", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
    listed = cli("sessions", "list", "alice")
    assert listed.returncode == 0, listed.stderr
    for raw in ("\x1b", "\x07"):
        assert raw not in listed.stdout
    assert "ua\\x1b]0;pwned\\x07\\x1b[2J" in listed.stdout


def test_printable_escapes_controls_and_bidi_only() -> None:
    assert session.logs.printable("ua\x1b]0;pwned\x07\x1b[2J") == "ua\\x1b]0;pwned\\x07\\x1b[2J"
    assert session.logs.printable("\u202e\u2066\x85\x7f\n\t") == "\\u202e\\u2066\\x85\\x7f\\n\\t"
    assert session.logs.printable("Zoë 日本 — ok") == "Zoë 日本 — ok"


def test_corrupt_user_document_is_one_line(client: TestClient, project: str, emulator_host: str) -> None:
    url = f"http://{emulator_host}/v1/projects/{project}/databases/(default)/documents/users/alice"
    body = json.dumps({"fields": {"username": {"integerValue": "5"}}}).encode()
    request = urllib.request.Request(url, data=body, method="PATCH", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
    result = cli("users", "disable", "alice")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert line.startswith("error: a stored document does not match its model")


def test_unreachable_emulator_is_one_line(project: str) -> None:
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"
    os.environ["SESSION_FIRESTORE_TIMEOUT_SECONDS"] = "1"
    result = cli("sessions", "list", "alice")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert line.startswith(f"error: the Firestore emulator at {os.environ['FIRESTORE_EMULATOR_HOST']} is unavailable")
