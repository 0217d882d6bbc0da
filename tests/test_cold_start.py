"""Cold start: what ``import main`` and a profile request load, so that a heavy import cannot creep back in.

A new instance pays for every module it imports before its first answer (issue 26, part 3). Each module
below is needed only by some other request, or by no request at all: it must be imported on first use.
Each test runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from session import tokens

ROOT = Path(__file__).resolve().parent.parent

# (module prefix, who needs it): none is loaded by `import main`, nor by a profile request.
NOT_FOR_A_PROFILE = [
    ("joserfc", "DBSC: device-bound session registration and refresh (session/dbsc.py)"),
    ("ua_parser", "device names for the sessions list (session/devices.py)"),
    ("email_validator", "a new or changed e-mail address (session/models.py)"),
    ("google.cloud.logging", "nothing: session/logs.py writes Cloud Logging's JSON lines itself"),
    ("google.cloud.pubsub", "security events on Pub/Sub, only with SESSION_EVENTS_TOPIC (session/publish.py)"),
    ("session.cli", "the admin command line"),
    ("session.commands", "the admin command line"),
]
# session.dbsc itself is not listed: every check of a session asks session.binding whether it is bound, which
# names the bound cookie dbsc declares. It imports only the standard library; joserfc, above, waits for a proof.
# Loaded on a profile request's first use, never at import: the client library is the floor's cost too.
FIRST_USE = [
    ("google.cloud.firestore", "the store, on the first request"),
    ("google.api_core", "the store's retries and error translation, on the first request"),
    ("grpc", "the Firestore client's transport, on the first request"),
    ("cryptography", "google-auth, which the Firestore client imports (DBSC's joserfc uses it too)"),
    ("opentelemetry", "the Firestore client's tracing hooks"),
]

PROBE = """
import asyncio, json, sys
import main
from starlette.requests import Request

loaded_at_import = sorted(sys.modules)
token = sys.argv[1]


async def profile() -> int:
    scope = {
        "type": "http", "method": "GET", "path": "/profile", "raw_path": b"/profile", "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode())], "client": ("127.0.0.1", 1),
        "server": ("testserver", 80), "scheme": "http", "http_version": "1.1", "root_path": "",
    }
    response = await main.api_instance.handle(Request(scope))
    await main.api_instance.runtime.store.close()
    return response.status_code


status = asyncio.run(profile())
print(json.dumps({"status": status, "at_import": loaded_at_import, "after_profile": sorted(sys.modules)}))
"""


def _loaded(names: list[str], prefix: str) -> list[str]:
    return [name for name in names if name == prefix or name.startswith(prefix + ".")]


@pytest.fixture(scope="module")
def probe(emulator_host: str) -> dict[str, object]:
    """One fresh interpreter: ``import main``, then a GET /profile with a well-formed token of no session."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_")},
        "FIRESTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": "demo-cold-start",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, tokens.mint("alice")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(("prefix", "needed_by"), NOT_FOR_A_PROFILE + FIRST_USE)
def test_import_main_leaves_it_out(probe: dict[str, object], prefix: str, needed_by: str) -> None:
    at_import = probe["at_import"]
    assert isinstance(at_import, list)
    assert not _loaded(at_import, prefix), f"{prefix} is imported by `import main`; it serves {needed_by}"


@pytest.mark.parametrize(("prefix", "needed_by"), NOT_FOR_A_PROFILE)
def test_a_profile_request_leaves_it_out(probe: dict[str, object], prefix: str, needed_by: str) -> None:
    assert probe["status"] == 401  # the token names no session: the whole read path ran, the store said no
    after = probe["after_profile"]
    assert isinstance(after, list)
    assert not _loaded(after, prefix), f"{prefix} is imported by a profile request; it serves {needed_by}"


def test_the_profile_request_did_load_the_store(probe: dict[str, object]) -> None:
    """The probe is real: its request went through the Firestore client (else the test above proves nothing)."""
    after = probe["after_profile"]
    assert isinstance(after, list)
    assert _loaded(after, "google.cloud.firestore")


def test_pydantic_looks_for_no_plugins_unless_asked() -> None:
    """main.py spares cold start pydantic's scan of every installed distribution's entry points (about 35 ms)."""
    probe = (
        "import main, json\n"
        "from pydantic.plugin import _loader\n"
        "from session.models import ProfileUpdateRequest\n"
        "ProfileUpdateRequest(display_name='x')\n"
        "print(json.dumps(_loader._plugins is None))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) is True  # never scanned
    asked = {**env, "PYDANTIC_DISABLE_PLUGINS": ""}  # an operator who wants their plugins gets them
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=asked, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) is False
