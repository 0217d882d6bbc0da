"""The per-instance session cache behind ``SESSION_CACHE_SECONDS`` (bounded staleness).

An entry is what ``SessionService.authenticate`` last read from the store for one
token: the session, its user, and when this instance read them (a monotonic
time, so a wall-clock step cannot stretch the bound). It is keyed by the token's
hash, which only the token's holder can produce, so an entry is never found
through anybody else's credential. The rules (how old an entry may be, expiry,
the touch) live in ``session.service``; this module only keeps entries.

Bounded in entries (least recently used first out), and indexed by user so
that a revocation made through this instance can drop every entry of a user
at once. A revocation also moves ``revision`` on, so that a read that was in
flight while it happened cannot put what it read back in afterwards. Every
method takes a lock: the guard may run the service on a second event loop thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from session.models import SessionRecord, UserRecord
from session.store import Versioned


@dataclass(frozen=True, slots=True)
class Entry:
    """One token's session and user, as this instance last read them at ``read_at`` (monotonic seconds)."""

    session: SessionRecord
    user: Versioned[UserRecord]
    read_at: float


class SessionCache:
    """An LRU of ``Entry`` by token hash, at most ``size`` entries, with a per-user index for eviction."""

    def __init__(self, size: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError("a cache holds at least one entry")
        self.size = size
        self.monotonic = monotonic
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        # Moved on by every revocation (forget, forget_user); see put.
        self.revision = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: str) -> Entry | None:
        """The entry for ``token_hash``, marked as most recently used; ``None`` if there is none."""
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is not None:
                self._entries.move_to_end(token_hash)
            return entry

    def put(
        self, token_hash: str, session: SessionRecord, user: Versioned[UserRecord], read_at: float, revision: int
    ) -> bool:
        """Keep what was read at ``read_at`` for ``token_hash``, dropping the least recently used beyond ``size``.

        ``revision`` is the value of ``self.revision`` from before the read was sent: if a
        revocation happened since, the read may predate it, so nothing is kept (False).
        """
        with self._lock:
            if revision != self.revision:
                return False
            self._drop(token_hash)
            self._entries[token_hash] = Entry(session, user, read_at)
            self._by_user.setdefault(session.user_id, set()).add(token_hash)
            while len(self._entries) > self.size:
                self._drop(next(iter(self._entries)))
            return True

    def touched(self, token_hash: str, last_seen_at: datetime, expires_at: datetime) -> None:
        """Record a touch in an entry, keeping when it was read: a write proves nothing about the user."""
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is not None:
                session = entry.session.model_copy(update={"last_seen_at": last_seen_at, "expires_at": expires_at})
                self._entries[token_hash] = Entry(session, entry.user, entry.read_at)

    def drop(self, token_hash: str) -> None:
        """Forget one token's entry because it is too old or expired (not a revocation)."""
        with self._lock:
            self._drop(token_hash)

    def forget(self, token_hash: str) -> None:
        """A revocation of one session: forget its entry, and any read of it in flight."""
        with self._lock:
            self.revision += 1
            self._drop(token_hash)

    def forget_user(self, user_id: str) -> None:
        """A change to a user (revoke-all, password, profile, disable): forget its entries and reads in flight."""
        with self._lock:
            self.revision += 1
            for token_hash in list(self._by_user.get(user_id, ())):
                self._drop(token_hash)

    def _drop(self, token_hash: str) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is None:
            return
        hashes = self._by_user.get(entry.session.user_id)
        if hashes is not None:
            hashes.discard(token_hash)
            if not hashes:
                del self._by_user[entry.session.user_id]
