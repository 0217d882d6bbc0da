"""HOOK for ``make bench``: GET /profile behind ``@require_session``, against the service's profile.

``make bench`` (``bench/harness/scenarios.py``) imports this module first; while ``session.require_session``
is missing (or its signature changes so the import fails) the row is skipped
with a note naming the import error. Served as
``functions-framework --target profile --source bench/decorated.py``; it answers
with a small JSON body made from the ``Principal``, as the floor does.
"""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from session import Principal, require_session  # HOOK: the decorator under test


@functions_framework.aio.http
@require_session()
async def profile(request: Request, principal: Principal) -> Response:
    return JSONResponse({"user_id": principal.user_id, "username": principal.username, "ok": True})
