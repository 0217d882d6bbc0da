"""Fixtures: a real Firestore emulator, apps built by functions-framework, a live `make run` server.

Every test that uses the store gets its own `demo-` project on the shared emulator,
wiped afterwards, so tests never see each other's documents. Tests whose requests
are answered before any store access (bad input, routing, static files) use
`static_client` instead: no project, no emulator, and a test that reaches the
store after all fails.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from functions_framework import create_app
from starlette.testclient import TestClient

from devtools.launch import Emulator, free_port, make_run, wipe

ROOT = Path(__file__).resolve().parent.parent

# Fast hashing for tests that do not measure it; still the OWASP minimum (the floor the settings enforce).
BASE_ENV = {
    "SESSION_COOKIE_SECURE": "true",
    "SESSION_LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def emulator_host() -> Iterator[str]:
    """The emulator of `make test` (FIRESTORE_EMULATOR_HOST), or one started for this run."""
    given = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if given:
        yield given
        return
    with Emulator() as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        yield emulator.host


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def project(emulator_host: str) -> Iterator[str]:
    """A fresh `demo-` project for this test, wiped afterwards."""
    name = f"demo-t{uuid.uuid4().hex[:12]}"
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator_host
    os.environ["GOOGLE_CLOUD_PROJECT"] = name
    os.environ.update(BASE_ENV)
    yield name
    with contextlib.suppress(OSError):
        wipe(emulator_host, name)


AppFactory = Callable[..., TestClient]
T = TypeVar("T")


class _Clients:
    """The started TestClients of one test, each with the runtime its main.py built, stopped at teardown."""

    def __init__(self) -> None:
        self.started: list[tuple[TestClient, Any]] = []

    def start(self, target: str, env: dict[str, str]) -> TestClient:
        os.environ.update(env)
        app = create_app(target, str(ROOT / "main.py"))
        client = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)
        client.__enter__()
        self.started.append((client, main_module().api_instance.runtime))
        return client

    def stop(self) -> None:
        for client, runtime in self.started:
            # The Firestore client belongs to the app's event loop: closed on it, before the loop ends.
            # Left open, its grpc aio channel is finalised after the loop has closed (an unraisable error).
            if client.portal is not None:
                client.portal.call(runtime.store.close)
            client.__exit__(None, None, None)


@pytest.fixture
def make_client(project: str) -> Iterator[AppFactory]:
    """Build `api` (or another target) from main.py with extra settings, as a started TestClient."""
    clients = _Clients()

    def factory(target: str = "api", **env: str) -> TestClient:
        return clients.start(target, env)

    yield factory
    clients.stop()


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


@pytest.fixture
def make_static_client() -> Iterator[AppFactory]:
    """Like `make_client`, for requests answered before any store access: no project, no emulator.

    FIRESTORE_EMULATOR_HOST names a port nobody listens on, and at teardown the
    test fails if any of its apps so much as created a Firestore client.
    """
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"
    os.environ["GOOGLE_CLOUD_PROJECT"] = "demo-no-store"
    os.environ["SESSION_FIRESTORE_TIMEOUT_SECONDS"] = "0.5"
    os.environ.update(BASE_ENV)
    clients = _Clients()

    def factory(target: str = "api", **env: str) -> TestClient:
        return clients.start(target, env)

    yield factory
    reached = [type(runtime.store).__name__ for _, runtime in clients.started if runtime.store._clients]
    clients.stop()
    if reached:
        pytest.fail(f"a static_client test reached the store ({reached}): use `client` instead")


@pytest.fixture
def static_client(make_static_client: AppFactory) -> TestClient:
    """`api` for a test whose requests never reach the store."""
    return make_static_client()


def main_module() -> Any:
    """The main.py module that the last create_app loaded (to reach its service and clock)."""
    return sys.modules["main"]


def register(client: TestClient, username: str = "alice", password: str = "correct horse battery", **extra: Any) -> Any:
    response = client.post("/register", json={"username": username, "password": password, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def login(client: TestClient, username: str = "alice", password: str = "correct horse battery") -> str:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def live_server(project: str, emulator_host: str) -> Iterator[str]:
    """`make run` on a free port, against the shared emulator (devtools.launch, the one launcher)."""
    port = free_port()
    log_path = ROOT / f".pytest-make-run-{port}.log"  # tests read the server's log here
    env = {"FIRESTORE_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project}
    try:
        with make_run(env, port=port, timeout=60, log_path=log_path) as server:
            yield server.base
    finally:
        log_path.unlink(missing_ok=True)


def emulator_get(host: str, project: str, path: str) -> dict[str, Any]:
    """A document (or collection listing) read straight from the emulator's REST API."""
    url = f"http://{host}/v1/projects/{project}/databases/(default)/documents/{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        import json

        return dict(json.loads(resp.read()))


def together(calls: list[Callable[[], T]]) -> list[T]:
    """Run each call in its own thread, all released at once by a barrier; their results, in order.

    The races of the suite use it: real threads against the real app and emulator, not an
    interleaving made up by the test.
    """
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        start.wait()
        return call()

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))
