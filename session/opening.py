"""The commit that opens a session, and the account's ledger that keeps it honest.

Every commit that opens a session (a login, a password change, a re-authentication) is one
``Plan`` under a precondition on the account's ledger (``users/{name}/ledger/sessions``) as it
was read together with the user whose credentials were verified. Every change of credentials
writes that ledger in its own commit, so the precondition fails, and no session is opened, when
the password, the enablement or the epoch changed meanwhile. Profile edits do not touch the
ledger: a storm of them cannot starve a proof of the password.

The same commit adds the session's entry to the ledger (the cap on sessions), the device's
entry (the bound on trusted devices), gives the counted guess back, and writes the device.
On a conflict the account is read again and the plan rebuilt from what is stored now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from session import binding, liveness, plan, room, tokens
from session.activity import Activity
from session.clock import Clock
from session.config import Settings
from session.context import Origin
from session.events import EventRecord, EventType
from session.models import DeviceRecord, LedgerRecord, SessionRecord, UserChange, UserRecord
from session.plan import Doc, Plan, Write
from session.retry import CONFLICT_TRIES, retrying
from session.store import AccountView, CountedGuess, Store, StoreUnavailable, Versioned


class CredentialsChanged(Exception):
    """The user's password, enablement or epoch changed (or the replaced session ended) while opening a session."""


@dataclass(frozen=True, slots=True)
class DeviceUse:
    """The device cookie a commit trusts: minted now (``stored`` None) or the stored one, renewed as needed."""

    token: str
    device_hash: str
    created_at: datetime
    stored: DeviceRecord | None  # the device's document as read with the guess

    @property
    def known(self) -> bool:
        return self.stored is not None


@dataclass(frozen=True, slots=True)
class Guess:
    """The counted guesses of a proof of the password, to be given back when it succeeds."""

    counted: CountedGuess  # on the counter that judged it (the username's or the trusted device's)
    also: CountedGuess | None = None  # on the client address's counter, when that limit is on

    def counter_keys(self) -> list[str]:
        return [self.counted.key, *([self.also.key] if self.also else [])]


@dataclass(frozen=True, slots=True)
class Opening:
    """What a commit that opens a session carries besides the session itself."""

    user: Versioned[UserRecord]  # as verified
    ledger: Versioned[LedgerRecord] | None  # read in the same snapshot as ``user``
    origin: Origin  # where the request came from: stored on the session and its event
    guess: Guess
    device: DeviceUse | None = None
    new_password_hash: str | None = None  # a password change: the epoch moves on, every other session ends
    rehash: str | None = None  # the same password under current hashing parameters
    replaces: str | None = None  # a re-authentication: this session ends in the same commit


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    token_hash: str
    record: SessionRecord


@dataclass(frozen=True, slots=True)
class Opened:
    """A committed opening: the session, the ledger's bounds kept, its event, and the device's expiry."""

    new: NewSession
    ledger: LedgerPlan
    event: EventRecord
    device_expires_at: datetime | None  # when the device cookie's trust ends now (renewed or not)


@dataclass(frozen=True, slots=True)
class _State:
    """The account as last read, and what that read says about the counters."""

    user: Versioned[UserRecord]
    ledger: Versioned[LedgerRecord] | None
    counters: dict[str, CountedGuess | None]  # None: the counter is gone (nothing to give back)
    device: DeviceRecord | None  # the presented device's document as read (None: none, or minted now)
    landed: bool = False


@dataclass(frozen=True, slots=True)
class LedgerPlan:
    """The ledger a commit writes, and the sessions and devices it ends to stay within the bounds."""

    write: tuple[Write, ...]
    evicted_sessions: tuple[str, ...] = ()
    evicted_devices: tuple[str, ...] = ()


class Opener:
    """Builds and commits the plans that open sessions and change credentials."""

    def __init__(self, settings: Settings, store: Store, clock: Clock, activity: Activity) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.activity = activity
        self._ttl = timedelta(seconds=settings.ttl_seconds)
        self._idle = timedelta(seconds=settings.idle_seconds)
        self._device_lifetime = timedelta(days=settings.device_cookie_days)

    # --- sessions -----------------------------------------------------------------------------------

    def new_session(self, user: UserRecord, origin: Origin, epoch: int) -> NewSession:
        """A fresh token and its session record, not yet stored."""
        now = self.clock()
        token = tokens.mint(user.username)
        token_hash = tokens.hash_token(token)
        absolute = now + self._ttl
        record = SessionRecord(
            user_id=user.user_id,
            username=user.username,
            public_id=tokens.public_id(token_hash),
            created_at=now,
            last_seen_at=now,
            absolute_expires_at=absolute,
            expires_at=min(now + self._idle, absolute),
            user_agent=origin.user_agent or None,  # cleaned and capped at the HTTP edge
            device=origin.device,
            network=origin.network,
            place=origin.place,
            auth_epoch=epoch,
            auth_time=now,  # every new session is opened by a proof of the password
            dbsc=binding.initial_state(self.settings, token, now),  # its DBSC registration, in the same write
        )
        return NewSession(token, token_hash, record)

    async def open(self, opening: Opening) -> Opened:
        """Commit a new session, and its security event, while the credentials verified in ``opening`` are current.

        Raises ``CredentialsChanged`` when they are not (no session exists then), ``ServiceUnavailable``
        when the account kept changing, ``StoreUnavailable`` when the outcome cannot be known. A commit
        whose answer was lost but which landed is recognised by its session, and counts as done.
        """
        epoch = opening.user.record.auth_epoch + (1 if opening.new_password_hash else 0)
        new = self.new_session(opening.user.record, opening.origin, epoch)
        event = self._event(opening, new)
        counted = [g for g in (opening.guess.counted, opening.guess.also) if g is not None]
        stored = opening.device.stored if opening.device is not None else None
        first = _State(opening.user, opening.ledger, {g.key: g for g in counted}, device=stored)
        done: list[tuple[LedgerPlan, datetime | None]] = []

        async def attempt(state: _State) -> None:
            if state.landed:
                return
            ledger = await self._ledger_plan(opening, state, new)
            device_write, expires_at = self._device_write(opening.device, state, epoch, opening.origin.device)
            try:
                await self.store.commit(self._plan(opening, state, new, ledger, epoch, device_write, event))
            except StoreUnavailable:
                if not (await self._reread(opening, new)).landed:
                    raise
            done.append((ledger, expires_at))

        await retrying(first, attempt, lambda: self._reread(opening, new), tries=CONFLICT_TRIES)
        ledger, expires_at = done[-1] if done else (LedgerPlan(()), None)
        if expires_at is None and opening.device is not None:  # landed unseen: as the first try would have
            expires_at = self._device_write(opening.device, first, epoch, None)[1]
        return Opened(new, ledger, event, expires_at)

    def _event(self, opening: Opening, new: NewSession) -> EventRecord:
        """The opening's event: a password change, a re-authentication, or a login (from a known device or not)."""
        kind: EventType
        if opening.new_password_hash is not None:
            kind = "password_changed"
        elif opening.replaces is not None:
            kind = "reauthenticated"
        elif opening.device is not None and opening.device.known:
            kind = "login"
        else:
            kind = "login_new_device"
        return self.activity.event(opening.user.record, kind, opening.origin, session_hash=new.token_hash)

    def _plan(
        self,
        opening: Opening,
        state: _State,
        new: NewSession,
        ledger: LedgerPlan,
        epoch: int,
        device_write: Write | None,
        event: EventRecord,
    ) -> Plan:
        username = state.user.record.username
        now = self.clock()
        user_change = None
        if opening.new_password_hash is not None:
            user_change = UserChange(password_hash=opening.new_password_hash, auth_epoch=epoch, updated_at=now)
        elif opening.rehash is not None:
            user_change = UserChange(password_hash=opening.rehash, updated_at=now)
        writes: list[Write | None] = [
            plan.create(Doc.session(new.token_hash), new.record),
            plan.update(Doc.user(username), user_change) if user_change is not None else None,
            *ledger.write,
            *(plan.delete(Doc.session(h)) for h in ledger.evicted_sessions),
            *(plan.delete(Doc.device(username, h)) for h in ledger.evicted_devices),
            plan.delete(Doc.session(opening.replaces), must_exist=True) if opening.replaces else None,
            device_write,
            *self._give_back(opening.guess, state),
            self.activity.write(event),
        ]
        return Plan().then(*writes)

    def _device_write(
        self, device: DeviceUse | None, state: _State, epoch: int, name: str | None
    ) -> tuple[Write | None, datetime | None]:
        """The device's write, if any, and when its trust ends after this commit.

        A stored device of this epoch with more than half its lifetime left is not written at all (a
        login from a trusted browser then writes 3 documents: the counter, the session, the ledger,
        which records the use); otherwise it is renewed and re-stamped. A device the proof presented
        that was ended meanwhile (revoked, evicted, expired) stays ended: nothing is written, and the
        answer clears its cookie. A new device is written whole.
        """
        if device is None or not _kept(device, state):
            return None, None
        now = self.clock()
        expires_at = now + self._device_lifetime
        username = state.user.record.username
        stored = state.device
        if stored is not None:
            if stored.auth_epoch == epoch and stored.expires_at - now > self._device_lifetime / 2:
                return None, stored.expires_at
            fields = {"auth_epoch": epoch, "expires_at": expires_at}
            return plan.update(Doc.device(username, device.device_hash), fields), expires_at
        record = DeviceRecord(
            user_id=state.user.record.user_id,
            created_at=device.created_at,
            expires_at=expires_at,
            auth_epoch=epoch,
            device=name,
        )
        return plan.put(Doc.device(username, device.device_hash), record), expires_at

    @staticmethod
    def _give_back(guess: Guess, state: _State) -> list[Write]:
        """The counted guesses, given back.

        The judging counter (the username's or the device's) is deleted if nobody counted on it since: the owner
        proved the password. Otherwise, and always for the address's counter (other users' guesses from that
        address stay), the guess is taken off by one.
        """
        writes = []
        for mine, clears in ((guess.counted, True), (guess.also, False)):
            if mine is None:
                continue
            now = state.counters.get(mine.key)
            if now is None or not holds(now, mine):
                continue  # gone, or made again since (a success cleared it, its window ended): not this guess's
            if clears and now.update_time == mine.update_time:
                writes.append(plan.delete(Doc.counter(mine.key), now.update_time))
            else:
                writes.append(plan.decrement(Doc.counter(mine.key)))
        return writes

    async def _reread(self, opening: Opening, new: NewSession) -> _State:
        """The account as stored now; raises ``CredentialsChanged`` when it no longer accepts this opening."""
        username = opening.user.record.username
        device = opening.device.device_hash if opening.device is not None and opening.device.known else None
        view: AccountView = await self.store.read_account(
            username,
            sessions=[new.token_hash, *([opening.replaces] if opening.replaces else [])],
            device=device,
            counters=opening.guess.counter_keys(),
        )
        if new.token_hash in view.sessions:  # an earlier try landed though its answer was lost
            return _State(opening.user, view.ledger, {}, None, landed=True)
        if view.user is None or not liveness.same_credentials(opening.user.record, view.user.record):
            raise CredentialsChanged()
        if opening.replaces is not None and opening.replaces not in view.sessions:
            raise CredentialsChanged()  # a parallel re-authentication (or a logout) ended it first
        keys = opening.guess.counter_keys()
        counters: dict[str, CountedGuess | None] = {key: view.counters.get(key) for key in keys}
        stored = view.device.record if view.device is not None else None
        return _State(view.user, view.ledger, counters, device=stored)

    # --- the ledger ---------------------------------------------------------------------------------

    async def _ledger_plan(self, opening: Opening, state: _State, new: NewSession) -> LedgerPlan:
        """The ledger with the new session's and the device's entries, making room where a bound is reached."""
        user = state.user.record
        reset = opening.new_password_hash is not None
        device = opening.device.device_hash if opening.device is not None and _kept(opening.device, state) else None
        if reset:  # every other session and device ends with this change
            return LedgerPlan(self.reset_ledger(user, state.ledger, new.token_hash, device))
        own = state.ledger is not None and state.ledger.record.user_id == user.user_id
        sessions, evicted = await self._sessions_entry(user, state.ledger, own, new.token_hash, opening.replaces)
        counted = self.settings.max_sessions_per_user > 0 or (
            own and state.ledger is not None and state.ledger.record.sessions_counted
        )
        devices = list(state.ledger.record.devices) if own and state.ledger is not None else []
        gone: list[str] = []
        if device is not None and device not in devices:
            devices, gone = await self._make_device_room(user, devices)
            devices.append(device)
        used = dict(state.ledger.record.devices_used) if own and state.ledger is not None else {}
        if device is not None:
            used[device] = self.clock()
        changed_at = state.ledger.record.changed_at if state.ledger is not None else None
        record = LedgerRecord(
            user_id=user.user_id,
            sessions=sessions,
            sessions_counted=counted,
            devices=devices,
            devices_used={h: t for h, t in used.items() if h in devices},
            changed_at=changed_at,
        )
        return LedgerPlan(self.ledger_write(user, state.ledger, record), tuple(evicted), tuple(gone))

    def ledger_write(
        self, user: UserRecord, base: Versioned[LedgerRecord] | None, record: LedgerRecord
    ) -> tuple[Write, ...]:
        """``record`` over the ledger as read: only if unchanged since, or, where none was, only if still none.

        A ledger made here comes with a check that the user document still exists (an update to a
        value it already has, which changes nothing): nothing is ever written below a deleted user.
        """
        doc = Doc.ledger(user.username)
        if base is None:
            return (plan.create(doc, record), plan.update(Doc.user(user.username), {"username": user.username}))
        return (plan.update(doc, record, base.update_time),)

    async def _sessions_entry(
        self,
        user: UserRecord,
        ledger: Versioned[LedgerRecord] | None,
        own: bool,
        new_hash: str,
        replaces: str | None,
    ) -> tuple[list[str], list[str]]:
        """The ledger's session list with ``new_hash``, and the sessions ended to stay under the cap."""
        cap = self.settings.max_sessions_per_user
        if cap == 0:  # no cap: the list is left as it is
            return (list(ledger.record.sessions) if own and ledger is not None else []), []
        if own and ledger is not None and ledger.record.sessions_counted:
            members = [h for h in ledger.record.sessions if h != replaces]
        else:
            # None yet, one written while there was no cap, or a deleted namesake's: count what is stored now.
            members = [h for h in await self._countable_sessions(user) if h != replaces]
        evict: list[str] = []
        if len(members) >= cap:
            members, evict = await self._make_room(user, members, cap)
        return [*members, new_hash], evict

    async def _countable_sessions(self, user: UserRecord) -> list[str]:
        """The keys of the user's sessions stored now that could still be accepted (one query)."""
        now = self.clock()
        stored = await self.store.list_sessions(user.user_id, ordered=False)
        return [h for h, s in stored if not liveness.never_live_again(s, user, now)]

    async def _make_room(self, user: UserRecord, members: list[str], cap: int) -> tuple[list[str], list[str]]:
        """Read the listed sessions (one round trip) and split the full list by ``room.make_room``."""
        stored = await self.store.read_sessions(members)
        return room.make_room(user, members, stored, cap, self.clock())

    async def _make_device_room(self, user: UserRecord, devices: list[str]) -> tuple[list[str], list[str]]:
        """Only when the list is full: read the listed devices (one round trip), split by ``room.make_device_room``."""
        bound = self.settings.max_devices_per_user
        if len(devices) < bound:
            return devices, []
        stored = await self.store.read_devices(user.username, devices)
        return room.make_device_room(user, devices, stored, bound, self.clock())

    # --- credential changes without a new session ---------------------------------------------------

    def reset_ledger(
        self, user: UserRecord, base: Versioned[LedgerRecord] | None, keep: str | None, device: str | None
    ) -> tuple[Write, ...]:
        """The ledger after a change of credentials: only what the change keeps (the caller's session and device)."""
        capped = self.settings.max_sessions_per_user > 0
        record = LedgerRecord(
            user_id=user.user_id,
            sessions=[keep] if keep and capped else [],
            sessions_counted=capped,  # every other session is void from this commit on
            devices=[device] if device else [],
            devices_used={device: self.clock()} if device else {},
            changed_at=self.clock(),
        )
        return self.ledger_write(user, base, record)


def _kept(device: DeviceUse, state: _State) -> bool:
    """Whether the commit may trust ``device``: one minted by it, or a stored one still stored as last read."""
    return not device.known or state.device is not None


def holds(counter: CountedGuess, mine: CountedGuess) -> bool:
    """Whether ``counter`` as read now can still hold the guess ``mine`` counted: the same window or an older one.

    A counter deleted by a success (or restarted for a new window) and made again by later guesses starts after
    this guess: giving it back there would take off someone else's, and could take the count below zero.
    """
    return counter.window_start <= mine.window_start
