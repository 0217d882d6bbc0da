"""Clients generated from session/openapi.yaml work, errors included (issue 24).

Python: openapi-python-client (pinned in requirements-dev.txt) generates a client into a temporary directory, and the
client walks register → login → profile → a failed login → a 403 ``reauthentication_required`` over real HTTP
against the ``api`` function (uvicorn on 127.0.0.1, the test's emulator project behind it). Every answer is parsed
into its model, problems included. TypeScript: openapi-typescript generates types, and ``tsc --noEmit`` type-checks
tests/clients/walkthrough.ts against them; both npm tools are pinned by tests/clients/package-lock.json and installed
by scripts/ci-tools.sh into a cache outside the repo. Nothing generated is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import threading
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn
from functions_framework import create_app

from scripts import openapi
from tests.conftest import ROOT, free_port, main_module
from tests.deploy_support import CI_TOOLS, missing_tool, require_tool
from tests.support import Ahead, use_clock

PACKAGE = "session_api_client"  # the generated package's name: not `session`, which it would shadow
PASSWORD = "correct horse battery"
REAUTH_SECONDS = 600
# openapi-python-client's words for a part of the document it could not turn into code.
GENERATOR_WARNING = re.compile(r"warning|omitted|cannot parse|could not|unsupported", re.IGNORECASE)
CLIENTS = ROOT / "tests" / "clients"


# --- Python: openapi-python-client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    output: str  # what the generator printed (stdout and stderr)
    package: ModuleType


def generate_python_client(document: Path, into: Path) -> subprocess.CompletedProcess[str]:
    """``openapi-python-client generate`` on ``document``, as a client developer runs it (ruff on the PATH)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document)]
    return subprocess.run(
        [*command, "--meta", "none", "--output-path", str(into)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=into.parent,
    )


@pytest.fixture(scope="module")
def python_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    if importlib.util.find_spec("openapi_python_client") is None:
        missing_tool("openapi-python-client is not installed (pip install -r requirements-dev.txt)")
    into = tmp_path_factory.mktemp("python-client") / PACKAGE
    result = generate_python_client(openapi.OUTPUT, into)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sys.path.insert(0, str(into.parent))
    try:
        yield Generated(output, importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(into.parent))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_openapi_python_client_generates_every_response_without_a_warning(python_client: Generated) -> None:
    assert not GENERATOR_WARNING.search(python_client.output), python_client.output
    login = importlib.import_module(f"{PACKAGE}.api.default.login")
    # Every documented answer of the login has its model in the client (the problems were dropped before).
    parsed = {t.__name__ for t in typing.get_args(typing.get_type_hints(login._parse_response)["return"])}
    assert {"LoginOut", "InvalidCredentialsProblem", "TooManyAttemptsProblem", "AccountDisabledProblem"} <= parsed


@dataclass(frozen=True)
class Served:
    base: str
    clock: Ahead


@pytest.fixture
def served(project: str) -> Iterator[Served]:
    """The ``api`` function served over real HTTP on 127.0.0.1, in this process (so the test can move its clock)."""
    os.environ["SESSION_REAUTH_SECONDS"] = str(REAUTH_SECONDS)
    app = create_app("api", str(ROOT / "main.py"))
    api = main_module().api_instance
    clock = use_clock(Ahead())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    loop = asyncio.new_event_loop()

    def serve() -> None:
        loop.run_until_complete(server.serve())
        # The Firestore client belongs to this loop: closed on it, before the loop ends.
        loop.run_until_complete(api.runtime.store.close())
        loop.close()

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    for _ in range(200):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield Served(f"http://127.0.0.1:{port}", clock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# The generated code passes `cookies=` per request (the login's device-cookie parameter), which httpx 0.28 deprecates.
@pytest.mark.filterwarnings("ignore:Setting per-request cookies:DeprecationWarning")
def test_the_generated_python_client_reads_every_answer_of_the_walk_through(
    python_client: Generated, served: Served, request: pytest.FixtureRequest
) -> None:
    client_module = python_client.package
    api = importlib.import_module(f"{PACKAGE}.api.default")
    models = importlib.import_module(f"{PACKAGE}.models")
    register, login, get_profile, list_sessions = (
        importlib.import_module(f"{api.__name__}.{name}")
        for name in ("register", "login", "get_profile", "list_sessions")
    )
    clients = contextlib.ExitStack()  # each generated client closes its httpx connection pool at the end
    request.addfinalizer(clients.close)
    anonymous = clients.enter_context(client_module.Client(base_url=served.base, raise_on_unexpected_status=True))

    created = register.sync_detailed(
        client=anonymous, body=models.RegisterRequest(username="alice", password=PASSWORD, display_name="Alice")
    )
    _expect(created, 201, models.UserOut)
    assert created.parsed.username == "alice"

    opened = login.sync_detailed(client=anonymous, body=models.LoginRequest(username="alice", password=PASSWORD))
    _expect(opened, 200, models.LoginOut)
    signed_in = clients.enter_context(
        client_module.AuthenticatedClient(
            base_url=served.base, token=opened.parsed.token, raise_on_unexpected_status=True
        )
    )

    profile = get_profile.sync_detailed(client=signed_in)
    _expect(profile, 200, models.ProfileOut)
    assert (profile.parsed.display_name, profile.headers["etag"]) == ("Alice", f'"{profile.parsed.version}"')

    failed = login.sync_detailed(client=anonymous, body=models.LoginRequest(username="alice", password="not the one"))
    _expect(failed, 401, models.InvalidCredentialsProblem)
    assert (failed.parsed.code, failed.parsed.status) == ("invalid_credentials", 401)
    assert failed.headers["www-authenticate"] == 'Bearer realm="session"'  # documented now

    # A 400 of two possible codes: the client tells them apart by `code`.
    bad = login.sync_detailed(client=anonymous, body=models.LoginRequest(username="a", password=PASSWORD))
    _expect(bad, 400, models.InvalidRequestProblem)
    assert [error.loc for error in bad.parsed.errors] == [["username"]], bad.parsed

    stranger = clients.enter_context(client_module.AuthenticatedClient(base_url=served.base, token="not-a-token"))
    unknown = get_profile.sync_detailed(client=stranger)
    _expect(unknown, 401, models.UnauthenticatedProblem)
    assert unknown.parsed.reason == models.UnauthenticatedReason.MALFORMED

    served.clock.seconds = REAUTH_SECONDS + 1
    refused = list_sessions.sync_detailed(client=signed_in)
    _expect(refused, 403, models.ReauthenticationRequiredProblem)
    assert (refused.parsed.code, refused.parsed.max_age) == ("reauthentication_required", REAUTH_SECONDS)


def _expect(response: Any, status: int, model: type) -> None:
    """The answer has ``status`` and the generated client parsed its body into ``model``."""
    assert response.status_code == status, response.content
    assert isinstance(response.parsed, model), (type(response.parsed), response.content)


# --- TypeScript: openapi-typescript and tsc ------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_tools() -> Path:
    """The pinned openapi-typescript and typescript, installed once into the cache outside the repo."""
    require_tool("node", "the TypeScript types generated from openapi.yaml (apt-get install nodejs npm)")
    prefix = Path(
        subprocess.run(
            ["bash", str(CI_TOOLS), "--client-tools-dir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    if not (prefix / ".complete").exists():
        require_tool("npm", "the TypeScript types generated from openapi.yaml (apt-get install npm)")
        installed = subprocess.run(["bash", str(CI_TOOLS), "client-tools"], capture_output=True, text=True, timeout=900)
        if installed.returncode != 0:
            missing_tool(f"could not install the client tools into {prefix}: {installed.stderr.strip()[-500:]}")
    return prefix


TSCONFIG = """{
  "compilerOptions": {
    "strict": true, "noEmit": true, "noUncheckedIndexedAccess": true, "skipLibCheck": false,
    "target": "ES2022", "module": "ES2022", "moduleResolution": "bundler", "lib": ["ES2022", "DOM"]
  },
  "files": ["walkthrough.ts"]
}
"""


def type_check(tools: Path, document: Path, workdir: Path, source: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Generate ``schema.d.ts`` from ``document`` into ``workdir``, then ``tsc --noEmit`` on ``source`` beside it.

    The generator's output, and tsc's result.
    """
    generated = subprocess.run(
        ["node", str(tools / "node_modules/openapi-typescript/bin/cli.js"), str(document), "-o", "schema.d.ts"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    (workdir / "walkthrough.ts").write_text(source)
    (workdir / "tsconfig.json").write_text(TSCONFIG)
    checked = subprocess.run(
        ["node", str(tools / "node_modules/typescript/bin/tsc"), "-p", "."],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
    )
    return generated.stdout + generated.stderr, checked


def test_the_typescript_client_type_checks_against_the_generated_types(client_tools: Path, tmp_path: Path) -> None:
    output, checked = type_check(client_tools, openapi.OUTPUT, tmp_path, (CLIENTS / "walkthrough.ts").read_text())
    assert "openapi-typescript 7.13.0" in output  # the pinned version ran
    assert not re.search(r"warn|error", output, re.IGNORECASE), output
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_tsc_rejects_a_client_that_switches_on_a_code_the_login_cannot_answer(
    client_tools: Path, tmp_path: Path
) -> None:
    source = (CLIENTS / "walkthrough.ts").read_text()
    wrong = source.replace('case "account_disabled":', 'case "reauthentication_required":', 1)
    assert wrong != source
    _, checked = type_check(client_tools, openapi.OUTPUT, tmp_path, wrong)
    assert checked.returncode != 0
    assert "reauthentication_required" in checked.stdout, checked.stdout
