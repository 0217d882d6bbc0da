"""The lockout: every proof of a password is a guess, counted before it is judged.

**The counting rule.** A failed-login counter holds the guesses judged wrong, plus the guesses
in flight, and nothing else:

- a guess is counted (``Increment``, whose result orders a burst) before its password is judged,
  so parallel guesses past the limit are refused without being judged;
- a guess refused at the limit, unjudged, is given back at once;
- a right password gives its guess back in the commit that opens its session;
- a guess whose request ends without a verdict (a lost race, 503, a fault) is given back too.

So right passwords never use up the limit, and a burst of wrong ones is judged at most the limit.

Which counter judges a guess: the username's, or, when the request presents the device cookie
of a device the user trusts (minted under the current credentials), that device's own counter
alone, so that an attacker who locks the username cannot lock its owner's browsers out. With the
per-address limit on, a guess without a trusted device is also counted on the client address's
counter, and refused if either refuses it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from session import errors, liveness, plan, tokens
from session.clock import Clock, seconds_until
from session.config import Settings
from session.models import AttemptsRecord
from session.opening import Guess, holds
from session.plan import Doc, Plan
from session.retry import CONFLICT_TRIES, TRIES, retrying
from session.security_log import event
from session.store import AccountView, CountedGuess, PreconditionFailed, Store, StoreError, Versioned
from session.store.base import counted_guess_of


@dataclass(frozen=True, slots=True)
class PresentedDevice:
    """A device cookie presented for the user it names: the cookie and the hash that keys its document."""

    token: str
    device_hash: str


@dataclass(frozen=True, slots=True)
class Counted:
    """A guess counted on the counters that will judge it, and the account read in the same round trip."""

    guess: Guess
    view: AccountView
    trusted: bool  # judged on a trusted device's own counter
    device: PresentedDevice | None  # the presented cookie, when it names this user


class Lockout:
    """Counting, judging and giving back guesses."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._window = timedelta(seconds=settings.login_window_seconds)
        self._address_window = timedelta(seconds=settings.address_window_seconds)

    def presented(self, username: str, cookie: str | None) -> PresentedDevice | None:
        """The device cookie, if it names ``username`` (another user's counts as none)."""
        parsed = tokens.parse_device(cookie) if cookie else None
        if cookie is None or parsed is None or parsed.username != username:
            return None
        return PresentedDevice(cookie, parsed.token_hash)

    async def count(self, username: str, cookie: str | None, address: str | None, now: datetime) -> Counted:
        """Count a guess on the counters that will judge it, reading the account (and device) meanwhile.

        Without a device cookie naming ``username``: one round trip counts on the username's counter
        (and the address's) and reads the user and its ledger. With one: one round trip counts on that
        device's counter and reads the user, the ledger and the device; only if the device is not a
        trusted one, a second round trip counts on the username's (and the address's) counters, still
        before anything is judged.
        """
        shared = [(tokens.counter_key(username), now + self._window)]
        if address is not None and self.settings.address_max_failures > 0:
            shared.append((tokens.address_counter_key(address), now + self._address_window))
        device = self.presented(username, cookie)
        if device is not None:
            own = [(tokens.device_counter_key(device.device_hash), now + self._window)]
            guesses, view = await self.store.reserve_and_read_login(own, now, username, device.device_hash)
            user = view.user.record if view.user else None
            stored = view.device.record if view.device else None
            if liveness.device_trusted(stored, user, now):
                return Counted(Guess(guesses[0]), view, trusted=True, device=device)
            known = user is not None and liveness.device_known(stored, user, now)
            guesses = await self.store.reserve_attempts(shared, now)
            return Counted(_guess(guesses), view, trusted=False, device=device if known else None)
        guesses, view = await self.store.reserve_and_read_login(shared, now, username, None)
        return Counted(_guess(guesses), view, trusted=False, device=None)

    async def judge(self, counted: Counted, now: datetime) -> Guess:
        """Decide on a counted guess before its password is checked; raises ``TooManyAttempts`` past a limit.

        A refused guess is given back (on every counter it was counted on) before the 429.
        """
        guess = counted.guess
        try:
            if counted.trusted:
                first = await self._judge(guess.counted, now, self.settings.device_max_failures, "device")
            else:
                first = await self._judge(guess.counted, now, self.settings.login_max_failures, "username")
            also = guess.also
            if also is not None:  # judged after the username's: each guess refused by either is refused
                limit = self.settings.address_max_failures
                also = await self._judge(also, now, limit, "address", window=self._address_window)
        except errors.TooManyAttempts:
            await self.give_back(guess)
            raise
        return Guess(first, also)

    async def _judge(
        self, guess: CountedGuess, now: datetime, limit: int, counter: str, *, window: timedelta | None = None
    ) -> CountedGuess:
        """One counter's verdict: start a new window if the old one is over, refuse the guess past ``limit``."""
        window = self._window if window is None else window
        basis: CountedGuess | None = guess
        for _ in range(TRIES):
            if guess.window_start + window > now:
                break
            try:  # the window is over: this guess starts the next one, unless another request did
                if basis is not None:
                    guess = await self.store.restart_attempts(basis, now, now + window)
                    break
            except PreconditionFailed:
                pass
            # Somebody wrote since: look (without counting again, which would fail every other restart);
            # count this guess again only once a new window has begun.
            basis = await self.store.read_attempts(guess.key)
            if basis is None or basis.window_start + window > now:
                guess = await self.store.reserve_attempt(guess.key, now, now + window)
                basis = guess
        if guess.count > limit or guess.window_start + window <= now:
            retry_after = seconds_until(guess.window_start + window - now)
            event(
                "login_locked_out",
                logging.WARNING,
                username_key=guess.key[:12],
                retry_after=retry_after,
                counter=counter,
            )
            raise errors.TooManyAttempts(retry_after, f"too many failed logins; try again in {retry_after} s")
        return guess

    async def give_back(self, guess: Guess) -> None:
        """Take a guess that got no verdict off its counters (best effort; a gone counter is left gone).

        Each counter is read, then taken down by one under a precondition on it as read, and only while it
        can still hold this guess (the same window: not made again, nor restarted, since). So a give-back
        never lands in a newer window, where it would let one more guess of a burst be judged, is applied at
        most once even when its answer is lost, and never takes a counter below zero. Concurrent give-backs
        take turns (``retrying``). Never raises: a counter that cannot be written now keeps the guess until
        its window ends (erring towards the lockout).
        """
        for mine in (guess.counted, guess.also):
            if mine is None:
                continue
            try:
                await self._give_back_one(mine)
            except (StoreError, errors.SessionError):
                pass

    async def _give_back_one(self, mine: CountedGuess) -> None:
        returned = secrets.token_hex(8)  # marks this give-back: a resend that had landed is recognised

        async def read() -> Versioned[AttemptsRecord] | None:
            return await self.store.read_counter(mine.key)

        async def take_one(found: Versioned[AttemptsRecord] | None) -> None:
            if found is None or found.record.count <= 0 or found.record.returned == returned:
                return  # gone, nothing left in it, or this give-back landed though its answer was lost
            if not holds(counted_guess_of(mine.key, found), mine):
                return  # made again or restarted since this guess: not this guess's any more
            change = plan.decrement(Doc.counter(mine.key), found.update_time, returned=returned)
            await self.store.commit(Plan((change,)))

        await retrying(await read(), take_one, read, tries=CONFLICT_TRIES)


def _guess(guesses: list[CountedGuess]) -> Guess:
    return Guess(guesses[0], guesses[1] if len(guesses) > 1 else None)
