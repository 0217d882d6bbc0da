"""``python -m session audit``: what breaks the service's invariants, found page by page, and what ``--fix`` repairs.

The rules of what counts as broken live here; the reads live in ``session.audit_store``.
A session "can never be accepted again" by the service's own rule (``liveness.never_live_again``,
and ``liveness.is_live`` for a user that no longer exists): nothing here restates it.

Two sorts of finding (``Kind.attention``):

- **garbage**: what the service leaves behind by design and cleans up lazily (TTL, the
  next full ledger): dead sessions still stored, ledger entries whose session is gone
  (a logout leaves its entry), counters past their expiry. Reported and repaired by
  ``--fix``, but they do not make the audit fail.
- **needs attention**: a broken invariant: a live session its user's ledger does not
  list (the cap does not count it), more live sessions than the cap, a counter below
  zero (extra guesses), devices or a ledger of a user that no longer exists, a
  document that fails its model. Exit status 1 while one is left unrepaired.

Every candidate is confirmed on one consistent batched read of the session, its user
and its ledger before it is reported or repaired, so a login or logout running during
the audit is not mistaken for damage; every repair carries a precondition on the
version read (a document that changed meanwhile is left alone and counted as skipped).
Failed-login counters are keyed by hashes of names that need not exist (a guess at an
unknown username is counted too), so a counter cannot be an orphan: only its value and
expiry are judged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from session import liveness, tokens
from session.audit_store import AuditStore, Doc, Snapshot
from session.config import Settings
from session.models import LedgerRecord, SessionRecord, UserRecord

# Documents per page (users: per batched read of the users and their ledgers).
AUDIT_PAGE = 200
MAX_AUDIT_PAGE = 500
SAMPLES = 5


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of finding: its name (the report's key), what it is, whether it fails the audit, its repair."""

    name: str
    what: str
    attention: bool
    repair: str | None


KINDS = (
    Kind("dead_sessions", "sessions that can never be accepted again, still stored", False, "deleted"),
    Kind("stale_ledger_entries", "ledger entries whose session is gone", False, "dropped"),
    Kind("expired_counters", "failed-login counters past their expiry", False, "deleted"),
    Kind("unledgered_sessions", "live sessions missing from their user's ledger", True, None),
    Kind("over_cap", "users with more live sessions than SESSION_MAX_PER_USER", True, None),
    Kind("negative_counters", "failed-login counters below zero", True, "deleted"),
    Kind("orphan_devices", "devices of users that no longer exist", True, "deleted"),
    Kind("orphan_ledgers", "session ledgers of users that no longer exist", True, "deleted"),
    Kind("corrupt", "documents that fail their model (collection/id)", True, None),
    # Issue 22 (events) adds here: Kind("orphan_events", "events of users that no longer exist", True, "deleted"),
    # and a pass over the events collection in `Audit.run`, like `_counters`.
)
BY_NAME = {kind.name: kind for kind in KINDS}

COST = (
    "Cost, in Firestore document reads: 1 per session, plus one batched read of the distinct users and"
    " their ledgers per page of sessions (at most 2 per session); 3 per user (the listing, the user and its"
    " ledger) plus 1 per device (at least 1 per user) and 1 per ledger entry; 1 per failed-login counter."
    " Candidates are read once more before they are reported; --fix writes 1 per repair."
)


@dataclass
class Report:
    """What an audit found, repaired and skipped, by kind, and how many documents it read, by collection."""

    found: Counter[str] = field(default_factory=Counter)
    fixed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # changed since read: left alone
    samples: dict[str, list[str]] = field(default_factory=dict)
    scanned: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, shown: str) -> None:
        self.found[kind] += 1
        examples = self.samples.setdefault(kind, [])
        if len(examples) < SAMPLES:
            examples.append(shown)

    def unrepaired(self) -> int:
        """Findings that need attention and were not repaired: the audit fails while this is above 0."""
        return sum(self.found[k.name] - self.fixed[k.name] for k in KINDS if k.attention)

    def lines(self) -> list[str]:
        """One line per kind, then a summary line."""
        out = []
        for kind in KINDS:
            n = self.found[kind.name]
            text = f"{kind.name}: {n}"
            if self.fixed[kind.name]:
                text += f", {self.fixed[kind.name]} {kind.repair}"
            if self.skipped[kind.name]:
                text += f", {self.skipped[kind.name]} changed meanwhile (left alone)"
            text += f" ({'needs attention' if kind.attention else 'garbage'}: {kind.what})"
            if n:
                text += " e.g. " + ", ".join(self.samples.get(kind.name, []))
            out.append(text)
        read = ", ".join(f"{n} {c}" for c, n in sorted(self.scanned.items())) or "nothing"
        left = self.unrepaired()
        verdict = f"{left} finding(s) need attention" if left else "nothing needs attention"
        out.append(f"audit: read {read}; {verdict}")
        return out

    def as_fields(self) -> dict[str, Any]:
        """The audit line's fields: counts only, never an id."""
        return {
            "found": {k.name: self.found[k.name] for k in KINDS},
            "fixed": dict(self.fixed),
            "skipped": dict(self.skipped),
            "scanned": dict(self.scanned),
            "needs_attention": self.unrepaired(),
        }


def never_accepted(session: SessionRecord, user: UserRecord | None, now: datetime) -> bool:
    """The service's rule: ``never_live_again`` against the user, or, with no user any more, not live."""
    if user is None:
        return not liveness.is_live(session, None, now)
    return liveness.never_live_again(session, user, now)


def _user_id(user: UserRecord | None) -> str | None:
    return user.user_id if user is not None else None


def _shown(doc_id: str) -> str:
    """An id fit to print: a hash (a session's key, a counter's) shortened as the logs shorten it."""
    return tokens.log_id(doc_id) if len(doc_id) == 64 else doc_id


def _where(path: str) -> str:
    collection, _, doc_id = path.rpartition("/")
    return f"{collection}/{_shown(doc_id)}"


class Audit:
    """One run: ``await Audit(reader, settings, clock, fix=..., page=..., progress=...).run()``."""

    def __init__(
        self,
        reader: AuditStore,
        settings: Settings,
        clock: Callable[[], datetime],
        *,
        fix: bool = False,
        page: int = AUDIT_PAGE,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.reader, self.clock, self.fix, self.page, self.progress = reader, clock, fix, page, progress
        self.cap = settings.max_sessions_per_user
        self.report = Report()

    async def run(self) -> Report:
        await self._sessions()
        await self._users()
        await self._counters()
        return self.report

    def _repaired(self, kind: str, done: bool, n: int = 1) -> None:
        (self.report.fixed if done else self.report.skipped)[kind] += n

    # --- sessions ------------------------------------------------------------------------------------

    def _session_problem(self, key: str, doc: Doc[SessionRecord], snap: Snapshot, now: datetime) -> str | None:
        session = doc.record
        assert session is not None
        user_doc, ledger_doc = snap.users.get(session.username), snap.ledgers.get(session.username)
        if (user_doc is not None and user_doc.record is None) or (ledger_doc is not None and ledger_doc.record is None):
            return None  # a corrupt user or ledger decides nothing: reported by the users' pass
        user = user_doc.record if user_doc is not None else None
        if never_accepted(session, user, now):
            return "dead_sessions"
        ledger: LedgerRecord | None = ledger_doc.record if ledger_doc is not None else None
        listed = ledger is None or ledger.user_id != _user_id(user) or key in ledger.sessions
        if self.cap and user is not None and not listed and liveness.is_live(session, user, now):
            return "unledgered_sessions"
        return None

    async def _sessions(self) -> None:
        live: Counter[str] = Counter()
        after: str | None = None
        while True:
            docs = await self.reader.sessions_page(self.page, after)
            self.report.scanned["sessions"] += len(docs)
            for doc in docs:
                if doc.record is None:
                    self.report.add("corrupt", _where(doc.path))
            parsed = [d for d in docs if d.record is not None]
            snap = await self.reader.snapshot([d.record.username for d in parsed if d.record is not None])
            now = self.clock()
            candidates = [d for d in parsed if self._session_problem(d.id, d, snap, now) is not None]
            for d in parsed:
                assert d.record is not None
                owner = snap.users.get(d.record.username)
                if owner is not None and owner.record is not None and liveness.is_live(d.record, owner.record, now):
                    live[d.record.username] += 1
            if candidates:  # confirmed on one consistent read of the sessions, users and ledgers
                names = [d.record.username for d in candidates if d.record is not None]
                confirm = await self.reader.snapshot(names, [d.id for d in candidates])
                now = self.clock()
                for d in candidates:
                    again = confirm.sessions.get(d.id)
                    problem = self._session_problem(d.id, again, confirm, now) if again and again.record else None
                    if problem is None or again is None:
                        continue
                    self.report.add(problem, _shown(d.id))
                    if problem == "dead_sessions" and self.fix:
                        self._repaired(problem, await self.reader.delete(again))
            if docs:
                after = docs[-1].id
                self.progress(f"sessions: {self.report.scanned['sessions']} read")
            if len(docs) < self.page:
                break
        for name, n in sorted(live.items()):
            if self.cap and n > self.cap:
                self.report.add("over_cap", f"{name} ({n})")

    # --- users: their devices and ledgers ----------------------------------------------------------

    async def _users(self) -> None:
        async for names in self.reader.usernames(self.page):
            snap = await self.reader.snapshot(names)
            with_entries: dict[str, LedgerRecord] = {}
            for name in names:
                user_doc, ledger_doc = snap.users.get(name), snap.ledgers.get(name)
                self.report.scanned["users"] += user_doc is not None
                for doc in (user_doc, ledger_doc):
                    if doc is not None and doc.record is None:
                        self.report.add("corrupt", _where(doc.path))
                if user_doc is not None and user_doc.record is None:
                    continue  # whose devices and ledger these are cannot be told
                user = user_doc.record if user_doc is not None else None
                await self._devices(name, user)
                if ledger_doc is None or ledger_doc.record is None:
                    continue
                if user is None:
                    self.report.add("orphan_ledgers", name)
                    if self.fix:
                        self._repaired("orphan_ledgers", await self.reader.delete(ledger_doc))
                elif ledger_doc.record.user_id == user.user_id and ledger_doc.record.sessions:
                    with_entries[name] = ledger_doc.record
            await self._ledger_entries(with_entries)
            self.progress(f"users: {self.report.scanned['users']} read")

    async def _devices(self, username: str, user: UserRecord | None) -> None:
        for device in await self.reader.devices(username):
            self.report.scanned["devices"] += 1
            if device.record is None:
                self.report.add("corrupt", f"{username}/devices/{_shown(device.id)}")
            elif user is None or device.record.user_id != user.user_id:
                self.report.add("orphan_devices", f"{username}/{_shown(device.id)}")
                if self.fix:
                    self._repaired("orphan_devices", await self.reader.delete(device))

    async def _ledger_entries(self, ledgers: dict[str, LedgerRecord]) -> None:
        """Entries whose session is gone, judged on one read of the ledgers and their sessions together."""
        if not ledgers:
            return
        keys = [key for ledger in ledgers.values() for key in ledger.sessions]
        snap = await self.reader.snapshot(list(ledgers), keys)
        for name in ledgers:
            doc = snap.ledgers.get(name)
            if doc is None or doc.record is None:
                continue
            stale = [key for key in doc.record.sessions if key not in snap.sessions]
            for key in stale:
                self.report.add("stale_ledger_entries", f"{name}/{_shown(key)}")
            if stale and self.fix:
                kept = [key for key in doc.record.sessions if key in snap.sessions]
                self._repaired("stale_ledger_entries", await self.reader.set_ledger(name, doc, kept), len(stale))

    # --- failed-login counters -----------------------------------------------------------------------

    async def _counters(self) -> None:
        after: str | None = None
        while True:
            docs = await self.reader.counters_page(self.page, after)
            self.report.scanned["counters"] += len(docs)
            now = self.clock()
            for doc in docs:
                if doc.record is None:
                    self.report.add("corrupt", _where(doc.path))
                    continue
                kind = (
                    "negative_counters"
                    if doc.record.count < 0
                    else "expired_counters"
                    if doc.record.expires_at <= now
                    else None
                )
                if kind is None:
                    continue
                self.report.add(kind, _shown(doc.id))
                if self.fix:
                    self._repaired(kind, await self.reader.delete(doc))
            if docs:
                after = docs[-1].id
                self.progress(f"counters: {self.report.scanned['counters']} read")
            if len(docs) < self.page:
                break


__all__ = ["AUDIT_PAGE", "COST", "KINDS", "Audit", "Kind", "Report", "never_accepted"]
