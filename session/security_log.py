"""Security events as structured log lines: the one way the rules report what happened to an account."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("session.security")


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """A named security event; never pass secrets in ``fields`` (log ids: ``tokens.log_id``)."""
    log.log(level, name, extra={"json_fields": {"event": name, **fields}})
