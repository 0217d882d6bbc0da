"""Where GET /profile's CPU goes, the service against its floor: ``make bench``'s drill-down (see PROFILE.md).

    .venv/bin/python bench/cpu.py load  [--seconds S] [--rounds R] [--concurrency C] [--rate HZ] [--native]
                                        [--detail N] [--gc-off | --gc-stats | --gc-threshold N]
    .venv/bin/python bench/cpu.py steps [--requests N] [--rounds R]
    .venv/bin/python bench/cpu.py calls [--requests N] [--rounds R] [--cprofile] [--gc on|off|freeze]
    .venv/bin/python bench/cpu.py ab    [--base REV] [--seconds S] [--rounds R] [--concurrency 1,8,32]

- ``load``: both servers under wrk while py-spy samples them; every sample in a bucket, µs per request
  (``harness/anatomy.py``; an emulator of its own).
- ``steps``: in one process, no network: ``Api.handle`` end to end with Firestore's reply ready-made, then each step
  the service adds, timed alone (``harness/steps.py``).
- ``calls``: in one process, on an emulator of its own: both ASGI apps, ``authenticate``, ``read_auth`` and the
  floor's bare read, CPU per call (``harness/calls.py``).
- ``ab``: one lever at a time: this tree's service against the same at ``--base`` and the floor, taking turns
  under wrk, ratios to the floor per round (``harness/ab.py``; an emulator of its own, no profiler).

Timings on a shared machine are noisy: compare the rows or columns of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ab, anatomy, calls, steps
from harness.common import OUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    load = modes.add_parser("load", help="py-spy under wrk, samples in buckets")
    load.add_argument("--seconds", type=int, default=8)
    load.add_argument("--rounds", type=int, default=3)
    load.add_argument("--concurrency", type=int, default=32)
    load.add_argument("--native", action="store_true", help="C frames too (GC, gRPC core); pauses each sample")
    load.add_argument("--rate", type=int, default=250, help="samples per second (use ~100 with --native)")
    load.add_argument("--detail", type=int, default=0, help="also list the N frames with most self time")
    gc = load.add_mutually_exclusive_group()
    gc.add_argument("--gc-off", action="store_true", help="both servers with the collector disabled")
    gc.add_argument("--gc-stats", action="store_true", help="count and time every collection in both servers")
    load.add_argument("--gc-threshold", type=int, default=0, help="both servers call gc.set_threshold(N) at start")
    step = modes.add_parser("steps", help="in process, no network: each step of the service alone")
    step.add_argument("--requests", type=int, default=3000)
    step.add_argument("--rounds", type=int, default=5)
    call = modes.add_parser("calls", help="in process, on an emulator: apps, authenticate, read_auth, floor read")
    call.add_argument("--requests", type=int, default=400)
    call.add_argument("--rounds", type=int, default=5)
    call.add_argument("--cprofile", action="store_true", help="where the two apps' time goes")
    call.add_argument("--gc", choices=("on", "off", "freeze"), default="on", help="the collector while measured")
    pair = modes.add_parser("ab", help="this tree's service against itself at --base, and the floor")
    pair.add_argument("--base", default="main", help="the commit to compare with (git archive)")
    pair.add_argument("--seconds", type=int, default=4)
    pair.add_argument("--rounds", type=int, default=5)
    pair.add_argument("--concurrency", default="8,32")
    return parser


def _calls(args: argparse.Namespace) -> int:
    from devtools.launch import Emulator

    with Emulator(log_path=OUT / "emulator-calls.log") as emulator:
        os.environ.update(
            FIRESTORE_EMULATOR_HOST=emulator.host,
            GOOGLE_CLOUD_PROJECT=f"demo-bench-calls-{os.getpid()}",
            SESSION_COOKIE_SECURE="false",
        )
        real_stdout = sys.stdout
        sys.stdout = open(os.devnull, "w")  # the service's request log lines
        try:
            asyncio.run(calls.calls(args.requests, args.rounds, args.cprofile, args.gc))
        finally:
            sys.stdout.close()
            sys.stdout = real_stdout
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    OUT.mkdir(exist_ok=True)
    if args.mode == "load":
        return anatomy.load(args)
    if args.mode == "ab":
        args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        return ab.ab(args)
    if args.mode == "steps":
        return steps.steps_table(args.requests, args.rounds)
    return _calls(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
