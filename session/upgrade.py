"""Documents written by older versions, read as today's records: every conversion has its home here.

The records (``session.models``) call these before they validate, so a stored document of any
version reads as today's record, and nothing else in the code knows an older shape:

- a session from before ``auth_time``: read as proved at ``created_at`` (its login proved the password then);
- a failed-login counter from before issue 10: ``window_start`` was a timestamp, it is seconds since the epoch;
- a user from before ``auth_epoch``: ``sessions_valid_after`` voids the sessions created before it (read by
  ``liveness.account_allows``, never written);
- a ledger from before ``sessions_counted``: every one was written under a cap (the field's default, True);
- a device from before device epochs: no ``auth_epoch`` (None), never trusted again;
- a user from before ledgers: no ledger, made by its first login (``Opener.ledger_write``), whose session count
  comes from a query on ``user_id`` alone (``Store.list_sessions(ordered=False)``), which needs no composite
  index and so works while a newly deployed one is still building.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def session_fields(data: Any) -> Any:
    """A stored session's fields, with ``auth_time`` filled in for a session from before it."""
    if isinstance(data, dict) and data.get("auth_time") is None and "created_at" in data:
        return {**data, "auth_time": data["created_at"]}
    return data


def window_start_seconds(value: object) -> object:
    """A counter's window start as seconds since the epoch (older counters kept a timestamp)."""
    return value.timestamp() if isinstance(value, datetime) else value
