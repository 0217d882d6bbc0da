"""Schemathesis hooks (loaded through ``SCHEMATHESIS_HOOKS``): a real Bearer token for the secured operations.

Accounts are registered on the server at ``FUZZ_BASE_URL`` with names starting
``FUZZ_USERNAME`` and the password ``FUZZ_PASSWORD``; a fresh session is opened
whenever the current one dies (the fuzzer itself logs out and revokes sessions,
and schemathesis re-fetches the token on a 401).
"""

from __future__ import annotations

import itertools
import json
import os
import urllib.error
import urllib.request
from typing import Any

import schemathesis


def _post(path: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        os.environ["FUZZ_BASE_URL"] + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read() or b"{}"))


_accounts = itertools.count()
_current: dict[str, str] = {}


def login() -> str:
    """A new session for the fuzzing account.

    The fuzzer can lock an account out (it learns the username from responses and
    sends wrong passwords), so when a login fails a fresh account takes over.
    """
    for _ in range(3):
        if _current:
            status, body = _post("/login", _current)
            if status == 200:
                return str(body["token"])
        credentials = {
            "username": f"{os.environ['FUZZ_USERNAME']}-{next(_accounts)}",
            "password": os.environ["FUZZ_PASSWORD"],
        }
        created, body = _post("/register", credentials)
        if created != 201:
            raise RuntimeError(f"could not register a fuzzing account: {created} {body}")
        _current.clear()
        _current.update(credentials)
    raise RuntimeError("could not log in a fuzzing account")


@schemathesis.auth(refresh_interval=120)
class SessionToken:
    def get(self, case: Any, ctx: Any) -> str:
        return login()

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
