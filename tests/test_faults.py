"""Firestore faults, for real: a running `make run` server whose emulator stops, freezes, or never existed.

Each test starts an emulator of its own (devtools.launch) so that stopping
it disturbs no other test, and a server with a 2-second store deadline. No
mocks: the faults are a killed emulator, a SIGSTOPped one, and a port nobody
listens on. The timings are printed (``pytest -s``) as well as asserted.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.error import HTTPError

import httpx2 as httpx
import pytest

from devtools.launch import Emulator, Server, free_port, make_run
from session import tokens
from tests.conftest import emulator_get

pytestmark = pytest.mark.slow

DEADLINE = 2.0
# Over the deadline: HTTP and process overhead, and for register the password hash (before any store call).
SLACK = 1.5
PASSWORD = "correct horse battery"


@contextmanager
def _server(emulator_host: str) -> Iterator[tuple[Server, str]]:
    project = f"demo-faults-{uuid.uuid4().hex[:8]}"
    env = {
        "FIRESTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": project,
        "SESSION_FIRESTORE_TIMEOUT_SECONDS": str(DEADLINE),
        "SESSION_COOKIE_SECURE": "false",
    }
    with make_run(env) as server:
        yield server, project


@pytest.fixture
def own_emulator() -> Iterator[Emulator]:
    emulator = Emulator(port=free_port()).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def _session(http: httpx.Client, username: str, within: float = 90) -> str:
    """Register (if needed) and log in, retrying 503s: a freshly started emulator answers its first calls slowly."""
    deadline = time.monotonic() + within
    body = {"username": username, "password": PASSWORD}
    while True:
        registered = http.post("/register", json=body)
        if registered.status_code in (201, 409):
            logged_in = http.post("/login", json=body)
            if logged_in.status_code == 200:
                return str(logged_in.json()["token"])
            assert logged_in.status_code == 503, logged_in.text
        else:
            assert registered.status_code == 503, registered.text
        assert time.monotonic() < deadline, "the service did not come back"
        time.sleep(0.5)


def _unavailable(name: str, call: Callable[[], httpx.Response]) -> float:
    """Run ``call``; it must answer a 503 problem with Retry-After within about the deadline."""
    started = time.monotonic()
    response = call()
    elapsed = time.monotonic() - started
    print(f"  {name}: {response.status_code} in {elapsed:.2f} s")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "service_unavailable"
    assert response.headers["retry-after"] == str(round(DEADLINE))
    assert elapsed < DEADLINE + SLACK, f"{name} took {elapsed:.2f} s"
    return elapsed


def _store_calls(http: httpx.Client, token: str, newcomer: str) -> dict[str, Callable[[], httpx.Response]]:
    auth = {"Authorization": f"Bearer {token}"}
    return {
        "GET /profile": lambda: http.get("/profile", headers=auth),
        "PATCH /profile": lambda: http.patch("/profile", headers=auth, json={"display_name": "during outage"}),
        "POST /login": lambda: http.post("/login", json={"username": "alice", "password": PASSWORD}),
        "POST /register": lambda: http.post("/register", json={"username": newcomer, "password": PASSWORD}),
        "GET /sessions": lambda: http.get("/sessions", headers=auth),
        "POST /profile/password": lambda: http.post(
            "/profile/password", headers=auth, json={"current_password": PASSWORD, "new_password": "x" * 12}
        ),
        "POST /logout": lambda: http.post("/logout", headers=auth),
    }


def _user(host: str, project: str, username: str) -> dict[str, Any] | None:
    """The user document's fields, read straight from the emulator; None only if it answers 404.

    An emulator that does not answer raises (URLError): "no such user" must never be a guess.
    """
    try:
        return emulator_get(host, project, f"users/{username}")["fields"]  # type: ignore[no-any-return]
    except HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def test_stopped_emulator_answers_503_and_the_same_process_recovers(own_emulator: Emulator) -> None:
    with _server(own_emulator.host) as (server, _), httpx.Client(base_url=server.base, timeout=30) as http:
        token = _session(http, "alice")
        assert http.get("/profile", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        pid = server.proc.pid

        own_emulator.stop()
        print(f"\nemulator stopped under the server (deadline {DEADLINE} s):")
        for name, call in _store_calls(http, token, "bob").items():
            _unavailable(name, call)
        # What needs no store still answers at once.
        assert http.post("/login", content="{", headers={"Content-Type": "application/json"}).status_code == 400

        own_emulator.start()  # same address; its data was in memory, so the old session is gone
        started = time.monotonic()
        token = _session(http, "alice")
        print(f"emulator restarted: the same server served a login again after {time.monotonic() - started:.2f} s")
        auth = {"Authorization": f"Bearer {token}"}
        assert http.get("/profile", headers=auth).status_code == 200
        assert http.patch("/profile", headers=auth, json={"display_name": "back"}).json()["version"] == 2
        assert server.proc.poll() is None and server.proc.pid == pid, "the server was restarted"


def test_frozen_emulator_times_out_into_503_and_leaves_nothing_half_written(own_emulator: Emulator) -> None:
    assert own_emulator.proc is not None
    with _server(own_emulator.host) as (server, project), httpx.Client(base_url=server.base, timeout=30) as http:
        token = _session(http, "alice")
        auth = {"Authorization": f"Bearer {token}"}
        before = _user(own_emulator.host, project, "alice")
        assert before is not None

        os.killpg(own_emulator.proc.pid, signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            print(f"\nemulator frozen (SIGSTOP) under the server (deadline {DEADLINE} s):")
            _unavailable("GET /profile", lambda: http.get("/profile", headers=auth))
            _unavailable(
                "PATCH /profile", lambda: http.patch("/profile", headers=auth, json={"display_name": "frozen"})
            )
            _unavailable(
                "POST /register", lambda: http.post("/register", json={"username": "dave", "password": PASSWORD})
            )
        finally:
            os.killpg(own_emulator.proc.pid, signal.SIGCONT)

        # The same session works again: the data survived, and the process recovered by itself.
        deadline = time.monotonic() + 30
        while (profile := http.get("/profile", headers=auth)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert profile.status_code == 200, profile.text
        # A write cut off by the deadline either never happened or happened whole: never half of it.
        after = _user(own_emulator.host, project, "alice")
        assert after is not None
        version, name = int(after["version"]["integerValue"]), after.get("display_name", {})
        assert (version, name.get("stringValue")) in ((1, None), (2, "frozen")), after
        assert profile.json()["version"] == version
        created = _user(own_emulator.host, project, "dave")
        assert created is None or {"user_id", "username", "password_hash", "created_at", "updated_at"} <= set(created)


def test_address_where_nothing_ever_listened_answers_503_within_the_deadline() -> None:
    with _server(f"127.0.0.1:{free_port()}") as (server, _), httpx.Client(base_url=server.base, timeout=30) as http:
        print(f"\nno emulator at all (deadline {DEADLINE} s):")
        _unavailable("POST /register", lambda: http.post("/register", json={"username": "eve", "password": PASSWORD}))
        _unavailable("POST /login", lambda: http.post("/login", json={"username": "eve", "password": PASSWORD}))
        well_formed = {"Authorization": f"Bearer {tokens.mint('eve')}"}
        _unavailable("GET /profile", lambda: http.get("/profile", headers=well_formed))
        assert server.proc.poll() is None
