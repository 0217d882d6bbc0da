"""The session check alone against the floor's bare read, in one process: ``make bench``'s drill-down.

    .venv/bin/python bench/authcost.py [--calls N] [--rounds R]

Starts its own emulator, registers and logs in one user, then measures the
process CPU per call (client side included, alike for all three) of:
``floor`` (``AsyncClient.get_all`` of the session and user documents, then
``to_dict``), ``authenticate`` (``SessionService.authenticate``: token parsing,
the same batched read, expiry, user and revocation checks, validated records)
and ``read_auth`` (the store's batched read alone). No HTTP server, no logging.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from devtools.launch import Emulator  # noqa: E402

PASSWORD = "correct horse battery staple"  # noqa: S105  (a benchmark user on the emulator)


async def _measure(calls: int, rounds: int) -> dict[str, list[float]]:
    from google.cloud.firestore import AsyncClient

    from session import tokens
    from session.config import load_settings
    from session.models import LoginRequest, RegisterRequest
    from session.service import SessionService
    from session.store import FirestoreStore

    settings = load_settings()
    service = SessionService(settings, FirestoreStore(settings))
    await service.register(RegisterRequest(username="bench", password=PASSWORD))
    token = (await service.login(LoginRequest(username="bench", password=PASSWORD))).token
    parsed = tokens.parse(token)
    assert parsed is not None
    client = AsyncClient(project=settings.project)
    refs = [client.collection("sessions").document(parsed.token_hash), client.collection("users").document("bench")]

    async def floor() -> Any:
        return [snap.to_dict() async for snap in client.get_all(refs)]

    async def authenticate() -> Any:
        return await service.authenticate(token)

    async def read_auth() -> Any:
        return await service.store.read_auth(parsed.username, parsed.token_hash)

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "floor": floor,
        "authenticate": authenticate,
        "read_auth": read_auth,
    }
    for case in cases.values():  # warm up
        for _ in range(50):
            await case()
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            start = time.process_time()
            for _ in range(calls):
                await case()
            results[name].append((time.process_time() - start) / calls * 1000)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with Emulator() as emulator:
        os.environ.update(FIRESTORE_EMULATOR_HOST=emulator.host, GOOGLE_CLOUD_PROJECT="demo-bench-authcost")
        results = asyncio.run(_measure(args.calls, args.rounds))
    print(f"CPU ms per call, {args.calls} calls x {args.rounds} rounds (median [min-max]):")
    for name, values in results.items():
        print(f"  {name:>12}: {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]")
    ratio = statistics.median(results["authenticate"]) / statistics.median(results["floor"])
    print(f"  authenticate / floor: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
