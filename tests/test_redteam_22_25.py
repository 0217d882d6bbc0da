"""Red-team findings on issue 22 (security events, trusted devices) and issue 25 (DBSC), kept as regression tests.

Each was first written as a strict xfail against commit 2e679a9 and failed there (the revoked device
trusted again by a racing login in 5 of 8 trials; a 500 on a page token naming a reserved document id;
a thief's proof-less refreshes displacing the browser's challenge), then fixed. The fourth (a Bearer
logout of a bound session) is a decision, documented in docs/dbsc.md. Everything runs through the real
app against the emulator.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from session import pages
from tests.conftest import AppFactory, bearer, register, together
from tests.support import assert_problem
from tests.test_binding import COOKIE, browser, challenge_of, dbsc_client, sign

__all__ = ["dbsc_client"]  # the fixture, imported for these tests

PASSWORD = "correct horse battery"


def _login(client: TestClient, **headers: str) -> Any:
    response = client.post("/login", json={"username": "alice", "password": PASSWORD}, headers=headers)
    assert response.status_code == 200, response.text
    return response


# --- a device revoke that does not end the device's trust ---------------------------------------


def test_a_revoked_device_stays_revoked_when_a_login_from_it_races_the_revoke(make_client: AppFactory) -> None:
    laptop = make_client(SESSION_MAX_PER_USER="0")
    register(laptop)
    admin = _login(laptop).json()["token"]
    phone = make_client(SESSION_MAX_PER_USER="0")
    resurrected = []
    for _ in range(10):
        phone_token = _login(phone, **{"User-Agent": "phone"}).json()["token"]  # a (new) trusted device cookie
        listed = phone.get("/devices", headers=bearer(phone_token)).json()["devices"]
        (device,) = [d["id"] for d in listed if d["current"]]
        revoked, login = together(
            [
                functools.partial(laptop.delete, f"/devices/{device}", headers=bearer(admin)),
                functools.partial(phone.post, "/login", json={"username": "alice", "password": PASSWORD}),
            ]
        )
        assert login.status_code == 200, login.text
        trusted = [d["id"] for d in laptop.get("/devices", headers=bearer(admin)).json()["devices"]]
        if revoked.status_code == 204 and device in trusted:
            resurrected.append(device)
            break
    # A 204 (and its device_revoked event) must mean the device is no longer trusted.
    assert resurrected == []


# --- a 500 on a page token of the new route --------------------------------------------------------


@pytest.mark.parametrize("event_id", ["__aaaaaaaaaaaaaaaa__", "_" * 16])
def test_an_events_page_token_naming_a_reserved_document_id_is_a_400(client: TestClient, event_id: str) -> None:
    register(client)
    token = _login(client).json()["token"]
    forged = pages.encode_events(datetime(2024, 1, 1, tzinfo=UTC), event_id)
    response = client.get("/security-events", params={"page_token": forged}, headers=bearer(token))
    assert_problem(response, 400, "invalid_request")


# --- DBSC: what a thief holding only the session cookie can do ----------------------------------


def test_a_thiefs_refreshes_without_a_proof_do_not_refuse_the_browsers_answer(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    challenged = b.refresh()
    assert challenged.status_code == 403
    challenge = challenge_of(challenged.headers["secure-session-challenge"], "id")
    thief = {"Cookie": f"{COOKIE}={b.token}", "Sec-Secure-Session-Id": b.session_id}  # no key, no bound cookie
    for _ in range(2):
        assert dbsc_client.post("/dbsc/refresh", headers=thief).status_code == 403
    # The browser answers the challenge it was sent, signed by its key: it must get its bound cookie.
    assert b.refresh(sign(b.key, challenge)).status_code == 200


def test_logout_ends_a_bound_session_with_whatever_credential_is_presented(dbsc_client: TestClient) -> None:
    # Decided (docs/dbsc.md, "Logout"): ending a session is never an escalation, so logout is exempt from the
    # bound credential. Refusing it would keep alive a session whose token leaked, and would leave a browser
    # whose refresh fails unable to log out. A thief with the token can end the session, never use it.
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    response = dbsc_client.post("/logout", headers=bearer(b.token))
    assert response.status_code == 204, response.status_code
    assert b.profile().status_code == 401  # ended: the bound cookie does not keep it alive
