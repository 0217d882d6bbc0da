"""Preconditions or transactions for the read-decide-write paths? One password change, three ways, on the emulator.

    .venv/bin/python bench/consistency.py [--runs N] [--writers 32] [--tx-attempts 5] [--json PATH]

Each variant changes one user's password N times in a row, first alone, then while
``--writers`` threads run PATCH-like updates of the same user document (``display_name``
and ``version``, under a ``last_update_time`` precondition, re-read and retried on a
conflict), the way ``PATCH /profile`` does:

- ``today``: one batched read of the user and its ledger, then one batch (the new session,
  the user's new hash and epoch, the ledger reset) under a precondition on the ledger's
  update time, retried by the service's own loop (``session.retry.retrying``);
- ``transaction``: ``async_transactional``: the same two documents read in the
  transaction, the same three writes, retried by the client library on ABORTED;
- ``old``: the design before issue 19: the same batch under a precondition on the *user*
  document's update time, which every profile edit moves.

Round trips, billed reads and writes are counted on the client's RPCs (each call to the
Firestore API is one round trip; a read bills each document asked for, a commit bills its
writes only when it lands). First the storm runs alone (its PATCH rate with nothing else
writing), and ``consistency_probe`` shows what the emulator does when a write, or a second
transaction, meets a document that an open transaction has read; the storm itself is in
``consistency_storm``. The emulator is started here (``devtools.launch.Emulator``) and stopped at
the end; the report is Markdown on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consistency_probe import probe  # noqa: E402
from consistency_storm import Storm  # noqa: E402

from devtools.launch import Emulator  # noqa: E402

PROJECT = "demo-consistency"
USER = "users/bench"
LEDGER = "users/bench/ledger/sessions"


# --- counting what the client sends ------------------------------------------------------------------


@dataclass
class Ops:
    """Firestore work done for one password change (all its attempts)."""

    round_trips: int = 0
    reads: int = 0
    writes: int = 0
    attempts: int = 0
    landed_commits: int = 0


current: contextvars.ContextVar[Ops | None] = contextvars.ContextVar("current", default=None)


def _add(**counts: int) -> None:
    ops = current.get()
    if ops is not None:
        for name, n in counts.items():
            setattr(ops, name, getattr(ops, name) + n)


def instrument(client: Any) -> None:
    """Count every RPC of ``client`` on the ``current`` ``Ops``: one round trip each, reads and landed writes."""
    api = client._firestore_api  # the generated client every read, batch and transaction calls through

    def batch_get(request: Any = None, **kwargs: Any) -> Any:
        _add(round_trips=1, reads=len(request["documents"]))
        return original["batch_get_documents"](request=request, **kwargs)

    async def commit(request: Any = None, **kwargs: Any) -> Any:
        _add(round_trips=1)
        response = await original["commit"](request=request, **kwargs)
        _add(writes=len(request["writes"]), landed_commits=1)
        return response

    async def plain(name: str, request: Any = None, **kwargs: Any) -> Any:
        _add(round_trips=1)
        return await original[name](request=request, **kwargs)

    names = ("batch_get_documents", "commit", "begin_transaction", "rollback")
    original = {name: getattr(api, name) for name in names}
    api.batch_get_documents, api.commit = batch_get, commit
    api.begin_transaction = lambda request=None, **kw: plain("begin_transaction", request, **kw)
    api.rollback = lambda request=None, **kw: plain("rollback", request, **kw)


# --- the three ways to change a password --------------------------------------------------------------


def _refs(client: Any) -> tuple[Any, Any]:
    return client.document(USER), client.document(LEDGER)


def _writes(target: Any, client: Any, snaps: dict[str, Any], on: str | None) -> None:
    """The password change's three writes on ``target`` (a batch or a transaction); ``on``: the precondition."""
    user_ref, ledger_ref = _refs(client)
    user = snaps[USER]
    now = datetime.now(UTC)
    epoch = user.get("auth_epoch") + 1
    session = client.collection("sessions").document()
    target.create(session, {"username": "bench", "auth_epoch": epoch, "created_at": now})
    user_option = client.write_option(last_update_time=user.update_time) if on == "user" else None
    target.update(user_ref, {"password_hash": f"hash-{now.timestamp()}", "auth_epoch": epoch}, option=user_option)
    ledger_option = client.write_option(last_update_time=snaps[LEDGER].update_time) if on == "ledger" else None
    target.update(ledger_ref, {"sessions": [session.id], "changed_at": now}, option=ledger_option)


async def _read(client: Any, transaction: Any = None) -> dict[str, Any]:
    snaps = client.get_all(list(_refs(client)), transaction=transaction)
    return {snap.reference.path: snap async for snap in snaps}


def preconditioned(on: str) -> Callable[[Any, int], Awaitable[None]]:
    """A password change as a batch under a precondition on ``on`` ("ledger": today, "user": the old design)."""
    from google.api_core.exceptions import FailedPrecondition

    from session.retry import retrying
    from session.store import PreconditionFailed

    async def change(client: Any, tries: int) -> None:
        async def write(snaps: dict[str, Any]) -> None:
            _add(attempts=1)
            batch = client.batch()
            _writes(batch, client, snaps, on)
            try:
                await batch.commit()
            except FailedPrecondition as exc:
                raise PreconditionFailed(str(exc)) from exc

        await retrying(await _read(client), write, lambda: _read(client), tries=tries)

    return change


async def transactional(client: Any, tries: int) -> None:
    """A password change in a transaction: read user and ledger in it, write the same documents, no preconditions."""
    from google.cloud.firestore import async_transactional

    @async_transactional
    async def change(transaction: Any) -> None:
        _add(attempts=1)
        _writes(transaction, client, await _read(client, transaction), None)

    await change(client.transaction(max_attempts=tries))


VARIANTS: dict[str, Callable[[Any, int], Awaitable[None]]] = {
    "today": preconditioned("ledger"),
    "transaction": transactional,
    "old": preconditioned("user"),
}


# --- measuring -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    ok: bool
    seconds: float
    ops: Ops
    error: str | None = None


@dataclass
class Row:
    """One variant under one condition: the table's row."""

    variant: str
    condition: str
    runs: int
    ok: int
    attempts: int
    round_trips: float  # per success, every attempt counted (the same for reads and writes)
    reads: float
    writes: float
    p50_ms: float
    p95_ms: float
    patches: int | None = None
    patch_conflicts: int | None = None
    patch_slowest_ms: float | None = None  # the longest single PATCH write call: one queued behind a lock shows here
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


async def one(change: Callable[[Any, int], Awaitable[None]], client: Any, tries: int, limit: float) -> Sample:
    """One password change, timed and counted; a failure (tries used up, a timeout, an error) is a sample too."""
    ops = Ops()
    token = current.set(ops)
    started = time.perf_counter()
    error = None
    try:
        async with asyncio.timeout(limit):
            await change(client, tries)
    except Exception as exc:  # every failure is an outcome to report, not a crash
        error = type(exc).__name__ if exc.__cause__ is None else f"{type(exc).__name__}({type(exc.__cause__).__name__})"
    finally:
        current.reset(token)
    return Sample(error is None, time.perf_counter() - started, ops, error)


def summarize(variant: str, condition: str, samples: list[Sample], seconds: float) -> Row:
    ok = [s for s in samples if s.ok]
    per_ok = max(1, len(ok))
    latencies = sorted(s.seconds * 1000 for s in ok) or [float("nan")]
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return Row(
        variant,
        condition,
        runs=len(samples),
        ok=len(ok),
        attempts=sum(s.ops.attempts for s in samples),
        round_trips=round(sum(s.ops.round_trips for s in samples) / per_ok, 2),
        reads=round(sum(s.ops.reads for s in samples) / per_ok, 2),
        writes=round(sum(s.ops.writes for s in samples) / per_ok, 2),
        p50_ms=round(statistics.median(latencies), 1),
        p95_ms=round(p95, 1),
        seconds=round(seconds, 2),
        errors=dict(Counter(s.error for s in samples if s.error)),
    )


async def series(name: str, client: Any, args: argparse.Namespace, storm: Storm | None) -> Row:
    """``args.runs`` password changes of variant ``name`` in a row, alone or while ``storm`` runs."""
    tries = args.tx_attempts if name == "transaction" else args.tries
    before = storm.snapshot() if storm else (0, 0)
    started = time.monotonic()
    samples = [await one(VARIANTS[name], client, tries, args.timeout) for _ in range(args.runs)]
    elapsed = time.monotonic() - started
    row = summarize(name, f"storm of {storm.writers}" if storm else "alone", samples, elapsed)
    if storm is not None:
        after = storm.snapshot()
        row.patches, row.patch_conflicts = after[0] - before[0], after[1] - before[1]
        row.patch_slowest_ms = round(storm.counts.slowest_write * 1000, 1)
        row.errors.update({f"PATCH {k}": v for k, v in storm.counts.errors.items()})
    return row


async def storm_alone(writers: int, seconds: float) -> Row:
    """The PATCH storm with no password change: how many PATCHes land in ``seconds`` when nothing else writes."""
    with Storm(PROJECT, USER, writers) as storm:
        before = storm.snapshot()
        await asyncio.sleep(seconds)
        after = storm.snapshot()
    nan = float("nan")
    row = Row("(none)", f"storm of {writers}", 0, 0, 0, nan, nan, nan, nan, nan, seconds=seconds)
    row.patches, row.patch_conflicts = after[0] - before[0], after[1] - before[1]
    row.patch_slowest_ms = round(storm.counts.slowest_write * 1000, 1)
    return row


async def seed(client: Any) -> None:
    user, ledger = _refs(client)
    await user.set({"username": "bench", "display_name": "Bench", "version": 1, "password_hash": "h", "auth_epoch": 0})
    await ledger.set({"sessions": [], "changed_at": datetime.now(UTC)})


# --- the report ----------------------------------------------------------------------------------------

COLUMNS = {"variant": "variant", "condition": "condition", "ok": "ok/runs", "attempts": "attempts"}
COLUMNS |= {"round_trips": "RT/ok", "reads": "reads/ok", "writes": "writes/ok", "p50_ms": "p50 ms", "p95_ms": "p95 ms"}
COLUMNS |= {"patches": "PATCHes done: per s, conflicts, slowest write", "errors": "failures"}


def cell(row: Row, key: str) -> str:
    if key == "ok":
        return f"{row.ok}/{row.runs}"
    if key == "patches":
        if row.patches is None:
            return "-"
        rate = row.patches / row.seconds if row.seconds else 0
        return f"{row.patches} in {row.seconds} s: {rate:.1f}/s, {row.patch_conflicts}, {row.patch_slowest_ms} ms"
    if key == "errors":
        return ", ".join(f"{k} x{v}" for k, v in row.errors.items()) or "-"
    return str(getattr(row, key))


def render(rows: list[Row], found: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"runs {args.runs} per row, {args.writers} PATCH writers, retry loop tries {args.tries},"
        f" transaction max_attempts {args.tx_attempts}",
        "",
        "| " + " | ".join(COLUMNS.values()) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(row, key) for key in COLUMNS) + " |" for row in rows]
    lines += ["", "Emulator probes (outcome, ms):", ""]
    for name, findings in found.items():
        lines += [f"- {name}:", *(f"  - {key}: {value}" for key, value in findings.items())]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    from google.cloud.firestore import AsyncClient

    client = AsyncClient(project=PROJECT)
    instrument(client)
    await seed(client)
    found = await probe(client, USER)
    # Warm the emulator's JVM first (discarded): its first seconds are several times slower than the rest.
    await storm_alone(args.writers, args.warmup)
    for name in args.variants:
        await series(name, client, args, None)
    rows = [await storm_alone(args.writers, args.baseline)]
    for name in args.variants:
        rows.append(await series(name, client, args, None))
        with Storm(PROJECT, USER, args.writers) as storm:
            rows.append(await series(name, client, args, storm))
        print(f"[consistency] {name} done", file=sys.stderr, flush=True)
    client.close()
    return rows, found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="password changes per variant and condition")
    parser.add_argument("--writers", type=int, default=32, help="threads in the PATCH storm")
    parser.add_argument("--tries", type=int, default=None, help="precondition retry loop (default: CONFLICT_TRIES)")
    parser.add_argument("--tx-attempts", type=int, default=5, help="the transaction's max_attempts")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before one password change gives up")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of the storm alone, first")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of storm to warm the emulator, discarded")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write the rows and the probe here")
    args = parser.parse_args(argv)
    if args.tries is None:
        from session.retry import CONFLICT_TRIES

        args.tries = CONFLICT_TRIES
    with Emulator() as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        rows, found = asyncio.run(run(args))
    print(render(rows, found, args))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "probe": found}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
