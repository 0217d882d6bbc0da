"""The freshness window: which operations need the password proved within ``SESSION_REAUTH_SECONDS``.

A new email, listing sessions and revoking other sessions (or all) answer 403
``reauthentication_required`` otherwise. ``POST /reauthenticate`` (``session.proofs``) renews it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from session import errors, tokens
from session.context import AuthContext
from session.security_log import event


def require_recent_auth(ctx: AuthContext, now: datetime, window_seconds: int) -> None:
    """Raise ``ReauthenticationRequired`` unless ``ctx``'s session proved the password within the window.

    Call it on a ``ctx`` read from the store. A cached ``auth_time`` would do as well: a session's
    ``auth_time`` never changes (a re-authentication makes a new session).
    """
    if now - ctx.session.auth_time > timedelta(seconds=window_seconds):
        event("reauthentication_required", user_id=ctx.principal.user_id, sid=tokens.log_id(ctx.token_hash))
        raise errors.ReauthenticationRequired(window_seconds)
