"""A serverless session service for Google Cloud Functions, on Firestore.

For the project's other functions: ``require_session`` (a decorator for
functions-framework HTTP functions), ``verify`` / ``verify_async`` (a token to
a ``Principal``, for code that is not an HTTP function) and ``Principal``.
They are imported on first access, so ``import session`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The release this code is; CHANGELOG.md says what each one changed. pyproject.toml reads it from here.
__version__ = "0.1.0"

if TYPE_CHECKING:
    from session.guard import require_session, verify, verify_async
    from session.service import Principal

_LAZY = {
    "require_session": "session.guard",
    "verify": "session.guard",
    "verify_async": "session.guard",
    "Principal": "session.service",
}

__all__ = ["Principal", "__version__", "require_session", "verify", "verify_async"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'session' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
