"""Security events as structured log lines: the one way anything reports what happened to an account.

``event`` for the rules and the HTTP edge (logger ``session.security``); ``audit`` for the admin
CLI's one line per command (logger ``session.admin``, the only one that reaches the admin's log).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("session.security")
AUDIT_LOGGER = "session.admin"
audit_log = logging.getLogger(AUDIT_LOGGER)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """A named security event; never pass secrets in ``fields`` (log ids: ``tokens.log_id``)."""
    log.log(level, name, extra={"json_fields": {"event": name, **fields}})


def audit(name: str, level: int = logging.WARNING, **fields: Any) -> None:
    """An admin command's audit line: the same shape as ``event``, on the audit logger; never a password."""
    audit_log.log(level, name, extra={"json_fields": {"event": name, **fields}})
