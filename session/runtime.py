"""The composition root: the one place that builds settings, store, hashing and service.

The HTTP edge (``session.http``), the guard (``session.guard``) and the admin CLI
(``session.cli``) all get their runtime from ``build`` and translate store errors
with ``store_failure``, so the three entry points cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from session import errors
from session.admin import AdminService
from session.config import Settings, load_settings
from session.passwords import Passwords
from session.service import Clock, SessionService, utc_now
from session.store import FirestoreStore, StoreCorrupt, StoreError, StoreRejected, StoreUnavailable

log = logging.getLogger("session.request")


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything one instance needs, made once and shared by its requests."""

    settings: Settings
    store: FirestoreStore
    service: SessionService
    admin: AdminService
    origins: frozenset[str]


def build(
    settings: Settings | None = None, *, environ: Mapping[str, str] | None = None, clock: Clock = utc_now
) -> Runtime:
    """Build the runtime from ``settings`` (or the environment). Raises ``ConfigError``.

    Nothing connects here: the Firestore client is made on first use.
    """
    settings = settings or load_settings(environ)
    store = FirestoreStore(settings)
    service = SessionService(settings, store, Passwords(settings), clock)
    return Runtime(settings, store, service, AdminService(service), frozenset(settings.allowed_origins))


def store_failure(settings: Settings, exc: StoreError) -> errors.SessionError:
    """The client-facing error for a store failure, logged here when it is ours to fix.

    Unreachable, late or overloaded: 503 with Retry-After, for the client to retry.
    A document that fails validation, or a request Firestore refuses: an opaque
    500 and an ERROR line. The corrupt document is named by collection and id
    only, never by its values (they may hold a password hash).
    """
    if isinstance(exc, StoreUnavailable):
        return errors.ServiceUnavailable(
            max(1, round(settings.firestore_timeout_seconds)), "the session store is unavailable; try again"
        )
    if isinstance(exc, StoreCorrupt):
        fields = {"collection": exc.collection, "document_id": exc.document_id, "model": exc.model}
        log.error(
            "stored document does not match its model",
            extra={"json_fields": {"event": "store_corrupt", **fields, "problems": exc.problems}},
        )
    elif isinstance(exc, StoreRejected):
        log.error("Firestore refused a request", exc_info=exc, extra={"json_fields": {"event": "store_rejected"}})
    else:  # a precondition or existence error that escaped the service's handling: our bug
        log.error("unexpected store error", exc_info=exc, extra={"json_fields": {"event": "store_error"}})
    return errors.InternalError("internal error")
