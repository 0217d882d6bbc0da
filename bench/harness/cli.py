"""The command line of ``make bench`` (``bench/run.py``): check the tools, start everything, measure, report."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from devtools.launch import Emulator

from .common import BENCH, OUT, ROOT, log
from .peers import PEER_NAMES, peer_servers
from .processes import running
from .scenarios import (
    DECORATED,
    FLOOR,
    PROFILE_C,
    SERVICE,
    Bench,
    Config,
    Results,
    cache_setting_known,
    compile_sources,
    fresh_instances,
    import_time_ms,
    login_cost,
    login_latency,
    own_servers,
    prepare,
    profiles,
    read_path,
    require_session_hook,
)
from .tools import Missing, Toolset, preflight

USAGE = """\
make bench: the service against its floor and two peers, in one run on this machine.

    make bench                     (or .venv/bin/python bench/run.py [options])

Starts a Firestore emulator, the service as deployed (main.py, target api,
JSON request logs, default settings), the floor (bench/floor.py), the service
with SESSION_CACHE_SECONDS=30, the same with the lockout out of reach (for the
failed-login rows only), the peers
(bench/peers/) and, once it imports, the @require_session hook
(bench/decorated.py), each in a process group of its own, and always stops
them. Writes the report to stdout and bench/results.md; logs go to bench/out/.
Server settings come from WORKERS and THREADS and are the same for the service
and the floor. Every option has an environment variable, for make.
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seconds", type=int, default=int(env("BENCH_SECONDS", 4)), help="per load run (BENCH_SECONDS)"
    )
    parser.add_argument(
        "--repeats", type=int, default=int(env("BENCH_REPEATS", 5)), help="of every run (BENCH_REPEATS)"
    )
    parser.add_argument(
        "--concurrency", default=env("BENCH_CONCURRENCY", f"1,8,{PROFILE_C}"), help="levels (BENCH_CONCURRENCY)"
    )
    parser.add_argument(
        "--peers", default=env("BENCH_PEERS", "express,aiohttp"), help="peers to run, or empty (BENCH_PEERS)"
    )
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=env("BENCH_PROFILE", "1") != "0",
        help="after the measurements, sample service and floor with py-spy under load (BENCH_PROFILE)",
    )
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if 1 not in args.levels or PROFILE_C not in args.levels:
        parser.error(f"--concurrency must include 1 and {PROFILE_C}")
    args.peer_set = frozenset(p.strip() for p in args.peers.split(",") if p.strip())
    if not args.peer_set <= PEER_NAMES.keys():
        parser.error(f"--peers: choose among {', '.join(PEER_NAMES)}")
    if args.repeats < 1 or args.seconds < 1:
        parser.error("--repeats and --seconds must be at least 1")
    return args


def server_settings() -> tuple[str, str]:
    """WORKERS and THREADS of every server, the service's and the floor's alike: this environment's, or the defaults."""
    return os.environ.get("WORKERS", "1"), os.environ.get("THREADS", str((os.cpu_count() or 1) * 4))


def base_env(project: str, workers: str, threads: str) -> dict[str, str]:
    """The environment of every server: this one without SESSION_*, plus the project and the server settings.

    No SESSION_* variable: the service runs with its default settings, as deployed (the lockout-off
    service of the failed-login rows adds its own, ``scenarios.LENIENT_ENV``).
    """
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_")},
        "GOOGLE_CLOUD_PROJECT": project,
        "WORKERS": workers,
        "THREADS": threads,
    }


def measure(args: argparse.Namespace, tools: Toolset, res: Results, env: dict[str, str]) -> None:
    """Start the emulator and the servers, run every scenario, stop everything."""
    compile_sources()
    res.imports[SERVICE] = import_time_ms("main", ROOT, env, args.repeats)
    res.imports[FLOOR] = import_time_ms("floor", BENCH, env, args.repeats)
    hook_missing = require_session_hook(env)
    if hook_missing is not None:
        res.skipped[DECORATED] = f"`bench/decorated.py` does not import ({hook_missing})"
    log("starting the Firestore emulator")
    with Emulator(log_path=OUT / "emulator.log") as emulator:
        env = {**env, "FIRESTORE_EMULATOR_HOST": emulator.host}
        servers = own_servers(env, with_decorated=hook_missing is None)
        servers += peer_servers(args.peer_set, tools.peer_python, env)
        with running(servers):
            log("servers up: " + ", ".join(f"{s.name} :{s.port}" for s in servers))
            bench = Bench(res.config, env, res, servers)
            prepare(bench)
            log("what a login costs, below the cap on sessions")
            login_cost(bench)
            log("fresh instances: cold start and memory")
            fresh_instances(bench)
            read_path(bench)
            login_latency(bench)
            if args.profile:
                profiles(bench)


def main(argv: list[str]) -> int:
    began = time.monotonic()
    args = parse_args(argv)
    try:
        tools = preflight(args.peer_set, args.profile)
    except Missing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.log"):
        old.unlink()
    workers, threads = server_settings()
    config = Config(args.seconds, args.repeats, args.levels, args.profile, tools.pyspy)
    res = Results(datetime.now(UTC), config, workers, threads, os.getloadavg())
    res.cache_setting_known = cache_setting_known()
    res.notes += [f"peer not run: {PEER_NAMES[p]} (BENCH_PEERS)" for p in PEER_NAMES if p not in args.peer_set]
    try:
        measure(args, tools, res, base_env(f"demo-bench-{os.getpid()}", workers, threads))
    except Missing as exc:  # a peer's packages could not be installed
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    res.load_after = os.getloadavg()

    from .headline import headline
    from .report import render

    res.elapsed_s = time.monotonic() - began
    report = render(res)
    print(report)
    args.output.write_text(report)
    log(f"wrote {args.output}")
    print("\n".join(headline(res)), file=sys.stderr)
    log(f"make bench took {res.elapsed_s / 60:.1f} min")
    return 0
