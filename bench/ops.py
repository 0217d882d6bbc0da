"""Firestore operations per endpoint, as the service's request log counts them (docs/cost.md's table).

    .venv/bin/python bench/ops.py [--users N]

Starts an emulator and the service as deployed (target ``api``, default settings), then sends each request
once per new user (``--users``, default 3) and sums the ``firestore`` counts of its request log line. Users
stay below the cap on sessions. Prints a Markdown table; a few seconds, no load.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.common import OUT, PASSWORD
from harness.opslog import Ops, count_ops
from harness.processes import Server, call
from harness.scenarios import service_server

from devtools.launch import Emulator, serving

Request = tuple[str, str, dict[str, Any] | None, dict[str, str] | None]  # method, path, body, headers


def _count(server: Server, entry: str, requests: list[Request]) -> tuple[Ops, list[Any]]:
    """Send ``requests`` one by one; their summed counts from the log, and each (status, body, headers)."""
    ranges, answers = [], []
    for method, path, body, headers in requests:
        start = server.log_size()
        answers.append(call(server.base + path, method, body, headers))
        ranges.append((start, server.log_size()))
    return count_ops(server.log_path, ranges, entry), answers


def _device_cookie(headers: dict[str, str]) -> str:
    for raw in headers["set-cookie-all"].split("\n"):
        name, _, rest = raw.partition("=")
        if name.endswith("session-device"):
            return f"{name}={rest.partition(';')[0]}"
    raise RuntimeError("login set no device cookie")


def measure(server: Server, n: int) -> list[tuple[str, Ops, int]]:
    """Each endpoint's (label, summed operations, last status), on ``n`` new users."""
    users = [f"ops-{os.getpid()}-{i}" for i in range(n)]
    rows: list[tuple[str, Ops, int]] = []

    def each(label: str, entry: str, build: Callable[[int], Request]) -> list[Any]:
        ops, answers = _count(server, entry, [build(i) for i in range(n)])
        rows.append((label, ops, answers[-1][0]))
        return answers

    def login(i: int, headers: dict[str, str] | None = None) -> Request:
        return "POST", "/login", {"username": users[i], "password": PASSWORD}, headers

    each("register", "register", lambda i: ("POST", "/register", {"username": users[i], "password": PASSWORD}, None))
    first = each("login, first (no device cookie)", "login", login)
    cookies = [_device_cookie(headers) for _, _, headers in first]
    each("login, trusted browser (its device cookie)", "login", lambda i: login(i, {"Cookie": cookies[i]}))
    tokens = [body["token"] for _, body, _ in first]
    wrong = {"password": "not the password at all"}
    each("login, wrong password", "login", lambda i: ("POST", "/login", {"username": users[i], **wrong}, None))
    each("login, unknown user", "login", lambda i: ("POST", "/login", {"username": f"nobody-{i}", **wrong}, None))

    def auth(i: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[i]}"}

    each("GET /profile (inside the touch interval)", "profile", lambda i: ("GET", "/profile", None, auth(i)))
    each("PATCH /profile", "profile", lambda i: ("PATCH", "/profile", {"display_name": "Ops"}, auth(i)))
    each("GET /sessions", "sessions", lambda i: ("GET", "/sessions", None, auth(i)))
    each(
        "POST /reauthenticate, wrong password", "reauthenticate", lambda i: ("POST", "/reauthenticate", wrong, auth(i))
    )
    rotated = each(
        "POST /reauthenticate (right password)",
        "reauthenticate",
        lambda i: ("POST", "/reauthenticate", {"password": PASSWORD}, auth(i)),
    )
    tokens = [body["token"] for _, body, _ in rotated]
    each("POST /logout", "logout", lambda i: ("POST", "/logout", None, auth(i)))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3)
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_")},
        "GOOGLE_CLOUD_PROJECT": f"demo-bench-ops-{os.getpid()}",
        "WORKERS": "1",
    }
    with Emulator(log_path=OUT / "emulator-ops.log") as emulator:
        server = service_server("ops", {**env, "FIRESTORE_EMULATOR_HOST": emulator.host}).start()
        try:
            server.wait_until(serving(server.base + "/"))
            rows = measure(server, args.users)
        finally:
            server.stop()
    print("| request | status | round trips | reads | writes | deletes |\n|---|---|---|---|---|---|")
    for label, ops, status in rows:
        print(
            f"| {label} | {status} | {ops.per('round_trips'):.2f} | {ops.per('reads'):.2f} "
            f"| {ops.per('writes'):.2f} | {ops.per('deletes'):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
