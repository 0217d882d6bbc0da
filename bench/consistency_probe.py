"""What the Firestore emulator does when writers meet a transaction's lock (for ``bench/consistency.py``).

Two probes on one document, each a transaction with ``max_attempts=1`` so that an abort shows:

- ``outside``: a transaction reads the document, then a plain write of it (under an update-time
  precondition, as a profile PATCH sends it) starts; the transaction holds on for ``hold`` seconds
  and commits. Does the write wait for the lock (queue), fail at once, or abort the transaction?
- ``two_transactions``: transaction A reads, then B reads, then A writes and commits while B is
  still open, then B writes and commits. Does A wait for B's shared lock, is B aborted (wounded),
  or do both land?
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any


async def timed(pending: Awaitable[Any]) -> tuple[str, float]:
    """The outcome of ``pending`` ("ok" or the exception's class, with its cause) and how long it took, in ms."""
    started = time.perf_counter()
    try:
        await pending
        outcome = "ok"
    except Exception as exc:  # the outcome is what the probe reports
        cause = f"({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
        outcome = type(exc).__name__ + cause
    return outcome, round((time.perf_counter() - started) * 1000, 1)


async def read_in(txn: Any, ref: Any) -> list[Any]:
    """Read ``ref`` in the transaction ``txn``.

    Through the client: ``AsyncTransaction.get(document)`` raises TypeError in google-cloud-firestore
    2.34.1 (it awaits the async generator that ``AsyncClient.get_all`` returns).
    """
    return [snap async for snap in txn._client.get_all([ref], transaction=txn)]


async def outside(client: Any, path: str, hold: float) -> dict[str, Any]:
    from google.cloud.firestore import async_transactional

    ref = client.document(path)
    found: dict[str, Any] = {}
    pending: list[asyncio.Task[tuple[str, float]]] = []

    @async_transactional
    async def transaction(txn: Any) -> None:
        await read_in(txn, ref)
        found["plain read of it meanwhile"] = await timed(ref.get())
        snap = await ref.get()
        option = client.write_option(last_update_time=snap.update_time)
        pending.append(asyncio.create_task(timed(ref.update({"display_name": "probe"}, option=option))))
        done, _ = await asyncio.wait(pending, timeout=hold)
        found[f"plain write finished within {hold} s"] = bool(done)
        txn.update(ref, {"probe": "outside"})

    found["transaction commit"] = await timed(transaction(client.transaction(max_attempts=1)))
    if pending:
        found["plain write (outcome, ms from its start)"] = await pending[0]
    return found


async def two_transactions(client: Any, path: str, hold: float) -> dict[str, Any]:
    from google.cloud.firestore import async_transactional

    ref = client.document(path)
    found: dict[str, Any] = {}
    a_read, b_read, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @async_transactional
    async def first(txn: Any) -> None:
        await read_in(txn, ref)
        a_read.set()
        await asyncio.wait([asyncio.create_task(b_read.wait())], timeout=hold)  # B's read may wait for A
        txn.update(ref, {"probe": "A"})

    @async_transactional
    async def second(txn: Any) -> None:
        await a_read.wait()
        found["B's read, while A holds its read"] = await timed(read_in(txn, ref))
        b_read.set()
        await asyncio.wait([asyncio.create_task(a_done.wait())], timeout=hold)
        txn.update(ref, {"probe": "B"})

    async def run_first() -> tuple[str, float]:
        try:
            return await timed(first(client.transaction(max_attempts=1)))
        finally:
            a_done.set()

    a, b = await asyncio.gather(run_first(), timed(second(client.transaction(max_attempts=1))))
    stored = (await ref.get()).get("probe")
    found.update({"A (read first, commits first)": a, "B (read second, commits after A)": b, "stored": stored})
    return found


async def probe(client: Any, path: str, hold: float = 1.0) -> dict[str, Any]:
    """Both probes on the document at ``path`` (which must exist); their findings by name."""
    return {
        "outside write vs open transaction": await outside(client, path, hold),
        "two transactions": await two_transactions(client, path, hold),
    }
