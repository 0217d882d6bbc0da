"""Security events of an account (issue 22): the event, its types, and the message published for it.

- ``SecurityEvent``: ``{id, type, at, session_id, device, network, detail}``, exactly what
  ``GET /security-events`` shows and what is stored below the user;
- ``EVENT_TYPES``: the thirteen types of issue 22 and the two of DBSC (issue 25), and nothing else;
- ``EventMessage``: an event with the ``user_id`` and ``username`` it belongs to, and the
  Pub/Sub message made of it (``data``, ``attributes``, ``ordering_key``).

No secret can travel in an event: ``detail`` holds only short scalar values, and a key that
names a password, a token, a hash, a cookie or a secret is refused when the event is made.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from session.models import Timestamp, Username

EventType = Literal[
    "login",  # a login from a trusted device
    "login_new_device",  # a login without a valid device cookie for this user
    "lockout",  # the username's limit was reached (written by the guess that reached it)
    "password_changed",
    "reauthenticated",
    "session_revoked",
    "sessions_revoked",  # revoke-all
    "email_changed",
    "account_disabled",
    "account_enabled",
    "password_set_by_admin",
    "sessions_revoked_by_admin",  # including revoke-everyone
    "device_revoked",
    "session_bound",  # a browser bound the session to its key (DBSC, SESSION_DBSC=on)
    "bound_refresh_failed",  # a refresh of a bound session brought a proof the session's key did not sign
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

# What a detail may carry: a few short facts ("retry_after": 900, "place": "DE,Berlin"), never a document.
MAX_DETAIL_KEYS = 10
MAX_DETAIL_TEXT = 200
DetailKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
DetailValue = Annotated[str, StringConstraints(max_length=MAX_DETAIL_TEXT)] | int | bool | None
# Names of what must never be in an event; a detail key containing one is refused, whatever its value.
_SECRET_WORDS = re.compile(r"password|passwd|token|hash|cookie|secret|credential", re.IGNORECASE)


def new_event_id() -> str:
    """A fresh event id: 128 random bits, URL-safe. A subscriber deduplicates redeliveries by it.

    Never of the form ``__name__``, which Firestore reserves as a document id (a chance of about 1 in
    17 million per id, drawn again).
    """
    while True:
        candidate = secrets.token_urlsafe(16)
        if not (candidate.startswith("__") and candidate.endswith("__")):
            return candidate


class SecurityEvent(BaseModel):
    """One thing that happened to an account; ``at`` comes from the service's clock."""

    # Every member is always sent (null when it does not apply): the schema says so to a client.
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_serialization_defaults_required=True)

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,64}$")] = Field(default_factory=new_event_id)
    type: EventType
    at: Timestamp
    # The public id of the session the event concerns (tokens.public_id), never its token or hash.
    session_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    device: Annotated[str, StringConstraints(max_length=100)] | None = None  # devices.device_name
    network: Annotated[str, StringConstraints(max_length=64)] | None = None  # devices.coarse_network
    detail: dict[DetailKey, DetailValue] = Field(default_factory=dict, max_length=MAX_DETAIL_KEYS)

    @field_validator("detail")
    @classmethod
    def _no_secrets(cls, value: dict[str, object]) -> dict[str, object]:
        named = sorted(key for key in value if _SECRET_WORDS.search(key))
        if named:
            raise ValueError(f"an event never carries a secret; refused detail keys: {', '.join(named)}")
        return value


class EventMessage(BaseModel):
    """An event of a user, as it is published: what an app reacts to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    username: Username
    event: SecurityEvent

    def data(self) -> bytes:
        """The message data: the event as JSON, plus ``user_id`` and ``username`` (UTF-8, compact)."""
        body = {**self.event.model_dump(mode="json"), "user_id": self.user_id, "username": self.username}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def attributes(self) -> dict[str, str]:
        """The message attributes a subscription can filter on: ``type`` and ``user_id``."""
        return {"type": self.event.type, "user_id": self.user_id}

    @property
    def ordering_key(self) -> str:
        """The user: Pub/Sub keeps one user's events in order on a subscription with message ordering on."""
        return self.user_id


class EventRecord(SecurityEvent):
    """``users/{username}/events/{id}``: an event as stored, below the user it belongs to.

    ``expires_at`` is the TTL field (``SESSION_EVENTS_DAYS`` after ``at``). ``published`` is
    ``False`` until Pub/Sub accepted the event, then ``True``; ``None`` when no topic was set when
    it was written (nothing to publish, so ``events publish-pending`` never picks it up).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    username: Username
    expires_at: Timestamp
    published: bool | None = None

    def public(self) -> SecurityEvent:
        """The event as ``GET /security-events`` shows it."""
        return SecurityEvent.model_validate(self.model_dump(include=set(SecurityEvent.model_fields)))

    def message(self) -> EventMessage:
        """The event as it is published."""
        return EventMessage(user_id=self.user_id, username=self.username, event=self.public())


class SecurityEventsOut(BaseModel):
    """``GET /security-events``: one page of the account's events, newest first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: list[SecurityEvent]
    # The page_token of the next page; null on the last page.
    next_page_token: str | None
