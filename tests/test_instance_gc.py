"""After its first response an instance freezes what cold start allocated and collects its young objects less often.

Requests free nearly everything they allocate by reference counting; with CPython's default threshold (700) the
collector swept the live objects of every request in flight every couple of requests, for almost nothing freed
(bench/PROFILE.md, issue 26). Checked in a fresh interpreter: the test process's own collector is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from session.http import GC_YOUNG_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, json
from functions_framework import create_app
from starlette.testclient import TestClient

before = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
with TestClient(create_app("api", "main.py")) as client:
    status = client.get("/profile").status_code  # no credential: a 401, and still the instance's first response
after = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
print(json.dumps({"status": status, "before": before, "after": after}))
"""


def test_the_first_response_freezes_and_raises_the_young_threshold() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env["GOOGLE_CLOUD_PROJECT"] = "demo-gc"
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 401
    assert result["before"]["threshold"][0] == 700  # CPython's default until then: cold start is not slowed
    assert result["before"]["frozen"] == 0
    young, older, oldest = result["after"]["threshold"]
    assert young == GC_YOUNG_THRESHOLD
    assert (older, oldest) == tuple(result["before"]["threshold"][1:])  # the older generations keep theirs
    assert result["after"]["frozen"] > 10_000  # the imports and clients of cold start
