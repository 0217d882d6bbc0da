"""Load soak: mixed traffic against a `make run` server, with latency, errors, lost sessions and memory.

    python scripts/soak.py                          own emulator + `make run`, concurrency 32 for 60 s
    python scripts/soak.py --concurrency 8 --duration 20
    python scripts/soak.py --base-url http://127.0.0.1:8080 [--server-pid PID]   a server already running
    python scripts/soak.py --faults 0.05            through the fault proxy, then `python -m session audit`

(``SOAK_CONCURRENCY``, ``SOAK_DURATION`` and ``SOAK_URL`` set the same.) Each
worker owns one account and repeats a cycle: log in, read the profile, update it
with If-Match, read it again, list sessions, log out. It reports the request
count, errors by status, p50/p99 latency per kind and overall, and the RSS of the
server's process tree (from /proc) at the start and the end. Exit 0 only with
no 5xx, no transport error, no lost session (a token refused before its own
logout), and RSS in the last quarter of the run under 110% of the first quarter.
Traffic goes to loopback only, and stops at the deadline.

``--faults RATE`` (``make soak FAULTS=0.05``; own emulator only) puts the fault proxy of
the test suite (``tests/faultproxy.py``) between the server and its emulator, cutting that
share of Firestore calls after the request went upstream. Then 503 answers are expected
and allowed (500s are not); the report adds how many cuts happened, and once the load
stops, ``python -m session audit`` runs straight on the emulator: the soak fails if it
finds anything that needs attention.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devtools.launch import Emulator, make_run, tree_rss_kib
from tests.faultproxy import FaultProxy

PROJECT = "demo-session-soak"

PASSWORD = "soak " + secrets.token_hex(8)


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    lost_sessions: list[str] = field(default_factory=list)
    # Answers that deny a change that happened: 409 to a worker's own fresh name, 412 to its own version.
    denied: list[str] = field(default_factory=list)
    sessions_opened: int = 0
    sessions_closed: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _request(
    http: httpx.AsyncClient, stats: Stats, kind: str, method: str, path: str, **kwargs: object
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await http.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        stats.transport_errors[f"{kind}: {type(exc).__name__}"] += 1
        return None
    stats.latencies[kind].append(time.perf_counter() - started)
    stats.statuses[(kind, response.status_code)] += 1
    return response


async def _worker(base: str, index: int, stop_at: float, stats: Stats) -> None:
    username = f"soak-{index}-{secrets.token_hex(4)}"
    credentials = {"username": username, "password": PASSWORD}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        registered = await _request(http, stats, "register", "POST", "/register", json=credentials)
        if registered is not None and registered.status_code == 409:  # the name is this worker's own, and fresh
            stats.denied.append(f"{username}: register answered 409, yet the name was free (its own write landed)")
        cycle = 0
        while time.monotonic() < stop_at:
            cycle += 1
            login = await _request(http, stats, "login", "POST", "/login", json=credentials)
            if login is None or login.status_code != 200:
                await asyncio.sleep(0.2)
                continue
            stats.sessions_opened += 1
            auth = {"Authorization": f"Bearer {login.json()['token']}"}
            lost = False
            steps: list[tuple[str, str, str, dict[str, object]]] = [
                ("profile_get", "GET", "/profile", {}),
                ("profile_patch", "PATCH", "/profile", {"json": {"display_name": f"cycle {cycle}"}}),
                ("profile_get", "GET", "/profile", {}),
                ("sessions_get", "GET", "/sessions", {}),
                ("profile_get", "GET", "/profile", {}),
            ]
            etag: str | None = None
            for kind, method, path, extra in steps:
                headers = dict(auth)
                if kind == "profile_patch" and etag:
                    headers["If-Match"] = etag
                response = await _request(http, stats, kind, method, path, headers=headers, **extra)
                if response is None:
                    continue
                if kind == "profile_patch" and response.status_code == 412 and etag:
                    # Nobody else writes this account: did the refused change land after all?
                    check = await _request(http, stats, "profile_check", "GET", "/profile", headers=dict(auth))
                    body = check.json() if check is not None and check.status_code == 200 else {}
                    if body.get("version") == int(etag.strip('"')) + 1 and body.get("display_name") == f"cycle {cycle}":
                        stats.denied.append(f"{username} cycle {cycle}: PATCH answered 412, yet it landed")
                if response.status_code == 401:
                    stats.lost_sessions.append(f"{username} cycle {cycle}: {kind} answered 401 before logout")
                    lost = True
                    break
                etag = response.headers.get("etag", etag)
            if lost:
                continue
            logout = await _request(http, stats, "logout", "POST", "/logout", headers=auth)
            if logout is not None and logout.status_code == 204:
                stats.sessions_closed += 1
                after = await _request(http, stats, "after_logout", "GET", "/profile", headers=auth)
                if after is not None and after.status_code == 200:  # a 503 (under faults) says nothing
                    stats.lost_sessions.append(f"{username} cycle {cycle}: token still works after logout")


async def _sample_rss(pid: int, stop_at: float, stats: Stats, started: float) -> None:
    while time.monotonic() < stop_at:
        stats.rss.append((time.monotonic() - started, tree_rss_kib(pid)))
        await asyncio.sleep(1.0)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def soak(base: str, concurrency: int, duration: float, pid: int | None) -> tuple[Stats, float]:
    stats = Stats()
    started = time.monotonic()
    stop_at = started + duration
    tasks = [asyncio.create_task(_worker(base, i, stop_at, stats)) for i in range(concurrency)]
    if pid is not None:
        tasks.append(asyncio.create_task(_sample_rss(pid, stop_at, stats, started)))
    await asyncio.gather(*tasks)
    if pid is not None:
        stats.rss.append((time.monotonic() - started, tree_rss_kib(pid)))
    return stats, time.monotonic() - started


def report(stats: Stats, elapsed: float, concurrency: int, duration: float, *, faults: bool = False) -> bool:
    """Print the figures; True when the soak passes (with ``faults``, 503 answers are allowed)."""
    everything = [x for values in stats.latencies.values() for x in values]
    total = sum(stats.statuses.values())
    print(f"\nsoak: concurrency {concurrency}, {duration:g} s planned, {elapsed:.1f} s run")
    print(f"requests: {total} ({total / elapsed:.1f}/s), transport errors: {sum(stats.transport_errors.values())}")
    print(f"sessions: {stats.sessions_opened} opened, {stats.sessions_closed} closed by logout")
    by_status = Counter(status for (_, status), n in stats.statuses.items() for _ in range(n))
    print("status counts: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
    errors = {k: n for k, n in stats.statuses.items() if k[1] >= 400 and not (k[0] == "after_logout" and k[1] == 401)}
    print("errors by status: " + (", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(errors.items())) or "none"))
    print(f"latency overall: p50 {_pct(everything, 0.5) * 1000:.1f} ms, p99 {_pct(everything, 0.99) * 1000:.1f} ms")
    for kind in sorted(stats.latencies):
        values = stats.latencies[kind]
        print(
            f"  {kind:<14} n={len(values):<7} p50 {_pct(values, 0.5) * 1000:7.1f} ms"
            f"  p99 {_pct(values, 0.99) * 1000:7.1f} ms"
        )
    for line in list(dict.fromkeys(stats.lost_sessions))[:10]:
        print(f"LOST: {line}")
    for name, n in stats.transport_errors.items():
        print(f"TRANSPORT: {name}: {n}")

    ok = True
    five_xx = sum(n for (_, s), n in stats.statuses.items() if s >= 500 and not (faults and s == 503))
    if five_xx:
        print(f"FAIL: {five_xx} responses were 5xx" + (" other than 503" if faults else ""))
        ok = False
    if stats.transport_errors:
        print("FAIL: transport errors")
        ok = False
    if stats.lost_sessions:
        print(f"FAIL: {len(stats.lost_sessions)} lost sessions")
        ok = False
    if stats.rss:
        first_t, last_t = stats.rss[0][0], stats.rss[-1][0]
        span = max(last_t - first_t, 1e-9)
        q1 = [kib for t, kib in stats.rss if t <= first_t + span / 4]
        q4 = [kib for t, kib in stats.rss if t >= last_t - span / 4]
        first_q, last_q = statistics.mean(q1), statistics.mean(q4)
        growth = (last_q - first_q) / first_q * 100
        print(
            f"server RSS (process tree): start {stats.rss[0][1] / 1024:.1f} MiB, end {stats.rss[-1][1] / 1024:.1f} MiB;"
            f" first-quarter mean {first_q / 1024:.1f} MiB, last-quarter mean {last_q / 1024:.1f} MiB,"
            f" growth {growth:+.1f}%"
        )
        if growth >= 10:
            print("FAIL: RSS grew by 10% or more between the first and last quarter")
            ok = False
    else:
        print("server RSS: not measured (give --server-pid for a server started elsewhere)")
    if total == 0:
        print("FAIL: no request was answered")
        ok = False
    print("PASS" if ok else "FAIL")
    return ok


def audit(emulator_host: str) -> bool:
    """``python -m session audit`` straight on the emulator; prints its lines; True when nothing needs attention."""
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": PROJECT}
    log = Path(tempfile.gettempdir()) / f"session-soak-audit-{os.getpid()}.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "session", "--log-file", str(log), "audit"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    print("\naudit (straight on the emulator, after the load):")
    print(result.stdout.rstrip())
    if result.returncode != 0:
        print(result.stderr.rstrip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}")
        print("FAIL: the audit found something that needs attention")
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("SOAK_URL"), help="a running server (loopback only)")
    parser.add_argument("--server-pid", type=int, default=None, help="its process, for RSS (with --base-url)")
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("SOAK_CONCURRENCY", "32")))
    parser.add_argument("--duration", type=float, default=float(os.environ.get("SOAK_DURATION", "60")))
    parser.add_argument(
        "--faults",
        type=float,
        default=float(os.environ.get("FAULTS") or 0),
        metavar="RATE",
        help="share of Firestore calls the fault proxy cuts (0 to 1; own emulator only)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 512 or not 1 <= args.duration <= 3600:
        parser.error("concurrency must be 1..512 and duration 1..3600 s")
    if not 0 <= args.faults <= 1 or (args.faults and args.base_url):
        parser.error("--faults is a rate from 0 to 1, and needs the soak's own emulator (no --base-url)")

    proxy: FaultProxy | None = None
    with ExitStack() as stack:
        if args.base_url:
            base, pid = args.base_url.rstrip("/"), args.server_pid
        else:
            emulator = stack.enter_context(Emulator())
            store_host = emulator.host
            if args.faults:
                proxy = stack.enter_context(FaultProxy(emulator.host))
                store_host = proxy.host
            server = stack.enter_context(
                make_run({"FIRESTORE_EMULATOR_HOST": store_host, "GOOGLE_CLOUD_PROJECT": PROJECT})
            )
            base, pid = server.base, server.proc.pid
            print(f"server {base} (log {server.log_path}), emulator {emulator.host}", flush=True)
            # A fresh emulator answers its first calls slowly: warm it up before measuring.
            with httpx.Client(base_url=base, timeout=30) as http:
                for _ in range(20):
                    if http.post("/login", json={"username": "warm-up", "password": "x"}).status_code != 503:
                        break
        if not _loopback(base):
            parser.error(f"{base} is not a loopback address: the soak only drives a local server")
        if proxy is not None:
            proxy.cut_rate = args.faults  # after the warm-up: the load alone meets the cuts
        stats, elapsed = asyncio.run(soak(base, args.concurrency, args.duration, pid))
        ok = report(stats, elapsed, args.concurrency, args.duration, faults=proxy is not None)
        if proxy is not None:
            proxy.cut_rate = 0.0
            print(
                f"faults: {proxy.stats.cuts} cut(s) of {proxy.stats.requests} Firestore call(s)"
                f" (rate {args.faults:g}), {proxy.stats.connections} connection(s)"
            )
            locked = stats.statuses[("login", 429)]  # every worker sends its right password only
            broken = len(set(stats.lost_sessions)) + len(stats.denied) + locked
            print(
                f"broken promises: {broken} ({len(set(stats.lost_sessions))} lost sessions or tokens alive after"
                f" logout, {len(stats.denied)} changes that landed but were answered 4xx, {locked} right passwords"
                " answered 429)"
            )
            for line in stats.denied[:10]:
                print(f"DENIED: {line}")
            ok = audit(emulator.host) and ok and broken == 0
            print(f"soak under faults: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
