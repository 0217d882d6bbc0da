"""``bench/cpu.py calls``: the service against its floor in one process, on a real emulator, without an HTTP server.

Both functions-framework ASGI apps (``create_asgi_app``: the same middleware as the
server, minus uvicorn and h11) are driven through httpx2's ASGI transport one request
at a time, beside the session check's own layers and the floor's bare read:

- ``service app`` and ``floor app``: GET /profile through each app;
- ``authenticate``: ``SessionService.authenticate`` (token parse, the batched read, the rules, validated records);
- ``read_auth``: the store's batched read alone;
- ``floor read``: ``AsyncClient.get_all`` of the same two documents, then ``to_dict``.

Process CPU per call (all threads: the client's share is alike for every case) isolates
what the service adds to the floor from the HTTP server and the machine's noise.
``cprofile`` prints where the two apps' time goes; ``gc`` ("off", "freeze") shows how much
of the gap is the garbage collector (it scales with what each request allocates).
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import statistics
import sys
from typing import Any

from .common import BENCH, PASSWORD, ROOT
from .cputime import ATimed, median_range, us_rounds


async def _apps() -> tuple[Any, Any, dict[str, str], str]:
    """The two apps' clients, the bearer header and the token of a user registered through the service."""
    import httpx2
    from functions_framework.aio import create_asgi_app

    service = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_asgi_app("api", str(ROOT / "main.py"))), base_url="http://service"
    )
    floor = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_asgi_app("floor", str(BENCH / "floor.py"))), base_url="http://floor"
    )
    body = {"username": "bench", "password": PASSWORD}
    assert (await service.post("/register", json=body)).status_code == 201
    token = (await service.post("/login", json=body)).json()["token"]
    return service, floor, {"Authorization": f"Bearer {token}"}, token


def _get_profile(client: Any, headers: dict[str, str]) -> ATimed:
    async def get() -> None:
        resp = await client.get("/profile", headers=headers)
        assert resp.status_code == 200, resp.text

    return get


def _cases(runtime: Any, token: str, apps: dict[str, ATimed]) -> dict[str, ATimed]:
    """The apps, then the session check's layers and the floor's read of the same two documents."""
    from session import tokens

    parsed = tokens.parse(token)
    assert parsed is not None
    settings, store = runtime.settings, runtime.store
    client = store.client()
    refs = [
        client.collection(settings.sessions_collection).document(parsed.token_hash),
        client.collection(settings.users_collection).document(parsed.username),
    ]

    async def floor_read() -> object:
        return [snap.to_dict() async for snap in client.get_all(refs)]

    return {
        **apps,
        "authenticate": lambda: runtime.service.authenticate(token),
        "read_auth": lambda: store.read_auth(parsed.username, parsed.token_hash),
        "floor read": floor_read,
    }


async def _cprofile(apps: dict[str, ATimed], n: int) -> None:
    for name, get in apps.items():
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await get()
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumtime").print_stats(r"session/|logging|main\.py|floor\.py|retry|copy\.py|importlib", 30)
        print(f"\n== cProfile, {name}, {n} requests, by cumulative time\n{out.getvalue()}", file=sys.stderr)


async def calls(n: int, rounds: int, profile: bool, gc_mode: str) -> None:
    """Time every case for ``rounds`` rounds of ``n`` calls; print median [min-max] CPU ms per call (stderr)."""
    from session.runtime import build

    service, floor, headers, token = await _apps()
    apps = {"service app": _get_profile(service, headers), "floor app": _get_profile(floor, headers)}
    runtime = build()
    cases = _cases(runtime, token, apps)
    await us_rounds(cases, 100, 1)  # warm up: clients, channels, lazy imports
    if gc_mode == "off":
        gc.disable()
    elif gc_mode == "freeze":
        gc.freeze()
    results = await us_rounds(cases, n, rounds)
    print(f"CPU ms per call in process, {n} calls x {rounds} rounds, gc {gc_mode} (median [min-max]):", file=sys.stderr)
    for name, values in results.items():
        print(f"  {name:>12}: {median_range([v / 1000 for v in values])}", file=sys.stderr)
    median = {name: statistics.median(v) for name, v in results.items()}
    print(f"  service app / floor app: {median['service app'] / median['floor app']:.2f}", file=sys.stderr)
    print(f"  authenticate / floor read: {median['authenticate'] / median['floor read']:.2f}", file=sys.stderr)
    if profile:
        await _cprofile(apps, n)
    await runtime.store.close()
    await service.aclose()
    await floor.aclose()
