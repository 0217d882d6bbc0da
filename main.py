"""Cloud Functions entry points: each hands its request to ``session.http``.

Deploy any of ``register``, ``login``, ``profile``, ``logout``, ``sessions``, ``reauthenticate``,
``security_events`` (its endpoint is ``security-events``), ``devices`` and ``dbsc``
alone (its root path is the endpoint), or ``api`` to serve them all under path
prefixes.
"""

from __future__ import annotations

import os

# pydantic looks for plugins on its first model by scanning the entry points of every installed distribution
# (about 35 ms of cold start here); the service uses none. Set PYDANTIC_DISABLE_PLUGINS yourself (to "" or a
# list of names) to have yours loaded.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from session.http import Api

# Settings are validated here, at cold start; nothing connects until the first request.
api_instance = Api.from_environment()


@functions_framework.aio.http
async def register(request: Request) -> Response:
    return await api_instance.handle(request, "register")


@functions_framework.aio.http
async def login(request: Request) -> Response:
    return await api_instance.handle(request, "login")


@functions_framework.aio.http
async def profile(request: Request) -> Response:
    return await api_instance.handle(request, "profile")


@functions_framework.aio.http
async def logout(request: Request) -> Response:
    return await api_instance.handle(request, "logout")


@functions_framework.aio.http
async def sessions(request: Request) -> Response:
    return await api_instance.handle(request, "sessions")


@functions_framework.aio.http
async def reauthenticate(request: Request) -> Response:
    return await api_instance.handle(request, "reauthenticate")


@functions_framework.aio.http
async def security_events(request: Request) -> Response:
    return await api_instance.handle(request, "security-events")


@functions_framework.aio.http
async def devices(request: Request) -> Response:
    return await api_instance.handle(request, "devices")


@functions_framework.aio.http
async def api(request: Request) -> Response:
    return await api_instance.handle(request)


@functions_framework.aio.http
async def dbsc(request: Request) -> Response:
    return await api_instance.handle(request, "dbsc")
