"""Service vs floor CPU per GET /profile in one process, without the HTTP server: ``make bench``'s drill-down.

    .venv/bin/python bench/inproc.py [--requests N] [--rounds R] [--cprofile] [--gc on|off|freeze]

Starts its own emulator, builds both functions-framework ASGI apps
(``create_asgi_app``: the same middleware as the server, minus uvicorn and h11)
and drives them with httpx2's ASGI transport, one request at a time. The
process CPU time per request (all threads, the client's included and alike
for both) isolates what the service adds to the floor from the HTTP server
and the machine's noise. ``--cprofile`` prints the functions where the
service's extra time goes; ``--gc off`` shows how much of the gap is the
garbage collector (it scales with what each request allocates).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from devtools.launch import Emulator  # noqa: E402

PASSWORD = "correct horse battery staple"  # noqa: S105  (a benchmark user on the emulator)


async def _cpu_per_request(client: Any, headers: dict[str, str], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        resp = await client.get("/profile", headers=headers)
        assert resp.status_code == 200, resp.text
    return 1000 * (time.process_time() - start) / n


async def run(n: int, rounds: int, profile: bool, gc_mode: str) -> None:
    import httpx2
    from functions_framework.aio import create_asgi_app

    service_app = create_asgi_app("api", str(ROOT / "main.py"))
    floor_app = create_asgi_app("floor", str(BENCH / "floor.py"))
    service = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=service_app), base_url="http://service")
    floor = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=floor_app), base_url="http://floor")
    body = {"username": "bench", "password": PASSWORD}
    assert (await service.post("/register", json=body)).status_code == 201
    token = (await service.post("/login", json=body)).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for client in (service, floor):  # warm up: clients, channels, lazy imports
        await _cpu_per_request(client, headers, 100)
    if gc_mode == "off":
        gc.disable()
    elif gc_mode == "freeze":
        gc.freeze()
    results: dict[str, list[float]] = {"service": [], "floor": []}
    for _ in range(rounds):
        results["service"].append(await _cpu_per_request(service, headers, n))
        results["floor"].append(await _cpu_per_request(floor, headers, n))
    print(
        f"CPU ms per GET /profile in-process, {n} requests x {rounds} rounds, gc {gc_mode} (median [min-max]):",
        file=sys.stderr,
    )
    for name, values in results.items():
        print(f"  {name}: {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]", file=sys.stderr)
    gap = statistics.median(results["service"]) - statistics.median(results["floor"])
    ratio = statistics.median(results["service"]) / statistics.median(results["floor"])
    print(f"  service - floor: {gap:.3f} ms, service / floor: {ratio:.2f}", file=sys.stderr)
    if profile:
        for name, client in (("service", service), ("floor", floor)):
            prof = cProfile.Profile()
            prof.enable()
            await _cpu_per_request(client, headers, n)
            prof.disable()
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            stats.sort_stats("cumtime").print_stats(r"session/|logging|main\.py|floor\.py|retry|copy\.py|importlib", 30)
            print(f"\n== cProfile, {name}, {n} requests, by cumulative time", file=sys.stderr)
            print(out.getvalue(), file=sys.stderr)
    await service.aclose()
    await floor.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument(
        "--gc", choices=("on", "off", "freeze"), default="on", help="the collector during the measured rounds"
    )
    args = parser.parse_args(argv)
    with Emulator() as emulator:
        os.environ.update(
            FIRESTORE_EMULATOR_HOST=emulator.host,
            GOOGLE_CLOUD_PROJECT=f"demo-bench-inproc-{os.getpid()}",
            SESSION_COOKIE_SECURE="false",
        )
        real_stdout = sys.stdout
        sys.stdout = open(os.devnull, "w")  # the service's request log lines
        try:
            asyncio.run(run(args.requests, args.rounds, args.cprofile, args.gc))
        finally:
            sys.stdout.close()
            sys.stdout = real_stdout
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
