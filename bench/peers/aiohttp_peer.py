"""Peer for ``make bench``: aiohttp-session with aiohttp-session-firestore on the same emulator.

POST /login {username} stores the username in a new session; GET /profile reads
it back (one document get). Runs in a venv of its own in the bench cache, on
Python >= 3.12 (aiohttp-session-firestore requires it).
"""

from __future__ import annotations

import os

from aiohttp import web
from aiohttp_session import get_session, new_session, setup
from aiohttp_session_firestore import FirestoreStorage
from google.cloud.firestore_v1 import AsyncClient


async def login(request: web.Request) -> web.Response:
    body = await request.json()
    session = await new_session(request)
    session["user"] = str(body["username"])
    return web.json_response({"ok": True})


async def profile(request: web.Request) -> web.Response:
    session = await get_session(request)
    if "user" not in session:
        return web.json_response({"error": "unauthenticated"}, status=401)
    return web.json_response({"username": session["user"], "ok": True})


async def make_app() -> web.Application:
    app = web.Application()
    client = AsyncClient(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    setup(app, FirestoreStorage(client, collection_name="aiohttp-sessions", max_age=7200, secure=False))
    app.router.add_post("/login", login)
    app.router.add_get("/profile", profile)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None, print=None)
