"""The failed-login counters: counted with a transform whose result orders a burst, read, restarted, deleted."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from session.models import AttemptsRecord
from session.store.base import CountedGuess, StoreUnavailable, Versioned, counted_guess_of
from session.store.client import Client, _data
from session.store.ops import count as _count
from session.store.ops import current_ops

if TYPE_CHECKING:
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference
    from google.cloud.firestore_v1.base_document import DocumentSnapshot


class Counters(Client):
    """The failed-login counters: counted with a transform whose result orders a burst, read, restarted, deleted."""

    async def reserve_attempt(self, key: str, now: datetime, expires_at: datetime) -> CountedGuess:
        """Count one guess on counter ``key`` and return the count this guess got, atomically (``reserve_attempts``)."""
        (guess,) = await self.reserve_attempts([(key, expires_at)], now)
        return guess

    async def reserve_attempts(self, counters: Sequence[tuple[str, datetime]], now: datetime) -> list[CountedGuess]:
        """Count one guess on each counter ``(key, expires_at)`` and return the counts they got, in one commit.

        Per counter, two server-side transforms: ``count`` is incremented and
        ``window_start`` (seconds since the epoch) becomes the minimum of its value
        and ``now``; the commit returns both results. A missing counter is created.

        A transform applied twice counts a guess twice, so this commit is sent at most once (no
        resend by the client library). When its answer is lost, the counters are read: each carries
        the random ``guess`` id of the last commit that counted on it, so a commit that landed (and
        nobody counted since) is recognised and its counts read back; otherwise ``StoreUnavailable``
        (the guess may be counted: a 503, erring towards the lockout).
        """
        from google.cloud.firestore import Increment, Minimum
        from google.cloud.firestore_v1 import _helpers

        guess_id = secrets.token_hex(8)
        batch = self.client().batch()
        for key, expires_at in counters:
            batch.set(
                self._attempts(key),
                {
                    "count": Increment(1),
                    "window_start": Minimum(now.timestamp()),
                    "expires_at": expires_at,
                    "guess": guess_id,
                },
                merge=True,
            )
        try:
            results = await self._call(batch.commit(retry=None, timeout=self._deadline))
        except StoreUnavailable:
            return await self._landed_guesses([key for key, _ in counters], guess_id)
        finally:
            _count(round_trips=1, writes=len(counters))
        guesses = []
        for (key, _), result in zip(counters, results, strict=True):
            # Transform results come in the order of their field paths: count, window_start.
            values: list[Any] = [_helpers.decode_value(v, self.client()) for v in result.transform_results]
            count, window_start = values
            start = datetime.fromtimestamp(float(window_start), UTC)
            guesses.append(CountedGuess(key, int(count), start, result.update_time))
        return guesses

    async def read_counter(self, key: str) -> Versioned[AttemptsRecord] | None:
        ref = self._attempts(key)
        return self._versioned(AttemptsRecord, (await self._get_all([ref])).get(ref.path))

    async def _landed_guesses(self, keys: list[str], guess_id: str) -> list[CountedGuess]:
        """The counts a counting commit whose answer was lost got, if it landed and nobody counted since."""
        refs = [self._attempts(key) for key in keys]
        snaps = await self._get_all(refs)
        guesses = []
        for key, ref in zip(keys, refs, strict=True):
            snap = snaps.get(ref.path)
            data = _data(snap) if snap is not None and snap.exists else None
            if data is None or data.get("guess") != guess_id or snap is None or snap.update_time is None:
                raise StoreUnavailable("the counting commit's outcome is unknown")
            found = self._versioned(AttemptsRecord, snap)
            assert found is not None
            guesses.append(counted_guess_of(key, found))
        return guesses

    async def _reserve_and_get(
        self, counters: Sequence[tuple[str, datetime]], now: datetime, refs: list[AsyncDocumentReference]
    ) -> tuple[list[CountedGuess], dict[str, DocumentSnapshot[Any]]]:
        """``reserve_attempts`` and a batched read of ``refs``, sent together: one round trip to wait for.

        The counts are committed before this returns, whatever the read did.
        """
        reserve = asyncio.ensure_future(self.reserve_attempts(counters, now))
        try:
            snaps = await self._get_all(refs)
        finally:
            guesses = await reserve
        ops = current_ops.get()
        if ops is not None:
            ops.round_trips -= 1  # the two calls overlapped: one wait, not two
        return guesses, snaps

    async def restart_attempts(self, guess: CountedGuess, now: datetime, expires_at: datetime) -> CountedGuess:
        """Start a new window with this guess as its first, if nobody counted since ``guess``.

        Raises ``PreconditionFailed`` when somebody did.
        """
        ref = self._attempts(guess.key)
        option = self._precondition_time(guess.update_time)
        record = AttemptsRecord(count=1, window_start=now.timestamp(), expires_at=expires_at)
        try:
            result = await self._call(
                ref.update(record.model_dump(), option=option, retry=self._write_retry, timeout=self._deadline)
            )
        finally:
            _count(round_trips=1, writes=1)
        return CountedGuess(guess.key, 1, now, result.update_time)

    async def read_attempts(self, key: str) -> CountedGuess | None:
        """Counter ``key`` as it is now, without counting; ``None`` if there is none."""
        ref = self._attempts(key)
        snap = (await self._get_all([ref])).get(ref.path)
        found = self._versioned(AttemptsRecord, snap)
        return counted_guess_of(key, found) if found is not None else None

    async def delete_attempts(self, key: str) -> None:
        """Delete counter ``key``; a missing one is not an error."""
        await self._call(self._attempts(key).delete(retry=self._write_retry, timeout=self._deadline))
        _count(round_trips=1, deletes=1)
