"""Settings that cannot work never start: one line per invalid variable, naming it and what it allows.

At cold start (import of main.py), in `python -m session check-config` and in
`make run` (python -m devtools), never a traceback.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from session.config import VARIABLES, ConfigError, Settings, load_settings
from tests.conftest import ROOT, AppFactory, bearer, register

DAY = 86400
MAX_TTL_SECONDS = 400 * DAY  # RFC 6265bis: the longest Max-Age a browser honours
PASSWORD = "correct horse battery"

BAD: list[tuple[dict[str, str], str, str]] = [
    # environment, the variable its line starts with, a fragment of the line
    ({"SESSION_TTL_SECONDS": "inf"}, "SESSION_TTL_SECONDS", "a finite number of seconds"),
    ({"SESSION_TTL_SECONDS": "1e400"}, "SESSION_TTL_SECONDS", "at most 34560000 (400 days)"),
    ({"SESSION_TTL_SECONDS": "nan"}, "SESSION_TTL_SECONDS", "must be a finite number of seconds greater than 0"),
    ({"SESSION_TTL_SECONDS": "-inf"}, "SESSION_TTL_SECONDS", "got '-inf'"),
    ({"SESSION_TTL_SECONDS": "1e12"}, "SESSION_TTL_SECONDS", "at most 34560000"),
    ({"SESSION_TTL_SECONDS": str(MAX_TTL_SECONDS + 1)}, "SESSION_TTL_SECONDS", "at most 34560000"),
    ({"SESSION_TTL_SECONDS": "0"}, "SESSION_TTL_SECONDS", "greater than 0"),
    ({"SESSION_TTL_SECONDS": "a day"}, "SESSION_TTL_SECONDS", "got 'a day'"),
    ({"SESSION_IDLE_SECONDS": "Infinity"}, "SESSION_IDLE_SECONDS", "a finite number"),
    ({"SESSION_IDLE_SECONDS": "90000"}, "SESSION_IDLE_SECONDS", "at most SESSION_TTL_SECONDS (86400)"),
    ({"SESSION_TOUCH_SECONDS": "3600"}, "SESSION_TOUCH_SECONDS", "less than SESSION_IDLE_SECONDS (3600)"),
    ({"SESSION_TOUCH_SECONDS": "-1"}, "SESSION_TOUCH_SECONDS", "at least 0"),
    ({"SESSION_TOUCH_SECONDS": "nan"}, "SESSION_TOUCH_SECONDS", "a finite number"),
    ({"SESSION_LOGIN_WINDOW_SECONDS": "1e12"}, "SESSION_LOGIN_WINDOW_SECONDS", "at most 2592000 (30 days)"),
    ({"SESSION_LOGIN_WINDOW_SECONDS": "0.001"}, "SESSION_LOGIN_WINDOW_SECONDS", "at least 1"),
    ({"SESSION_LOGIN_MAX_FAILURES": "0"}, "SESSION_LOGIN_MAX_FAILURES", "a whole number at least 1 and at most 1000"),
    ({"SESSION_LOGIN_MAX_FAILURES": "9" * 30}, "SESSION_LOGIN_MAX_FAILURES", "at most 1000"),
    ({"SESSION_DEVICE_COOKIE_DAYS": "0"}, "SESSION_DEVICE_COOKIE_DAYS", "a whole number at least 1 and at most 400"),
    ({"SESSION_DEVICE_COOKIE_DAYS": "401"}, "SESSION_DEVICE_COOKIE_DAYS", "at most 400"),
    ({"SESSION_DEVICE_MAX_FAILURES": "0"}, "SESSION_DEVICE_MAX_FAILURES", "at least 1 and at most 1000"),
    ({"SESSION_ADDRESS_MAX_FAILURES": "-1"}, "SESSION_ADDRESS_MAX_FAILURES", "at least 0 and at most 1000000"),
    ({"SESSION_ADDRESS_WINDOW_SECONDS": "inf"}, "SESSION_ADDRESS_WINDOW_SECONDS", "at most 2592000 (30 days)"),
    ({"SESSION_ADDRESS_WINDOW_SECONDS": "0"}, "SESSION_ADDRESS_WINDOW_SECONDS", "at least 1"),
    ({"SESSION_CLIENT_IP_HEADER": "X-Forwarded-For:"}, "SESSION_CLIENT_IP_HEADER", "a header name"),
    ({"SESSION_CLIENT_IP_HOPS": "0"}, "SESSION_CLIENT_IP_HOPS", "at least 1 and at most 10"),
    ({"SESSION_CLIENT_GEO_HEADER": "X-Geo: x"}, "SESSION_CLIENT_GEO_HEADER", "a header name"),
    ({"SESSION_EVENTS_DAYS": "0"}, "SESSION_EVENTS_DAYS", "a whole number at least 1 and at most 400"),
    ({"SESSION_EVENTS_DAYS": "401"}, "SESSION_EVENTS_DAYS", "at most 400"),
    ({"SESSION_EVENTS_DAYS": "1.5"}, "SESSION_EVENTS_DAYS", "got '1.5'"),
    ({"SESSION_EVENTS_TOPIC": "ab"}, "SESSION_EVENTS_TOPIC", "a Pub/Sub topic id"),
    ({"SESSION_EVENTS_TOPIC": "goog-events"}, "SESSION_EVENTS_TOPIC", "not starting with goog"),
    ({"SESSION_EVENTS_TOPIC": "1events"}, "SESSION_EVENTS_TOPIC", "a letter first"),
    ({"SESSION_EVENTS_TOPIC": "events/x"}, "SESSION_EVENTS_TOPIC", "projects/PROJECT/topics/TOPIC"),
    ({"SESSION_EVENTS_TOPIC": "projects/P/topics/events"}, "SESSION_EVENTS_TOPIC", "got 'projects/P/topics/events'"),
    ({"SESSION_EVENTS_TOPIC": "projects/my-project/topics/"}, "SESSION_EVENTS_TOPIC", "a Pub/Sub topic id"),
    ({"SESSION_EVENTS_TOPIC": "projects/my-project/subscriptions/s1"}, "SESSION_EVENTS_TOPIC", "a Pub/Sub topic"),
    ({"SESSION_EVENTS_TOPIC": "events\n"}, "SESSION_EVENTS_TOPIC", "a Pub/Sub topic id"),
    ({"SESSION_EVENTS_TOPIC": "e" * 256}, "SESSION_EVENTS_TOPIC", "3 to 255"),
    ({"SESSION_REAUTH_SECONDS": "0"}, "SESSION_REAUTH_SECONDS", "at least 1 and at most 86400"),
    ({"SESSION_REAUTH_SECONDS": "86401"}, "SESSION_REAUTH_SECONDS", "at most 86400 (1 days)"),
    ({"SESSION_REAUTH_SECONDS": "1.5"}, "SESSION_REAUTH_SECONDS", "got '1.5'"),
    ({"SESSION_FIRESTORE_TIMEOUT_SECONDS": "0.001"}, "SESSION_FIRESTORE_TIMEOUT_SECONDS", "at least 0.5"),
    ({"SESSION_FIRESTORE_TIMEOUT_SECONDS": "inf"}, "SESSION_FIRESTORE_TIMEOUT_SECONDS", "at most 60"),
    ({"SESSION_ARGON2_MEMORY_KIB": "1024"}, "SESSION_ARGON2_MEMORY_KIB", "at least 19456 and at most 262144"),
    ({"SESSION_ARGON2_MEMORY_KIB": "99999999999"}, "SESSION_ARGON2_MEMORY_KIB", "at most 262144"),
    ({"SESSION_ARGON2_TIME_COST": "1000000"}, "SESSION_ARGON2_TIME_COST", "at least 2 and at most 10"),
    ({"SESSION_ARGON2_PARALLELISM": "0"}, "SESSION_ARGON2_PARALLELISM", "at least 1 and at most 16"),
    ({"PORT": "70000"}, "PORT", "at most 65535"),
    ({"SESSION_USERS_COLLECTION": "__users__"}, "SESSION_USERS_COLLECTION", "reserved"),
    ({"SESSION_SESSIONS_COLLECTION": "a/b"}, "SESSION_SESSIONS_COLLECTION", "A-Z a-z 0-9 _ -"),
    (
        {"SESSION_ATTEMPTS_COLLECTION": "users"},
        "SESSION_USERS_COLLECTION, SESSION_SESSIONS_COLLECTION, SESSION_ATTEMPTS_COLLECTION",
        "three different collections",
    ),
    ({"FIRESTORE_DATABASE": "My_DB"}, "FIRESTORE_DATABASE", "(default), or 4 to 63"),
    ({"SESSION_COOKIE_NAME": "séssion"}, "SESSION_COOKIE_NAME", "A-Z a-z 0-9 _ -"),
    ({"SESSION_COOKIE_NAME": "__session\n"}, "SESSION_COOKIE_NAME", "A-Z a-z 0-9 _ -"),
    ({"SESSION_DEFAULT_PERMISSIONS": "read,wrïte"}, "SESSION_DEFAULT_PERMISSIONS", "'wrïte' is not a permission"),
    ({"SESSION_ALLOWED_ORIGINS": "https://a.example:99999"}, "SESSION_ALLOWED_ORIGINS", "is not an origin"),
    ({"SESSION_ALLOWED_ORIGINS": "https://a.example/app"}, "SESSION_ALLOWED_ORIGINS", "is not an origin"),
    ({"SESSION_ALLOWED_ORIGINS": "https://user@a.example"}, "SESSION_ALLOWED_ORIGINS", "is not an origin"),
    ({"SESSION_PAGE_API_ORIGIN": "javascript:alert(1)"}, "SESSION_PAGE_API_ORIGIN", "is not an origin"),
    ({"SESSION_PAGE_API_ORIGIN": 'https://a"b.example'}, "SESSION_PAGE_API_ORIGIN", "is not an origin"),
    ({"SESSION_PAGE_API_ORIGIN": "https://a.example:0"}, "SESSION_PAGE_API_ORIGIN", "is not an origin"),
    ({"SESSION_PAGE_API_ORIGIN": "https://a.example\n"}, "SESSION_PAGE_API_ORIGIN", "is not an origin"),
    ({"SESSION_COOKIE_SECURE": "maybe"}, "SESSION_COOKIE_SECURE", "got 'maybe'"),
    ({"SESSION_IDLE_SECOND": "600"}, "SESSION_IDLE_SECOND", "did you mean SESSION_IDLE_SECONDS?"),
    ({"SESSION_TTL": "600"}, "SESSION_TTL", "did you mean SESSION_TTL_SECONDS?"),
    (
        {"SESSION_ALLOWED_ORIGIN": "https://a.example"},
        "SESSION_ALLOWED_ORIGIN",
        "did you mean SESSION_ALLOWED_ORIGINS?",
    ),
    ({"SESSION_LOGLEVEL": "DEBUG"}, "SESSION_LOGLEVEL", "did you mean SESSION_LOG_LEVEL?"),
    ({"SESSION_ARGON2_MEMORY": "65536"}, "SESSION_ARGON2_MEMORY", "did you mean SESSION_ARGON2_MEMORY_KIB?"),
    ({"SESSION_DBSC": "yes"}, "SESSION_DBSC", "'off' or 'on'"),
    ({"SESSION_DBSC": "ON"}, "SESSION_DBSC", "'off' or 'on'"),
    ({"SESSION_DBSC_COOKIE_SECONDS": "0"}, "SESSION_DBSC_COOKIE_SECONDS", "at least 1 and at most 86400"),
    ({"SESSION_DBSC_COOKIE_SECONDS": "86401"}, "SESSION_DBSC_COOKIE_SECONDS", "at most 86400"),
    ({"SESSION_DBSC_COOKIE_SECONDS": "2.5"}, "SESSION_DBSC_COOKIE_SECONDS", "got '2.5'"),
    ({"SESSION_DBSC_COOKIE": "5"}, "SESSION_DBSC_COOKIE", "did you mean SESSION_DBSC_COOKIE_SECONDS?"),
]


@pytest.mark.parametrize(
    ("env", "variable", "fragment"), BAD, ids=[f"{next(iter(e))}={e[next(iter(e))]}" for e, *_ in BAD]
)
def test_an_invalid_setting_is_one_line_naming_it(env: dict[str, str], variable: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    header, *lines = str(caught.value).splitlines()
    assert header == "invalid configuration:"
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"  {variable}:"), lines[0]
    assert fragment in lines[0]


def test_every_invalid_variable_gets_its_own_line() -> None:
    env = {"SESSION_TTL_SECONDS": "inf", "SESSION_ARGON2_TIME_COST": "0", "SESSION_IDLE_SECOND": "5", "PORT": "x"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    lines = str(caught.value).splitlines()[1:]
    assert sorted(line.split(":")[0].strip() for line in lines) == sorted(env)


@pytest.mark.parametrize(
    ("env", "ttl", "idle", "touch"),
    [
        ({}, 86400, 3600, 60),  # NIST SP 800-63B-4 AAL2: idle at most 1 hour, reauthentication every 24 hours
        ({"SESSION_TTL_SECONDS": "1.5"}, 1.5, 1.5, 0.75),  # shortening the lifetime alone is enough
        ({"SESSION_TTL_SECONDS": "3600"}, 3600, 3600, 60),
        ({"SESSION_IDLE_SECONDS": "30"}, 86400, 30, 15),
        ({"SESSION_IDLE_SECONDS": "600", "SESSION_TOUCH_SECONDS": "0"}, 86400, 600, 0),
        (
            {"SESSION_TTL_SECONDS": str(MAX_TTL_SECONDS), "SESSION_IDLE_SECONDS": str(MAX_TTL_SECONDS)},
            400 * DAY,
            400 * DAY,
            60,
        ),
    ],
)
def test_durations_and_their_derived_defaults(env: dict[str, str], ttl: float, idle: float, touch: float) -> None:
    settings = load_settings(env)
    assert (settings.ttl_seconds, settings.idle_seconds, settings.touch_seconds) == (ttl, idle, touch)


def test_valid_values_at_the_edges() -> None:
    settings = load_settings(
        {
            "SESSION_ALLOWED_ORIGINS": "https://App.example.com, http://127.0.0.1:8080",
            "SESSION_PAGE_API_ORIGIN": "https://api.example.com:8443",
            "SESSION_COOKIE_NAME": "__Host-session",
            "FIRESTORE_DATABASE": "sessions-db",
            "SESSION_ARGON2_MEMORY_KIB": "262144",
            "SESSION_ARGON2_TIME_COST": "10",
            "SESSION_LOGIN_WINDOW_SECONDS": str(30 * DAY),
            "SESSION_REAUTH_SECONDS": str(DAY),
        }
    )
    assert settings.reauth_seconds == DAY
    assert settings.allowed_origins == ("https://app.example.com", "http://127.0.0.1:8080")
    assert settings.page_api_origin == "https://api.example.com:8443"
    assert settings.cookie_name == "__Host-session"


def test_lockout_settings_and_their_defaults() -> None:
    default = load_settings({"SESSION_LOGIN_MAX_FAILURES": "7"})
    assert (default.device_max_failures, default.device_cookie_days) == (7, 90)  # the device limit follows
    assert (default.address_max_failures, default.client_ip_header, default.client_ip_hops) == (0, None, 1)
    given = load_settings(
        {
            "SESSION_DEVICE_MAX_FAILURES": "3",
            "SESSION_CLIENT_IP_HEADER": "X-Forwarded-For",
            "SESSION_CLIENT_IP_HOPS": "10",
            "SESSION_ADDRESS_MAX_FAILURES": "1000000",
        }
    )
    assert (given.device_max_failures, given.login_max_failures) == (3, 5)
    assert (given.client_ip_header, given.client_ip_hops, given.address_max_failures) == ("x-forwarded-for", 10, 10**6)
    assert load_settings({"SESSION_CLIENT_IP_HEADER": ""}).client_ip_header is None


def test_dbsc_settings_and_their_defaults() -> None:
    default = load_settings({})
    assert (default.dbsc, default.dbsc_cookie_seconds) == ("off", 600)
    given = load_settings({"SESSION_DBSC": "on", "SESSION_DBSC_COOKIE_SECONDS": "2"})  # a test's few seconds
    assert (given.dbsc, given.dbsc_cookie_seconds) == ("on", 2)
    assert load_settings({"SESSION_DBSC_COOKIE_SECONDS": str(DAY)}).dbsc_cookie_seconds == DAY


def test_event_settings_and_their_defaults() -> None:
    default = load_settings({})
    assert (default.events_topic, default.events_topic_path, default.events_days) == (None, None, 90)
    assert (default.client_geo_header, default.pubsub_emulator_host) == (None, None)
    assert load_settings({"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}).pubsub_emulator_host == "127.0.0.1:8085"
    assert load_settings({"SESSION_EVENTS_TOPIC": "", "SESSION_CLIENT_GEO_HEADER": ""}) == default


@pytest.mark.parametrize(
    ("topic", "path"),
    [
        ("session-events", "projects/demo-p1/topics/session-events"),  # a bare id is in the service's project
        ("e.v_1~a+b%20", "projects/demo-p1/topics/e.v_1~a+b%20"),
        ("e" * 255, f"projects/demo-p1/topics/{'e' * 255}"),
        ("projects/other-project/topics/events", "projects/other-project/topics/events"),
        ("projects/example.com:corp-app/topics/events", "projects/example.com:corp-app/topics/events"),
    ],
)
def test_the_events_topic_is_a_full_topic_name(topic: str, path: str) -> None:
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": "demo-p1", "SESSION_EVENTS_TOPIC": topic})
    assert (settings.events_topic, settings.events_topic_path) == (topic, path)


def test_event_settings_at_the_edges() -> None:
    settings = load_settings({"SESSION_EVENTS_DAYS": "400", "SESSION_CLIENT_GEO_HEADER": "X-Client-Geo-Location"})
    assert (settings.events_days, settings.client_geo_header) == (400, "x-client-geo-location")
    assert load_settings({"SESSION_EVENTS_DAYS": "1"}).events_days == 1


@pytest.fixture
def config_warnings() -> Iterator[list[str]]:
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("session.config")
    logger.addHandler(handler)
    yield found
    logger.removeHandler(handler)


@pytest.mark.parametrize("name", ["SESSION_MANAGER", "SESSION_TYPE", "SESSION_SECRET"])
def test_other_session_variables_are_ignored_with_a_warning(name: str, config_warnings: list[str]) -> None:
    settings = load_settings({name: "local/host:@/tmp/.ICE-unix/1234,unix/host:/tmp/.ICE-unix/1234"})
    assert settings == load_settings({})
    assert config_warnings == [f"ignoring {name}: not a setting of the session service"]


def test_the_settings_class_names_its_variables() -> None:
    assert {"SESSION_TTL_SECONDS", "SESSION_PAGE_API_ORIGIN", "GOOGLE_CLOUD_PROJECT"} <= VARIABLES
    assert Settings.model_fields["ttl_seconds"].validation_alias == "SESSION_TTL_SECONDS"


# --- where the lines are shown ------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    return subprocess.run(args, env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120)


BAD_START = {"SESSION_TTL_SECONDS": "1e400", "SESSION_TOUCH_SECONDS": "nan", "SESSION_IDLE_SECOND": "600"}


def _assert_lines(output: str) -> None:
    assert "Traceback" not in output
    assert "OverflowError" not in output
    for name in BAD_START:
        (line,) = [line for line in output.splitlines() if line.startswith(f"  {name}:")]
        assert line


def test_cold_start_refuses_with_one_line_per_variable() -> None:
    result = _run([sys.executable, "-c", "import main"], BAD_START)
    assert result.returncode == 1
    assert result.stderr.startswith("session service: invalid configuration:")
    _assert_lines(result.stderr)


def test_check_config_refuses_with_one_line_per_variable() -> None:
    result = _run([sys.executable, "-m", "session", "check-config"], BAD_START)
    assert result.returncode == 2
    _assert_lines(result.stderr)


def test_make_run_refuses_before_serving(emulator_host: str) -> None:
    env = {**BAD_START, "FIRESTORE_EMULATOR_HOST": emulator_host, "PORT": "1"}
    result = _run([sys.executable, "-m", "devtools", "run"], env)
    assert result.returncode == 2
    assert "Serving" not in result.stdout
    _assert_lines(result.stderr)


def test_cold_start_warns_about_a_foreign_session_variable_in_one_line() -> None:
    result = _run([sys.executable, "-c", "import main"], {"SESSION_MANAGER": "local/host:@/tmp/.ICE-unix/1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["ignoring SESSION_MANAGER: not a setting of the session service"]


# --- the bounds are real: the largest values work end to end --------------------------------------------


def test_the_longest_allowed_session_works(make_client: AppFactory) -> None:
    client: TestClient = make_client(
        SESSION_TTL_SECONDS=str(MAX_TTL_SECONDS),
        SESSION_IDLE_SECONDS=str(MAX_TTL_SECONDS),
        SESSION_TOUCH_SECONDS=str(MAX_TTL_SECONDS - 1),
        SESSION_LOGIN_WINDOW_SECONDS=str(30 * DAY),
        SESSION_LOGIN_MAX_FAILURES="1000",
        SESSION_DEVICE_COOKIE_DAYS="400",
        SESSION_DEVICE_MAX_FAILURES="1000",
        SESSION_ADDRESS_MAX_FAILURES="1000000",
        SESSION_ADDRESS_WINDOW_SECONDS=str(30 * DAY),
        SESSION_CLIENT_IP_HEADER="X-Forwarded-For",
        SESSION_CLIENT_IP_HOPS="10",
    )
    register(client)
    assert client.post("/login", json={"username": "alice", "password": "wrong password"}).status_code == 401
    reply = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    assert f"Max-Age={MAX_TTL_SECONDS}" in reply.headers["set-cookie"]
    assert client.get("/profile", headers=bearer(reply.json()["token"])).status_code == 200
    # The device cookie lives the longest a browser keeps a cookie, and a trusted browser logs in with it.
    device = [c for c in reply.headers.get_list("set-cookie") if c.startswith("__Host-session-device=")]
    assert len(device) == 1 and f"Max-Age={MAX_TTL_SECONDS}" in device[0], device
    assert client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
