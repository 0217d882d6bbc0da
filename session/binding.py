"""Device Bound Session Credentials on the service (``SESSION_DBSC=on``): the rules and their writes.

``session.dbsc`` verifies proofs; this module decides what a session needs and what each step stores:

- every response that sets a new session cookie (a login, a password change, a re-authentication)
  offers registration (``registration_header``); the challenge's hash is on the session from the
  commit that creates it (``initial_state``, called by ``Opener.new_session``);
- ``Binder.register`` checks the browser's proof and binds the session to its key, with a first
  short-lived bound credential (the ``__Host-session-bound`` cookie);
- from then on every request of the session must carry a bound credential it was issued and that
  has not expired (``refusal``, called by ``Authn`` on each check: the credential's hash lives on the
  session document, so a check stays one read); a Bearer use of its token is refused;
- ``Binder.refresh`` answers the browser's refresh: a new challenge (403), or, for a proof signed
  by the bound key over the pending challenge, a new credential (200).

Every write is one ``Plan`` built by ``Binder.plan``, under a precondition on the session as read:
a challenge is accepted once, and of two refreshes at once one commits and the other decides again
on what it finds (the challenge gone: a new one, 403). The session keeps the credential a refresh
replaced until its own expiry, so whichever answer the browser keeps last, its cookie works.

With ``SESSION_DBSC=off`` nothing is offered or required: sessions bound while it was on are
accepted with the session cookie alone again (the switch is the way back).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from session import dbsc, errors, liveness, tokens
from session.activity import Activity, bucket_event_id
from session.config import Settings
from session.context import NOWHERE, Basis, Origin
from session.errors import UnauthenticatedReason as Reason
from session.models import BoundCredential, BoundState, PendingChallenge, SessionRecord
from session.plan import Doc, Plan
from session.plan import update as plan_update
from session.retry import retrying
from session.store import StoreError, Versioned

REGISTRATION_PATH = "/dbsc/register"
REFRESH_PATH = "/dbsc/refresh"
# A challenge (a registration's or a refresh's) is accepted this long after it was sent.
CHALLENGE_LIFETIME = timedelta(minutes=5)
# A refresh challenge is the same for everyone who asks within one bucket (``refresh_challenge``).
REFRESH_BUCKET_SECONDS = 60
BOUND_COOKIE = dbsc.BoundCookie("__Host-session-bound")
# The credentials a bound session accepts: the current one and the one its last refresh replaced; and the
# challenges it keeps pending (two refreshes at once each get one, and each can be answered).
KEPT_CREDENTIALS = 2
KEPT_CHALLENGES = 2
CREDENTIAL_BYTES = 32
# At most one `bound_refresh_failed` event per session in this many seconds.
REFUSED_EVENT_SECONDS = 600
log = logging.getLogger("session.binding")


def enabled(settings: Settings) -> bool:
    return settings.dbsc == "on"


# --- registration: offered with every new session cookie ----------------------------------------


def registration_challenge(token: str) -> str:
    """The registration challenge of a new session: derived from its token, so no second value travels.

    A one-way, domain-separated hash of a 256-bit random secret: as unpredictable as a fresh random
    value, and it reveals nothing of the token. Single use is the stored hash's part (cleared on use).
    """
    digest = hashlib.sha256(b"dbsc-registration\x00" + token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def initial_state(settings: Settings, token: str, now: datetime) -> BoundState | None:
    """What a new session stores for its registration (``None`` when DBSC is off)."""
    if not enabled(settings):
        return None
    challenge = PendingChallenge(
        hash=dbsc.hash_challenge(registration_challenge(token)), expires_at=now + CHALLENGE_LIFETIME
    )
    return BoundState(challenges=[challenge])


def refresh_challenge(token_hash: str, state: BoundState, now: datetime) -> str:
    """The refresh challenge of a bound session now: derived, not drawn, so asking again changes nothing.

    From the session's key, its newest bound credential (so each successful refresh moves on to a new
    challenge: a used one never comes back) and the ``REFRESH_BUCKET_SECONDS`` bucket holding ``now``.
    Anyone asking within a bucket, the browser or a thief holding only the session cookie, is sent the
    same challenge and causes no write: a thief can neither displace the challenge the browser is
    answering nor buy more than one write per bucket. A challenge is not a secret (it travels in a
    header); only the browser's key can answer it.
    """
    newest = state.credentials[0].hash if state.credentials else ""
    bucket = int(now.timestamp()) // REFRESH_BUCKET_SECONDS
    seed = f"dbsc-refresh\x00{token_hash}\x00{newest}\x00{bucket}".encode()
    return base64.urlsafe_b64encode(hashlib.sha256(seed).digest()).rstrip(b"=").decode("ascii")


def registration_header(token: str) -> str:
    """``Secure-Session-Registration`` for the session of ``token``."""
    return dbsc.registration_header(REGISTRATION_PATH, registration_challenge(token))


# --- what a bound session requires --------------------------------------------------------------


def hash_credential(value: str) -> str:
    """The stored form of a bound credential: SHA-256, domain-separated from every other hash."""
    return hashlib.sha256(b"dbsc-credential\x00" + value.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Presented:
    """How a request presented its session token, and the bound credential it carries (if any)."""

    via_cookie: bool
    credential: str | None


BEARER = Presented(via_cookie=False, credential=None)


def is_bound(record: SessionRecord) -> bool:
    return record.dbsc is not None and record.dbsc.jwk is not None


def may_become_bound(settings: Settings, record: SessionRecord, now: datetime) -> bool:
    """True while a session that is not bound could still be (its registration challenge is pending).

    A copy of it cached by one instance must not admit a request without a bound credential meanwhile:
    another instance may have bound it since.
    """
    state = record.dbsc
    return enabled(settings) and state is not None and state.jwk is None and bool(_pending(state, now))


def refusal(settings: Settings, record: SessionRecord, presented: Presented, now: datetime) -> Reason | None:
    """Why a live session's request is refused for want of its bound credential; ``None``: it may go on."""
    if not enabled(settings) or record.dbsc is None or record.dbsc.jwk is None:
        return None
    if not presented.via_cookie:
        return Reason.BOUND_SESSION_BEARER
    if not presented.credential:
        return Reason.BOUND_CREDENTIAL_MISSING
    wanted = hash_credential(presented.credential)
    for credential in record.dbsc.credentials:
        if hmac.compare_digest(credential.hash, wanted):
            return None if now < credential.expires_at else Reason.BOUND_CREDENTIAL_EXPIRED
    return Reason.BOUND_CREDENTIAL_INVALID


# --- registration and refresh -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issued:
    """A new bound credential for the session ``session_id``: ``value`` goes into the bound cookie."""

    session_id: str
    value: str


@dataclass(frozen=True, slots=True)
class Challenged:
    """A refresh without a usable proof: the browser is to sign ``challenge`` (403)."""

    session_id: str
    challenge: str


@dataclass(frozen=True, slots=True)
class Ended:
    """A refresh for a session that is unknown, revoked, not bound, or not the one its cookie names."""

    reason: str


Refreshed = Issued | Challenged | Ended


def _pending(state: BoundState, now: datetime) -> list[dbsc.StoredChallenge]:
    return [dbsc.StoredChallenge(c.hash, c.expires_at) for c in state.challenges if c.expires_at > now]


def _verify_refresh(proof: str, state: BoundState, now: datetime) -> dbsc.StoredChallenge | None:
    """The pending challenge ``proof`` answers, signed by the bound key; ``None`` when it answers none.

    Raises ``BoundProofRefused`` for a proof that is not signed by the bound key, or malformed.
    """
    assert state.jwk is not None and state.thumbprint is not None
    key = dbsc.BoundKey(state.jwk, state.thumbprint)
    # An empty hash matches no jti: with nothing pending, the signature is still checked.
    for expected in _pending(state, now) or [dbsc.StoredChallenge("", now)]:
        try:
            dbsc.verify_refresh(proof, key, expected, now)
        except (dbsc.ChallengeMismatch, dbsc.ChallengeExpired):
            continue
        except dbsc.DbscError as exc:
            raise errors.BoundProofRefused(exc.reason, exc.detail) from None
        return expected if expected.hash else None
    return None


class Binder:
    """Registration and refresh over the store; one per instance."""

    def __init__(self, basis: Basis, forget: Callable[[str], None], activity: Activity) -> None:
        self.basis = basis
        self._forget = forget
        self.activity = activity
        self._lifetime = timedelta(seconds=basis.settings.dbsc_cookie_seconds)

    @property
    def cookie_seconds(self) -> int:
        return self.basis.settings.dbsc_cookie_seconds

    @staticmethod
    def plan(token_hash: str, read: Versioned[SessionRecord], state: BoundState) -> Plan:
        """The one write of every step (binding, a refresh's challenge, a refresh): the session's new state.

        Under a precondition on the session as ``read``: a challenge is accepted once, and a session
        deleted meanwhile (a logout, a revocation) is never recreated. The place to add an event's write.
        """
        return Plan((plan_update(Doc.session(token_hash), {"dbsc": state.model_dump()}, read.update_time),))

    def _credential(self, state: BoundState, now: datetime) -> tuple[str, list[BoundCredential]]:
        """A new credential value, and the credentials to keep: it, then the newest still-valid others."""
        value = secrets.token_urlsafe(CREDENTIAL_BYTES)
        kept = [c for c in state.credentials if c.expires_at > now][: KEPT_CREDENTIALS - 1]
        return value, [BoundCredential(hash=hash_credential(value), expires_at=now + self._lifetime), *kept]

    async def _read(self, token: str | None) -> tuple[str, Versioned[SessionRecord]] | Reason:
        """The live session of a session cookie's ``token``, with its version; else why there is none."""
        parsed = tokens.parse(token) if token else None
        if parsed is None:
            return Reason.NO_CREDENTIALS if not token else Reason.MALFORMED
        session, user = await self.basis.store.read_auth(parsed.username, parsed.token_hash)
        if session is None or user is None:
            return Reason.UNKNOWN
        reason = liveness.why_not_live(session.record, user.record, self.basis.clock())
        return reason if reason is not None else (parsed.token_hash, session)

    async def register(self, token: str | None, proof: str, origin: Origin = NOWHERE) -> Issued:
        """Bind the session of the cookie ``token`` to the key of the browser's registration ``proof``.

        Raises ``Unauthenticated`` (no live session), ``BoundProofRefused`` (no registration pending,
        or the proof refused: its ``reason`` is ``session.dbsc``'s). The binding and its
        ``session_bound`` event are one commit (the event also tells a commit that landed, its answer
        lost, from one that did not).
        """
        found = await self._read(token)
        if isinstance(found, Reason):
            raise errors.Unauthenticated(found)
        token_hash, first = found
        issued: list[Issued] = []

        async def attempt(read: Versioned[SessionRecord]) -> None:
            now = self.basis.clock()
            state = read.record.dbsc
            pending = _pending(state, now) if state is not None and state.jwk is None else []
            if state is None or not pending:
                raise errors.BoundProofRefused("no_registration_pending", "this session has no registration pending")
            try:
                key = dbsc.verify_registration(proof, pending[0], now)
            except dbsc.DbscError as exc:
                raise errors.BoundProofRefused(exc.reason, exc.detail) from None
            value, kept = self._credential(state, now)
            bound = BoundState(jwk=key.jwk, thumbprint=key.thumbprint, credentials=kept)
            event = self.activity.event(read.record, "session_bound", origin, session_hash=token_hash)
            await self.activity.commit(self.plan(token_hash, read, bound), event)
            issued.append(Issued(read.record.public_id, value))

        await retrying(first, attempt, lambda: self._reread(token_hash, token))
        self._forget(token_hash)
        log.info("session bound", extra={"json_fields": {"sid": tokens.log_id(token_hash), "dbsc": "bound"}})
        return issued[-1]

    async def _refused(
        self, token_hash: str, record: SessionRecord, refused: errors.BoundProofRefused, origin: Origin, now: datetime
    ) -> None:
        """Record a refused refresh proof (best effort: the refusal stands whatever the store says)."""
        event = self.activity.event(
            record,
            "bound_refresh_failed",
            origin,
            session_hash=token_hash,
            detail={"refusal": refused.refusal},
            event_id=bucket_event_id("bound_refresh_failed", token_hash, now, REFUSED_EVENT_SECONDS),
        )
        try:
            await self.basis.store.commit(Plan((self.activity.write(event),)))
        except StoreError:  # already recorded in this bucket (AlreadyExists), or the store is away
            return
        await self.activity.publish([event])

    async def _reread(self, token_hash: str, token: str | None) -> Versioned[SessionRecord]:
        found = await self._read(token)
        if isinstance(found, Reason):
            self._forget(token_hash)
            raise errors.Unauthenticated(found)
        return found[1]

    async def refresh(
        self, token: str | None, session_id: str | None, proof: str | None, origin: Origin = NOWHERE
    ) -> Refreshed:
        """Answer a refresh of the browser's session ``session_id`` (``Sec-Secure-Session-Id``).

        ``Ended`` when the session cookie names no live bound session with that id. Without a proof,
        or with one over a challenge that is not pending (used, replaced, expired): a new challenge.
        A proof signed by the bound key over the pending challenge: a new credential. Raises
        ``BoundProofRefused`` for any other proof (a wrong key, a malformed token), after writing the
        session's ``bound_refresh_failed`` event (at most one per session per ``REFUSED_EVENT_SECONDS``:
        a thief can repeat a refused proof at will, and must not buy a write with each).
        """
        found = await self._read(token)
        if isinstance(found, Reason):
            return Ended(found.value)
        token_hash, first = found

        async def attempt(read: Versioned[SessionRecord] | None) -> Refreshed:
            if read is None:
                return Ended(Reason.UNKNOWN.value)
            state, record = read.record.dbsc, read.record
            if state is None or state.jwk is None or state.thumbprint is None:
                return Ended("not_bound")
            if session_id != record.public_id:  # public (listed by GET /sessions): no need to hide timing
                return Ended("another_session")
            now = self.basis.clock()
            try:
                answered = _verify_refresh(proof, state, now) if proof is not None else None
            except errors.BoundProofRefused as refused:
                await self._refused(token_hash, record, refused, origin, now)
                raise
            if answered is not None:
                value, kept = self._credential(state, now)
                left = [c for c in state.challenges if c.hash != answered.hash and c.expires_at > now]
                renewed = state.model_copy(update={"challenges": left, "credentials": kept})
                await self.basis.store.commit(self.plan(token_hash, read, renewed))
                return Issued(record.public_id, value)
            # No proof, or one over a challenge not pending (used, replaced, expired): the browser signs anew,
            # over this bucket's challenge; stored once per bucket (asking again writes nothing).
            challenge = refresh_challenge(token_hash, state, now)
            stored = dbsc.hash_challenge(challenge)
            if any(c.hash == stored and c.expires_at > now for c in state.challenges):
                return Challenged(record.public_id, challenge)
            fresh = PendingChallenge(hash=stored, expires_at=now + CHALLENGE_LIFETIME)
            others = [c for c in state.challenges if c.expires_at > now][: KEPT_CHALLENGES - 1]
            pending = state.model_copy(update={"challenges": [fresh, *others]})
            await self.basis.store.commit(self.plan(token_hash, read, pending))
            return Challenged(record.public_id, challenge)

        async def reread() -> Versioned[SessionRecord] | None:
            again = await self._read(token)
            return None if isinstance(again, Reason) else again[1]

        start: Versioned[SessionRecord] | None = first
        outcome = await retrying(start, attempt, reread)
        if isinstance(outcome, Issued):
            self._forget(token_hash)
        return outcome
