"""The ``Store`` backend: users, sessions, counters, devices and ledgers in Firestore.

One ``AsyncClient`` per event loop, created lazily on first use and reused (a gRPC channel belongs
to the loop that made it). Every call runs under the configured deadline with google-api-core's
retry for transient errors; any failure to reach Firestore becomes ``StoreUnavailable``. Records
are validated on the way in and out, and every write that must not resurrect or clobber a
document carries a precondition. The code is split by collection, each part building on the last:
``client`` (the client, the guard, the one query helper, plans), ``counters``, ``sessions``,
``accounts`` (users, ledgers, devices), ``sweeps`` (many users at once) and ``events``.
"""

from __future__ import annotations

from session.store.events import Events


class FirestoreStore(Events):
    """Users, sessions, counters, devices and ledgers in Firestore; each operation's contract is on ``Store``."""
