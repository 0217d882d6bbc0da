"""Making room under the caps: which entries a full list keeps and which it ends. Pure, no store, no clock.

The rule that ``Opener._make_room`` / ``_make_device_room`` (session/opening.py) apply, written as plain
functions of what was read, so that it is tested without an emulator. ``Opener`` reads the listed
documents (one round trip) and keeps none of the rule itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from session import liveness
from session.models import DeviceRecord, SessionRecord, UserRecord


def make_room(
    user: UserRecord, members: Sequence[str], stored: Mapping[str, SessionRecord], cap: int, now: datetime
) -> tuple[list[str], list[str]]:
    """Split a full session list into the entries kept and the sessions to delete, leaving room for one.

    ``stored`` holds the listed sessions that exist. Entries whose session is gone are dropped;
    sessions that can never be accepted again are deleted; then, while still full, the least
    recently used (``last_seen_at``, then ``created_at``, then the key) are ended.
    """
    live = [h for h in members if h in stored and not liveness.never_live_again(stored[h], user, now)]
    evict = [h for h in members if h in stored and liveness.never_live_again(stored[h], user, now)]
    excess = len(live) - cap + 1
    if excess > 0:
        by_use = sorted(live, key=lambda h: (stored[h].last_seen_at, stored[h].created_at, h))
        ended = set(by_use[:excess])
        evict += by_use[:excess]
        live = [h for h in live if h not in ended]
    return live, evict


def make_device_room(
    user: UserRecord, devices: Sequence[str], stored: Mapping[str, DeviceRecord], bound: int, now: datetime
) -> tuple[list[str], list[str]]:
    """Of a full device list, the trusted devices kept and those whose documents go, leaving room for one more.

    ``stored`` holds the listed devices that exist. Entries of gone documents are dropped,
    untrusted documents deleted, then the least recently renewed trusted ones (earliest
    ``expires_at``, then the key) lose their trust.
    """
    trusted = [h for h in devices if liveness.device_trusted(stored.get(h), user, now)]
    gone = [h for h in devices if h in stored and h not in trusted]
    excess = len(trusted) - bound + 1
    if excess > 0:
        by_use = sorted(trusted, key=lambda h: (stored[h].expires_at, h))
        ended = set(by_use[:excess])
        gone += by_use[:excess]
        trusted = [h for h in trusted if h not in ended]
    return trusted, gone
