"""The physical floor for ``make bench``: the least any revocable session check can cost.

An async functions-framework function with the same Firestore client set-up as
the service (one ``AsyncClient`` per event loop, created on first use) and no
rules, models or logging:

    GET  /profile   one batched ``get_all`` of the session (sha256 of the Bearer
                    token) and its user (named by the token), then a small JSON body
    POST /login     one read of the user, one argon2id verification with the
                    configured parameters in a worker thread, one write

Serve it with ``functions-framework --target floor --source bench/floor.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import weakref
from typing import Any

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_hasher: Any = None
USERS = os.environ.get("SESSION_USERS_COLLECTION", "users")
SESSIONS = os.environ.get("SESSION_SESSIONS_COLLECTION", "sessions")


def _client() -> Any:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        from google.cloud.firestore import AsyncClient

        client = AsyncClient(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        _clients[loop] = client
    return client


def _verify(stored: str, password: str) -> bool:
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher, Type

        _hasher = PasswordHasher(
            time_cost=int(os.environ.get("SESSION_ARGON2_TIME_COST", "2")),
            memory_cost=int(os.environ.get("SESSION_ARGON2_MEMORY_KIB", "19456")),
            parallelism=int(os.environ.get("SESSION_ARGON2_PARALLELISM", "1")),
            type=Type.ID,
        )
    try:
        return bool(_hasher.verify(stored, password))
    except Exception:
        return False


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


async def _profile(request: Request) -> Response:
    token = (request.headers.get("authorization") or "").partition(" ")[2]
    name, _, _ = token.partition(".")
    try:
        username = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except ValueError:
        return _json({"error": "unauthenticated"}, 401)
    client = _client()
    refs = [
        client.collection(SESSIONS).document(hashlib.sha256(token.encode()).hexdigest()),
        client.collection(USERS).document(username),
    ]
    found = [snap async for snap in client.get_all(refs) if snap.exists]
    if len(found) != 2:
        return _json({"error": "unauthenticated"}, 401)
    return _json({"username": username, "ok": True})


async def _login(request: Request) -> Response:
    body = json.loads(await request.body())
    client = _client()
    user = await client.collection(USERS).document(body["username"]).get()
    if not user.exists or not await asyncio.to_thread(_verify, user.get("password_hash"), body["password"]):
        return _json({"error": "invalid_credentials"}, 401)
    token = secrets.token_urlsafe(32)
    await client.collection("bench_floor_sessions").document(token).create({"username": body["username"]})
    return _json({"token": token})


@functions_framework.aio.http
async def floor(request: Request) -> Response:
    if request.url.path == "/login" and request.method == "POST":
        return await _login(request)
    return await _profile(request)
