"""The PATCH storm of ``bench/consistency.py``: threads that edit one profile as fast as they can.

Each writer is a thread with its own synchronous client, as a separate instance of the
service would be, and does what ``PATCH /profile`` does: read the user, then update
``display_name`` and ``version`` under a precondition on the update time it read; on a
conflict it reads again and retries. The counts say how many PATCHes landed, how many
lost a race, and the longest single write call (a write queued behind a lock shows there).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StormCounts:
    completed: int = 0
    conflicts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    slowest_write: float = 0.0  # the longest single update call, in seconds (a write queued behind a lock)


class Storm:
    """``writers`` threads, each with its own client, updating the document at ``path`` until stopped."""

    def __init__(self, project: str, path: str, writers: int) -> None:
        self.project, self.path, self.writers = project, path, writers
        self.counts = StormCounts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Storm:
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.writers)]
        for thread in self._threads:
            thread.start()
        time.sleep(0.5)  # every writer is looping before the measured work starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.counts.completed, self.counts.conflicts

    def _run(self, writer: int) -> None:
        from google.api_core import exceptions
        from google.cloud.firestore import Client

        client = Client(project=self.project)
        ref = client.document(self.path)
        n = 0
        while not self._stop.is_set():
            snap = ref.get()
            option = client.write_option(last_update_time=snap.update_time)
            started = time.monotonic()
            try:
                ref.update({"display_name": f"w{writer}-{n}", "version": snap.get("version") + 1}, option=option)
                outcome = "completed"
            except exceptions.FailedPrecondition:
                outcome = "conflicts"
            except exceptions.GoogleAPICallError as exc:
                outcome = type(exc).__name__
            n += 1
            with self._lock:
                self.counts.slowest_write = max(self.counts.slowest_write, time.monotonic() - started)
                if outcome in ("completed", "conflicts"):
                    setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
                else:
                    self.counts.errors[outcome] += 1
        client.close()
