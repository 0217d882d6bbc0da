"""Time: the one default clock (aware UTC), the type every rule takes it as, and whole seconds for headers."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]
# Seconds in a day: the unit of the longer settings.
DAY = 86400


def utc_now() -> datetime:
    """The default clock: aware UTC."""
    return datetime.now(UTC)


def seconds_until(delta: timedelta) -> int:
    """Whole seconds, at least 1: for ``Retry-After`` and cookie ``Max-Age``."""
    return max(1, math.ceil(delta.total_seconds()))
