"""Red-team findings on issue 22 (security events, trusted devices) and issue 25 (DBSC), as failing tests.

Each test states the behaviour the service promises and fails today: it is marked
``xfail(strict=True)`` so the suite stays green, and turns into an XPASS failure once the
defect is fixed (then drop the mark). Everything runs through the real app against the emulator.
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


@pytest.mark.xfail(
    strict=True,
    reason="a login from the device racing DELETE /devices/{id} re-reads the account, finds the device gone and "
    "writes it whole again (opening._device_write: stored None -> plan.put), so the revoked cookie is trusted again",
)
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
@pytest.mark.xfail(
    strict=True,
    reason="pages.events_position accepts any [A-Za-z0-9_-]{16,64} id, and Firestore refuses a reserved "
    "document id (__.*__) in the query cursor: InvalidArgument becomes a 500",
)
def test_an_events_page_token_naming_a_reserved_document_id_is_a_400(client: TestClient, event_id: str) -> None:
    register(client)
    token = _login(client).json()["token"]
    forged = pages.encode_events(datetime(2024, 1, 1, tzinfo=UTC), event_id)
    response = client.get("/security-events", params={"page_token": forged}, headers=bearer(token))
    assert_problem(response, 400, "invalid_request")


# --- DBSC: what a thief holding only the session cookie can do ----------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="every refresh without a proof writes a new challenge and keeps only KEPT_CHALLENGES=2: a thief with "
    "the session cookie alone displaces the browser's pending challenge (and buys a write per request)",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="POST /logout takes the token without binding.refusal: a bound session's token as a Bearer "
    "token (which docs/dbsc.md says only a thief sends) still ends the session",
)
def test_a_bound_session_cannot_be_logged_out_with_its_token_as_a_bearer_token(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    response = dbsc_client.post("/logout", headers=bearer(b.token))
    assert response.status_code == 401, response.status_code
    assert b.profile().status_code == 200  # the browser's bound session goes on
