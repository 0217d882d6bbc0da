"""Firestore work done for one request, as the store counts it (what is billed and what is waited for)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(slots=True)
class OpCounts:
    """Firestore work done on behalf of one request (what is billed and what is waited for)."""

    round_trips: int = 0
    reads: int = 0
    writes: int = 0
    deletes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"round_trips": self.round_trips, "reads": self.reads, "writes": self.writes, "deletes": self.deletes}


# Set by the HTTP layer for each request; the store adds to it.
current_ops: contextvars.ContextVar[OpCounts | None] = contextvars.ContextVar("current_ops", default=None)


def count(round_trips: int = 0, reads: int = 0, writes: int = 0, deletes: int = 0) -> None:
    ops = current_ops.get()
    if ops is not None:
        ops.round_trips += round_trips
        ops.reads += reads
        ops.writes += writes
        ops.deletes += deletes
