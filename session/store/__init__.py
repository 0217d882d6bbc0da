"""Everything that talks to Firestore, and nothing else does.

``base``: the errors, the values and the ``Store`` Protocol the rules call; ``ops``: the operations
counted per request; ``firestore``: the one backend, split by collection.
"""

from __future__ import annotations

from session.store.base import (
    BATCH,
    DEVICES,
    LEDGER_COLLECTION,
    LEDGER_DOCUMENT,
    AccountView,
    AlreadyExists,
    CountedGuess,
    PreconditionFailed,
    QueryShape,
    Store,
    StoreCorrupt,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    Versioned,
)
from session.store.firestore import FirestoreStore
from session.store.ops import OpCounts, current_ops

__all__ = [
    "BATCH",
    "DEVICES",
    "LEDGER_COLLECTION",
    "LEDGER_DOCUMENT",
    "AccountView",
    "AlreadyExists",
    "CountedGuess",
    "FirestoreStore",
    "OpCounts",
    "PreconditionFailed",
    "QueryShape",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "Versioned",
    "current_ops",
]
