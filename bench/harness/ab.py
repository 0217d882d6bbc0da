"""``cpu.py ab``: one lever at a time, the service at this tree against itself at another commit, and the floor.

The three servers (this working tree's ``main.py``, the same at ``--base``, the floor) run on one emulator with
the same settings, taking turns under wrk in rotating order, round after round. Every figure is a per-round ratio
to the floor, measured back to back, so the two services are compared within one run on a shared machine; the load
average is printed beside them. No profiler is attached: it would compete for the two CPUs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from devtools.launch import Emulator

from .common import OUT, PASSWORD, ROOT, log
from .load import Phase, wrk
from .processes import Server, call, functions_framework, running
from .scenarios import FLOOR, floor_server, service_server

HEAD, BASE = "this tree", "base"


def export(rev: str) -> Path:
    """``rev`` of this repository as a plain tree in a temporary directory (``git archive``: no worktree).

    Outside the repository, so that no linter or test collector of this tree finds a second copy.
    """
    target = Path(tempfile.gettempdir()) / f"session-bench-ab-{os.getpid()}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _token(server: Server, user: str) -> dict[str, str]:
    status, body, _ = call(f"{server.base}/login", "POST", {"username": user, "password": PASSWORD})
    if status != 200:
        raise RuntimeError(f"login on {server.name}: {status} {body}")
    return {"Authorization": f"Bearer {body['token']}"}


def _median_ratio(mine: list[Phase], floor: list[Phase], attr: str) -> str:
    ratios = [getattr(a, attr) / getattr(b, attr) for a, b in zip(mine, floor, strict=True)]
    return f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"


def ab(args: argparse.Namespace) -> int:
    """Run the rounds; print per-level ratios to the floor of both services, with the load average."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_")},
        "GOOGLE_CLOUD_PROJECT": f"demo-bench-ab-{os.getpid()}",
        "WORKERS": os.environ.get("WORKERS", "1"),
        "THREADS": os.environ.get("THREADS", str((os.cpu_count() or 1) * 4)),
    }
    base_tree = export(args.base)
    load_before = os.getloadavg()
    with Emulator(log_path=OUT / "emulator-ab.log") as emulator:
        env["FIRESTORE_EMULATOR_HOST"] = emulator.host
        head = service_server(HEAD.replace(" ", "-"), env)
        base = functions_framework(BASE, "api", base_tree / "main.py", {**env, "PYTHONPATH": str(base_tree)})
        base.cwd = base_tree
        floor = floor_server(FLOOR, env)
        servers = [head, base, floor]
        with running(servers):
            status, body, _ = call(f"{head.base}/register", "POST", {"username": "ab-user", "password": PASSWORD})
            if status != 201:
                raise RuntimeError(f"register: {status} {body}")
            phases: dict[tuple[str, int], list[Phase]] = {}
            for server in servers:  # warm-up
                wrk(server, "/profile", 8, 1, _token(head, "ab-user"))
            for rnd in range(args.rounds):
                order = servers[rnd % 3 :] + servers[: rnd % 3]
                for level in args.levels:
                    for server in order:
                        log(f"round {rnd + 1}/{args.rounds}: {server.name} at concurrency {level}")
                        phase = wrk(server, "/profile", level, args.seconds, _token(head, "ab-user"))
                        phases.setdefault((server.name, level), []).append(phase)
    shutil.rmtree(base_tree, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"base: {args.base}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print("| server / floor | level | CPU per request | req/s | p50 |\n|---|---|---|---|---|")
    for level in args.levels:
        floor_runs = phases[(FLOOR, level)]
        for server in (head, base):
            runs = phases[(server.name, level)]
            print(
                f"| {server.name} | c={level} | {_median_ratio(runs, floor_runs, 'cpu_ms_per_req')} | "
                f"{_median_ratio(runs, floor_runs, 'rps')} | {_median_ratio(runs, floor_runs, 'p50_ms')} |"
            )
    return 0
