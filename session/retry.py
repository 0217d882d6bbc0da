"""The one loop around a write that a concurrent change can make fail, and its one answer when tries run out."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from session import errors
from session.store import AlreadyExists, PreconditionFailed

S = TypeVar("S")
T = TypeVar("T")

# How often a write is tried while concurrent changes keep failing its precondition. Parallel logins
# of one user take turns on its ledger, one per round: this is also the burst a user absorbs without a 503.
# Every other commit on the ledger (revoke-all, ending a device's trust, an admin's change that ends the
# sessions) takes its turn among those logins, so it gets as many tries: with fewer, a storm of logins by
# someone holding the password could make the owner's revocation answer 503 (5 tries lost to 12 threads in
# 2 runs of 3).
CONFLICT_TRIES = 64
# Tries for a write that only the user's own rare changes can disturb (a profile edit, an admin's change that
# ends no session).
TRIES = 5
# The longest wait between two tries, in seconds.
MAX_WAIT = 0.05


async def retrying(
    state: S,
    write: Callable[[S], Awaitable[T]],
    reread: Callable[[], Awaitable[S]],
    give_up: Callable[[], errors.SessionError] | None = None,
    *,
    tries: int = TRIES,
) -> T:
    """Run ``write(state)``; when a concurrent change fails its precondition, read again and retry.

    ``write`` re-checks every rule against the state it is given, so a retry is decided on
    what is stored now, never on what was read before the conflict. Between tries it waits a
    random few milliseconds, more each time, so that writers colliding on one document spread
    out. After ``tries`` conflicts in a row it raises ``give_up()`` (by default 503: the
    request may simply be sent again).
    """
    for attempt in range(tries):
        try:
            return await write(state)
        except (PreconditionFailed, AlreadyExists):
            await asyncio.sleep(random.uniform(0, min(MAX_WAIT, 0.003 * (attempt + 1))))
            state = await reread()
    raise (give_up or kept_changing)()


def kept_changing() -> errors.SessionError:
    """The answer when tries run out: 503 with Retry-After, nothing written."""
    return errors.ServiceUnavailable(1, "the account kept changing; try again")
