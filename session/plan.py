"""One commit as a value: what it creates, updates and deletes, and under which preconditions.

The rules decide and build a ``Plan``; the store carries it out in one atomic batch
(``Store.commit``) and counts the operations it bills from the plan itself. A plan
names documents by what they are (``Doc``), never by a Firestore path, so the rules
stay free of the client library.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class Kind(enum.Enum):
    """The kinds of document the service stores."""

    USER = "user"  # users/{username}
    SESSION = "session"  # sessions/{token_hash}
    COUNTER = "counter"  # login_attempts/{key}
    DEVICE = "device"  # users/{username}/devices/{device_hash}
    LEDGER = "ledger"  # users/{username}/ledger/sessions: the account's ledger (sessions, devices)
    EVENT = "event"  # users/{username}/events/{event_id}: the account's security activity


@dataclass(frozen=True, slots=True)
class Doc:
    """One document: its kind, its key, and (for a device, the ledger or an event) the user it lives below."""

    kind: Kind
    key: str
    username: str = ""

    @staticmethod
    def user(username: str) -> Doc:
        return Doc(Kind.USER, username)

    @staticmethod
    def session(token_hash: str) -> Doc:
        return Doc(Kind.SESSION, token_hash)

    @staticmethod
    def counter(key: str) -> Doc:
        return Doc(Kind.COUNTER, key)

    @staticmethod
    def device(username: str, device_hash: str) -> Doc:
        return Doc(Kind.DEVICE, device_hash, username)

    @staticmethod
    def ledger(username: str) -> Doc:
        return Doc(Kind.LEDGER, "sessions", username)

    @staticmethod
    def event(username: str, event_id: str) -> Doc:
        return Doc(Kind.EVENT, event_id, username)


Action = Literal["create", "set", "update", "delete", "decrement"]


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a plan.

    - ``create``: the document must not exist (``AlreadyExists`` otherwise);
    - ``set``: written whole, whatever was there;
    - ``update``: ``fields`` merged in; the document must exist;
    - ``delete``: gone afterwards (a missing one is not an error, unless ``must_exist``);
    - ``decrement``: ``count`` taken down by one (and ``fields`` set); the document must exist.

    ``unchanged_since`` adds a precondition: the document is still at that update time.
    """

    doc: Doc
    action: Action
    fields: Mapping[str, object] = field(default_factory=dict)
    unchanged_since: datetime | None = None
    must_exist: bool = False

    @property
    def deletes(self) -> bool:
        return self.action == "delete"


@dataclass(frozen=True, slots=True)
class Plan:
    """The writes of one atomic commit, in order. Either all of them happen, or none."""

    writes: tuple[Write, ...] = ()

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.writes + other.writes)

    def then(self, *writes: Write | None) -> Plan:
        """This plan with ``writes`` (``None`` skipped) added at the end."""
        return Plan(self.writes + tuple(w for w in writes if w is not None))

    @property
    def write_count(self) -> int:
        """Billed document writes (everything but deletes)."""
        return sum(1 for w in self.writes if not w.deletes)

    @property
    def resendable(self) -> bool:
        """True when sending this commit twice cannot apply it twice.

        A decrement applied twice would give back two guesses: a plan with one is resendable only when the
        decrement carries its own precondition, or the plan creates a document (a resend that had landed
        fails on it).
        """
        creates = any(w.action == "create" for w in self.writes)
        return creates or all(w.unchanged_since is not None for w in self.writes if w.action == "decrement")

    @property
    def delete_count(self) -> int:
        return sum(1 for w in self.writes if w.deletes)


def create(doc: Doc, record: BaseModel) -> Write:
    return Write(doc, "create", record.model_dump())


def put(doc: Doc, record: BaseModel) -> Write:
    return Write(doc, "set", record.model_dump())


def update(doc: Doc, changes: BaseModel | Mapping[str, object], unchanged_since: datetime | None = None) -> Write:
    """Merge ``changes`` (a typed change: only the fields it sets) into an existing document."""
    fields = changes.model_dump(exclude_unset=True) if isinstance(changes, BaseModel) else dict(changes)
    return Write(doc, "update", fields, unchanged_since)


def delete(doc: Doc, unchanged_since: datetime | None = None, *, must_exist: bool = False) -> Write:
    return Write(doc, "delete", unchanged_since=unchanged_since, must_exist=must_exist)


def decrement(doc: Doc, unchanged_since: datetime | None = None, **fields: object) -> Write:
    return Write(doc, "decrement", fields, unchanged_since)
