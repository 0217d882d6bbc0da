"""Firestore operations per request, counted from the service's own request log.

Every request writes one ``session.request`` line whose ``firestore`` field
counts the round trips, reads, writes and deletes it did; a ``Phase`` knows
which bytes of the server's log its requests wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Firestore list prices (USD per 100,000 operations), an assumption: check the current price list.
PRICE_PER_100K = {"reads": 0.06, "writes": 0.18, "deletes": 0.02}


@dataclass
class Ops:
    """Summed Firestore work of a set of requests."""

    requests: int = 0
    round_trips: int = 0
    reads: int = 0
    writes: int = 0
    deletes: int = 0
    max_round_trips: int = 0
    with_writes: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def per(self, name: str) -> float:
        return getattr(self, name) / self.requests if self.requests else float("nan")

    def cost_per_million(self) -> float:
        return sum(self.per(kind) * 1e6 / 1e5 * price for kind, price in PRICE_PER_100K.items())

    def add(self, record: dict[str, object]) -> None:
        fs = record.get("firestore")
        counts = fs if isinstance(fs, dict) else {}
        self.requests += 1
        self.round_trips += counts.get("round_trips", 0)
        self.reads += counts.get("reads", 0)
        self.writes += counts.get("writes", 0)
        self.deletes += counts.get("deletes", 0)
        self.max_round_trips = max(self.max_round_trips, counts.get("round_trips", 0))
        self.with_writes += counts.get("writes", 0) > 0
        code = str(record.get("code"))
        self.codes[code] = self.codes.get(code, 0) + 1


def _request_lines(chunk: bytes, entry_point: str) -> list[dict[str, object]]:
    records = []
    for line in chunk.splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        labels = rec.get("logging.googleapis.com/labels", {})
        if labels.get("python_logger") == "session.request" and rec.get("entry_point") == entry_point:
            records.append(rec)
    return records


def count_ops(log_path: Path, ranges: list[tuple[int, int]], entry_point: str) -> Ops:
    """Sum the ``firestore`` counts of the ``session.request`` lines for ``entry_point`` in the byte ``ranges``."""
    ops = Ops()
    with open(log_path, "rb") as f:
        for start, end in ranges:
            f.seek(start)
            for rec in _request_lines(f.read(end - start), entry_point):
                ops.add(rec)
    return ops
