"""DBSC on the service (session.binding, session.bound_routes): registration, the bound check, refresh, races.

Through the real app (functions-framework's create_app, TestClient) against the emulator; the
browser's key is made and its proofs signed here with joserfc, as Chromium would (ES256 on P-256).
Cookies are sent by hand, as a browser or a thief would, so each test says exactly what it presents.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey
from starlette.testclient import TestClient

from session import binding, dbsc, tokens
from tests.conftest import AppFactory, bearer, emulator_get, main_module, register, together
from tests.support import FakeClock, assert_problem, use_clock

COOKIE = "__session"
BOUND = binding.BOUND_COOKIE.name
PASSWORD = "correct horse battery"
ORIGIN = "https://testserver"


def sign(key: ECKey, jti: str, *, with_jwk: bool = True) -> str:
    header: dict[str, Any] = {"alg": "ES256", "typ": "dbsc+jwt"}
    if with_jwk:
        header["jwk"] = key.as_dict(private=False)
    return jws.serialize_compact(header, json.dumps({"jti": jti}).encode(), key, algorithms=["ES256"])


def challenge_of(header: str, name: str = "challenge") -> str:
    """The challenge of a ``Secure-Session-Registration`` (``;challenge="…"``) or ``-Challenge`` (``"…";id=``)."""
    if name == "challenge":
        return header.split(';challenge="', 1)[1].split('"', 1)[0]
    return header.split('"', 2)[1]


@dataclass
class Browser:
    """One logged-in browser: its session token, its key, and its bound cookie once registered."""

    client: TestClient
    token: str
    registration: str | None
    key: ECKey
    session_id: str = ""
    bound: str | None = None

    def cookies(self, *, bound: str | None = None, with_bound: bool = True) -> dict[str, str]:
        value = bound if bound is not None else self.bound
        jar = f"{COOKIE}={self.token}" + (f"; {BOUND}={value}" if with_bound and value else "")
        return {"Cookie": jar}

    def register(self, proof: str | None = None) -> Any:
        assert self.registration is not None
        proof = proof or sign(self.key, challenge_of(self.registration))
        response = self.client.post(
            "/dbsc/register", headers={**self.cookies(with_bound=False), "Secure-Session-Response": proof}
        )
        if response.status_code == 200:
            self.session_id = response.json()["session_identifier"]
            self.bound = _bound_value(response)
        return response

    def refresh(self, proof: str | None = None, session_id: str | None = None) -> Any:
        headers = {**self.cookies(), "Sec-Secure-Session-Id": session_id or self.session_id}
        if proof is not None:
            headers["Secure-Session-Response"] = proof
        return self.client.post("/dbsc/refresh", headers=headers)

    def full_refresh(self) -> Any:
        challenged = self.refresh()
        assert challenged.status_code == 403, challenged.text
        answer = self.refresh(sign(self.key, challenge_of(challenged.headers["secure-session-challenge"], "id")))
        if answer.status_code == 200:
            self.bound = _bound_value(answer)
        return answer

    def profile(self, **cookies: Any) -> Any:
        return self.client.get("/profile", headers=self.cookies(**cookies))


def _bound_value(response: Any) -> str:
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(f"{BOUND}="))
    assert cookie.endswith(f"; {binding.BOUND_COOKIE.attributes}"), cookie
    return cookie.split("=", 1)[1].split(";", 1)[0]


def browser(client: TestClient, username: str = "alice") -> Browser:
    response = client.post("/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # cookies go by hand
    return Browser(
        client, response.json()["token"], response.headers.get("secure-session-registration"), ECKey.generate_key()
    )


@pytest.fixture
def dbsc_client(make_client: AppFactory) -> TestClient:
    client = make_client(SESSION_DBSC="on", SESSION_DBSC_COOKIE_SECONDS="60", SESSION_ALLOWED_ORIGINS=ORIGIN)
    register(client, "alice")
    register(client, "bob")
    client.cookies.clear()
    return client


def test_off_by_default_nothing_is_offered_and_the_endpoints_are_absent(client: TestClient) -> None:
    register(client, "alice")
    b = browser(client)
    assert b.registration is None
    assert_problem(client.post("/dbsc/register", headers={"Secure-Session-Response": "x.y.z"}), 404, "not_found")
    assert_problem(client.post("/dbsc/refresh"), 404, "not_found")
    assert b.profile().status_code == 200  # the cookie alone, as ever


def test_login_offers_registration_with_a_challenge_stored_as_a_hash(
    dbsc_client: TestClient, project: str, emulator_host: str
) -> None:
    b = browser(dbsc_client)
    assert b.registration is not None and b.registration.startswith('(ES256);path="/dbsc/register";challenge="')
    challenge = challenge_of(b.registration)
    stored = emulator_get(emulator_host, project, f"sessions/{tokens.hash_token(b.token)}")["fields"]["dbsc"]
    pending = stored["mapValue"]["fields"]["challenges"]["arrayValue"]["values"]
    assert [c["mapValue"]["fields"]["hash"]["stringValue"] for c in pending] == [dbsc.hash_challenge(challenge)]
    assert challenge not in json.dumps(stored)
    # Not yet bound: the cookie alone still works, and the Bearer token too.
    assert b.profile().status_code == 200
    assert dbsc_client.get("/profile", headers=bearer(b.token)).status_code == 200


def test_a_touch_resends_the_cookie_without_offering_registration_again(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    clock = use_clock(FakeClock())
    clock.advance(120)  # past SESSION_TOUCH_SECONDS: the cookie is re-sent
    response = b.profile()
    assert response.status_code == 200 and "set-cookie" in response.headers
    assert "secure-session-registration" not in response.headers


def test_registration_binds_and_then_the_session_cookie_alone_is_refused(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    response = b.register()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "session_identifier": b.session_id,
        "refresh_url": "/dbsc/refresh",
        "scope": {"origin": "https://testserver", "include_site": False},
        "credentials": [{"type": "cookie", "name": BOUND, "attributes": binding.BOUND_COOKIE.attributes}],
    }
    listed = dbsc_client.get("/sessions", headers=b.cookies()).json()["sessions"]
    assert [s["id"] for s in listed if s["current"]] == [b.session_id]

    assert b.profile().status_code == 200
    refused = assert_problem(b.profile(with_bound=False), 401, "unauthenticated")
    assert refused["reason"] == "bound_credential_missing"
    assert assert_problem(b.profile(bound="forged"), 401, "unauthenticated")["reason"] == "bound_credential_invalid"
    as_bearer = dbsc_client.get("/profile", headers=bearer(b.token))
    assert assert_problem(as_bearer, 401, "unauthenticated")["reason"] == "bound_session_bearer"


def test_the_bound_cookie_expires_and_a_refresh_issues_a_new_one(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    clock = use_clock(FakeClock())
    clock.advance(61)
    old = b.bound
    assert assert_problem(b.profile(), 401, "unauthenticated")["reason"] == "bound_credential_expired"
    assert b.full_refresh().status_code == 200
    assert b.bound != old and b.profile().status_code == 200
    # The expired one is not kept past the refresh.
    assert assert_problem(b.profile(bound=old), 401, "unauthenticated")["reason"] == "bound_credential_invalid"


@pytest.mark.parametrize("case", ["wrong_key", "reused_challenge", "another_sessions_challenge", "another_session_id"])
def test_forged_and_replayed_refresh_proofs_are_refused(dbsc_client: TestClient, case: str) -> None:
    alice, bob = browser(dbsc_client, "alice"), browser(dbsc_client, "bob")
    assert alice.register().status_code == 200 and bob.register().status_code == 200
    challenged = alice.refresh()
    assert challenged.status_code == 403
    challenge = challenge_of(challenged.headers["secure-session-challenge"], "id")
    if case == "wrong_key":
        answer = alice.refresh(sign(ECKey.generate_key(), challenge, with_jwk=False))
        assert assert_problem(answer, 400, "bound_proof_refused")["refusal"] == "bad_signature"
    elif case == "reused_challenge":
        good = sign(alice.key, challenge, with_jwk=False)
        assert alice.refresh(good).status_code == 200
        replay = alice.refresh(good)
        assert_problem(replay, 403, "bound_challenge")  # used: only a new challenge, no cookie
        assert "set-cookie" not in replay.headers
    elif case == "another_sessions_challenge":
        bob_challenge = challenge_of(bob.refresh().headers["secure-session-challenge"], "id")
        answer = alice.refresh(sign(alice.key, bob_challenge, with_jwk=False))
        assert_problem(answer, 403, "bound_challenge")
        assert "set-cookie" not in answer.headers
    else:  # alice's cookie, alice's key and challenge, but bob's session id
        answer = alice.refresh(sign(alice.key, challenge, with_jwk=False), session_id=bob.session_id)
        assert (answer.status_code, answer.json()) == (200, {"continue": False})
        assert "set-cookie" not in answer.headers
    assert alice.profile(bound="nothing-issued").status_code == 401


def test_registration_proofs_are_refused_when_forged_or_replayed(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    assert b.registration is not None
    wrong = sign(ECKey.generate_key(), "not-the-challenge")
    assert assert_problem(b.register(wrong), 400, "bound_proof_refused")["refusal"] == "challenge_mismatch"
    good = sign(b.key, challenge_of(b.registration))
    assert b.register(good).status_code == 200
    again = assert_problem(b.register(good), 400, "bound_proof_refused")  # single use
    assert again["refusal"] == "no_registration_pending"
    missing = dbsc_client.post("/dbsc/register", headers={"Secure-Session-Response": good})
    assert assert_problem(missing, 401, "unauthenticated")["reason"] == "no_credentials"


def test_an_unknown_or_logged_out_session_ends_the_browsers_session(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    assert dbsc_client.post("/logout", headers={**b.cookies(), "Origin": ORIGIN}).status_code == 204
    ended = b.refresh()
    assert (ended.status_code, ended.json()) == (200, {"continue": False})
    nothing = dbsc_client.post("/dbsc/refresh", headers={"Sec-Secure-Session-Id": "x"})
    assert (nothing.status_code, nothing.json()) == (200, {"continue": False})


def test_a_revocation_from_another_session_ends_the_bound_one(dbsc_client: TestClient) -> None:
    bound, other = browser(dbsc_client), browser(dbsc_client)
    assert bound.register().status_code == 200
    revoked = dbsc_client.delete(f"/sessions/{bound.session_id}", headers=bearer(other.token))
    assert revoked.status_code == 204, revoked.text
    assert assert_problem(bound.profile(), 401, "unauthenticated")["reason"] == "unknown"
    assert bound.refresh().json() == {"continue": False}


def test_a_password_change_ends_the_bound_session_and_offers_a_new_registration(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    changed = dbsc_client.post(
        "/profile/password",
        headers={**b.cookies(), "Origin": ORIGIN},
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["secure-session-registration"].startswith('(ES256);path="/dbsc/register"')
    assert b.profile().status_code == 401
    assert b.refresh().json() == {"continue": False}


def test_two_refreshes_at_once_leave_a_working_cookie_or_lose_cleanly(dbsc_client: TestClient) -> None:
    for _ in range(5):
        b = browser(dbsc_client)
        assert b.register().status_code == 200
        challenge = challenge_of(b.refresh().headers["secure-session-challenge"], "id")
        proof = sign(b.key, challenge, with_jwk=False)
        answers = together([functools.partial(b.refresh, proof)] * 2)
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 403], [a.text for a in answers]
        winner = next(a for a in answers if a.status_code == 200)
        assert b.profile(bound=_bound_value(winner)).status_code == 200
        # Two full refreshes at once: within a bucket both are sent the same challenge (asking again writes
        # nothing, so a thief cannot displace it), so one wins and the other loses cleanly, a 403 with the next
        # challenge; every cookie issued works (the session keeps two credentials), whichever the browser keeps.
        results = together([b.full_refresh, b.full_refresh])
        assert 200 in [r.status_code for r in results], [r.text for r in results]
        for r in results:
            if r.status_code == 200:
                assert b.profile(bound=_bound_value(r)).status_code == 200
            else:
                assert_problem(r, 403, "bound_challenge")
                assert "set-cookie" not in r.headers


def test_the_cache_never_admits_a_request_without_the_bound_credential(make_client: AppFactory) -> None:
    """Two instances with the cache dial at 300 s: one cached the session before the other bound it."""
    one = make_client(SESSION_DBSC="on", SESSION_CACHE_SECONDS="300")
    cached = main_module().api_instance.service
    other = make_client(SESSION_DBSC="on", SESSION_CACHE_SECONDS="300")
    register(one, "alice")
    b = browser(one)
    assert b.profile().status_code == 200 and len(cached.authn.cache or ()) == 1  # `one` holds it, unbound
    b.client = other
    assert b.register().status_code == 200  # bound through `other`
    b.client = one
    assert b.profile(with_bound=False).status_code == 401  # `one` does not take its stale copy's word
    assert one.get("/profile", headers=bearer(b.token)).status_code == 401
    assert b.profile().status_code == 200  # with the bound cookie: read, and now cached bound
    assert b.profile(with_bound=False).status_code == 401  # from the cache: still refused
    assert one.get("/profile", headers=bearer(b.token)).status_code == 401
    # A credential issued by `other` after `one` cached the session is checked in the store, and admitted.
    b.client = other
    assert b.full_refresh().status_code == 200
    b.client = one
    assert b.profile().status_code == 200


def test_session_cookie_lifetime_setting_reaches_the_bound_cookie(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    response = b.register()
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(f"{BOUND}="))
    assert "Max-Age=60;" in cookie
    assert timedelta(seconds=60) == timedelta(seconds=main_module().api_instance.settings.dbsc_cookie_seconds)


@pytest.mark.parametrize("kind", ["flask", "aio", "aiosync"])
def test_require_session_enforces_the_bound_credential(kind: str, make_client: AppFactory) -> None:
    from session import guard
    from tests.test_guard import Target

    client = make_client(SESSION_DBSC="on", SESSION_DEFAULT_PERMISSIONS="read,orders:write")
    register(client, "alice")
    b = browser(client)
    assert b.register().status_code == 200
    guard.reset()
    target = Target(f"{kind}_orders")
    try:
        assert target.call(headers=b.cookies()).status == 200
        alone = target.call(headers=b.cookies(with_bound=False))
        assert (alone.status, alone.body["reason"]) == (401, "bound_credential_missing")
        as_bearer = target.call(token=b.token)
        assert (as_bearer.status, as_bearer.body["reason"]) == (401, "bound_session_bearer")
    finally:
        target.close()
        guard.reset()


def test_every_refusal_of_session_dbsc_is_a_documented_refusal_value() -> None:
    """The Problem model's ``refusal`` values are session.dbsc's reasons (and the service's own one): no drift."""
    import typing

    from session.models import Problem

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    declared = set(typing.get_args(typing.get_args(Problem.model_fields["refusal"].annotation)[0]))
    reasons = {cls.reason for cls in subclasses(dbsc.DbscError) if cls is not dbsc.DbscError}
    assert declared == reasons | {"no_registration_pending"}


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        (
            {"Sec-Secure-Session-Id": "caf\u00e9".encode("latin-1")},
            200,
            None,
        ),  # not this session's id: the browser's session ends
        ({"Secure-Session-Response": "not a jwt"}, 400, "bound_proof_refused"),
        ({"Secure-Session-Response": "a.b.c" * 2000}, 400, "bound_proof_refused"),
        ({"Secure-Session-Response": "e30.e30.x"}, 400, "bound_proof_refused"),  # {} header: no alg
    ],
)
def test_bad_refresh_input_gets_a_4xx_or_the_end_never_a_500(
    dbsc_client: TestClient, headers: dict[str, Any], status: int, code: str | None
) -> None:
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    sent = {**b.cookies(), "Sec-Secure-Session-Id": b.session_id, **headers}
    response = dbsc_client.post("/dbsc/refresh", headers=sent)
    assert response.status_code == status, response.text
    if code is None:
        assert response.json() == {"continue": False}
    else:
        assert response.json()["code"] == code


# --- security events (issue 22 on issue 25) -----------------------------------------------------------


def _event_types(client: TestClient, b: Browser) -> list[tuple[str, Any]]:
    response = client.get("/security-events", headers={"Authorization": f"Bearer {b.token}"})
    if response.status_code == 401:  # a bound session refuses Bearer use: read the events with its cookies
        response = client.get("/security-events", headers=b.cookies())
    assert response.status_code == 200, response.text
    return [(e["type"], e["session_id"]) for e in response.json()["events"]]


def test_binding_and_a_refused_refresh_proof_are_security_events(dbsc_client: TestClient) -> None:
    b = browser(dbsc_client)
    assert b.register().status_code == 200
    events = _event_types(dbsc_client, b)
    assert events[:2] == [("session_bound", b.session_id), ("login_new_device", b.session_id)]
    challenged = b.refresh()
    challenge = challenge_of(challenged.headers["secure-session-challenge"], "id")
    for _ in range(3):  # a thief repeating a refused proof buys one event per session per 10 minutes, not three
        answer = b.refresh(sign(ECKey.generate_key(), challenge, with_jwk=False))
        assert assert_problem(answer, 400, "bound_proof_refused")["refusal"] == "bad_signature"
    assert b.full_refresh().status_code == 200  # a refresh that succeeds records nothing
    events = _event_types(dbsc_client, b)
    assert [t for t, _ in events] == ["bound_refresh_failed", "session_bound", "login_new_device"]
    response = dbsc_client.get("/security-events", headers=b.cookies()).json()
    assert response["events"][0]["detail"] == {"refusal": "bad_signature"}
