"""The foundation contract through functions-framework's create_app and a real emulator."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import argon2
import pytest
from starlette.testclient import TestClient

from tests.conftest import AppFactory, bearer, emulator_get, login, main_module, register
from tests.support import Ahead, use_clock

PASSWORD = "correct horse battery"


def _ts(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def test_register_returns_the_user(client: TestClient) -> None:
    response = client.post(
        "/register",
        json={"username": "Alice.B-1", "password": PASSWORD, "display_name": "Alice", "email": "alice@example.com"},
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"user_id", "username", "display_name", "email", "permissions", "created_at"}
    assert body["username"] == "alice.b-1"  # stored lower-cased
    assert body["display_name"] == "Alice"
    assert body["email"] == "alice@example.com"
    assert body["permissions"] == ["read"]
    assert abs(_ts(body["created_at"]) - datetime.now(UTC)) < timedelta(seconds=30)
    assert len(body["user_id"]) >= 16


def test_register_uses_default_permissions_setting(make_client: AppFactory) -> None:
    client = make_client(SESSION_DEFAULT_PERMISSIONS="read,orders:write")
    assert register(client)["permissions"] == ["read", "orders:write"]


def test_username_is_case_insensitive(client: TestClient) -> None:
    register(client, "Alice")
    response = client.post("/register", json={"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"
    assert login(client, "aLiCe")


def test_registration_can_be_switched_off(make_client: AppFactory) -> None:
    client = make_client(SESSION_ALLOW_REGISTRATION="false")
    response = client.post("/register", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert response.json()["code"] == "registration_disabled"


def test_ten_concurrent_registrations_of_one_name_give_one_201(client: TestClient) -> None:
    def attempt(i: int) -> int:
        return client.post("/register", json={"username": "race", "password": f"password-{i}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(attempt, range(10)))
    assert sorted(statuses) == [201] + [409] * 9


def test_login_returns_a_token_and_sets_the_cookie(client: TestClient) -> None:
    user = register(client)
    before = datetime.now(UTC)
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "token_type", "user_id", "username", "permissions", "logged_in_at", "expires_at"}
    assert body["token_type"] == "Bearer"
    assert body["user_id"] == user["user_id"]
    assert body["username"] == "alice"
    assert body["permissions"] == ["read"]
    logged_in, expires = _ts(body["logged_in_at"]), _ts(body["expires_at"])
    assert before - timedelta(seconds=5) <= logged_in <= datetime.now(UTC) + timedelta(seconds=5)
    assert expires > logged_in
    cookie, device = response.headers.get_list("set-cookie")  # the session cookie, then the device cookie
    assert device.startswith("__Host-session-device=")  # tests/test_device_lockout.py checks it
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0] == f"__session={body['token']}"
    named = {a.split("=")[0].lower(): a.partition("=")[2] for a in attributes[1:]}
    # Attribute names and the SameSite value are case-insensitive (RFC 6265bis).
    assert set(named) == {"httponly", "secure", "samesite", "path", "max-age"}
    assert named["samesite"].lower() == "lax" and named["path"] == "/"
    max_age = int(named["max-age"])
    assert abs(max_age - (expires - logged_in).total_seconds()) <= 2
    assert response.headers["cache-control"] == "no-store"


def test_each_login_opens_a_new_session(client: TestClient) -> None:
    register(client)
    first, second = login(client), login(client)
    assert first != second
    for token in (first, second):
        assert client.get("/profile", headers=bearer(token)).status_code == 200


def test_wrong_password_and_unknown_user_look_identical(client: TestClient) -> None:
    register(client)
    wrong = client.post("/login", json={"username": "alice", "password": "not the password"})
    unknown = client.post("/login", json={"username": "nobody", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "invalid_credentials"
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers
    assert sorted(wrong.headers.keys()) == sorted(unknown.headers.keys())


def test_unknown_user_costs_a_password_verification(client: TestClient) -> None:
    """Both paths run exactly one full argon2id verification with the same parameters: the same work.

    Counted, not timed: a wall-clock comparison through HTTP and the emulator is too noisy to catch a
    missing verification. That the dummy hash is well-formed (argon2 runs in full, then mismatches) is
    test_passwords' job.
    """
    register(client)
    passwords = main_module().api_instance.service.passwords
    verified: list[str] = []
    original = passwords.verify

    def spy(stored_hash: str, password: str) -> bool:
        verified.append(stored_hash)
        return bool(original(stored_hash, password))

    passwords.verify = spy
    try:
        for username in ("alice", "nobody"):
            reply = client.post("/login", json={"username": username, "password": "wrong password"})
            assert reply.status_code == 401
    finally:
        passwords.verify = original
    assert len(verified) == 2, "each login, known user or not, verifies one password"
    known, unknown = verified
    assert unknown != known
    assert argon2.extract_parameters(unknown) == argon2.extract_parameters(known)


def test_profile_with_bearer_and_with_cookie(client: TestClient) -> None:
    user = register(client, display_name="Alice", email="alice@example.com")
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    token = response.json()["token"]
    by_bearer = client.get("/profile", headers=bearer(token))
    assert by_bearer.status_code == 200
    body = by_bearer.json()
    assert body["user_id"] == user["user_id"]
    assert body["username"] == "alice"
    assert body["display_name"] == "Alice"
    assert body["email"] == "alice@example.com"
    assert body["permissions"] == ["read"]
    assert body["session"] == {
        "logged_in_at": response.json()["logged_in_at"],
        "expires_at": response.json()["expires_at"],
        "auth_time": response.json()["logged_in_at"],  # the login proved the password
    }
    # The TestClient's cookie jar holds the __session cookie from the login response (https base URL).
    by_cookie = client.get("/profile")
    assert by_cookie.status_code == 200
    assert by_cookie.json()["user_id"] == user["user_id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer YWxpY2U.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},  # well-formed, unknown
        {"Authorization": "Bearer " + "x" * 5000},
        {"Cookie": "__session=garbage"},
    ],
    ids=["none", "empty-bearer", "basic", "malformed", "unknown", "huge", "bad-cookie"],
)
def test_profile_rejects_bad_credentials(client: TestClient, headers: dict[str, str]) -> None:
    register(client)
    response = client.get("/profile", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


def test_logout_revokes_and_clears_the_cookie(client: TestClient) -> None:
    register(client)
    token = login(client)
    response = client.post("/logout", headers=bearer(token))
    assert response.status_code == 204
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert response.headers["set-cookie"].split(";")[0] in ("__session=", '__session=""')  # an empty value
    after = client.get("/profile", headers=bearer(token))
    assert after.status_code == 401
    assert after.json()["code"] == "unauthenticated"


def test_logout_is_idempotent(client: TestClient) -> None:
    register(client)
    token = login(client)
    assert client.post("/logout", headers=bearer(token)).status_code == 204
    assert client.post("/logout", headers=bearer(token)).status_code == 204


def test_logout_without_credentials_is_401(static_client: TestClient) -> None:
    response = static_client.post("/logout")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_expired_session_document_is_rejected(client: TestClient, project: str, emulator_host: str) -> None:
    """TTL deletion lags: a document past expires_at still exists, and must count as absent."""
    register(client)
    token = login(client)
    use_clock(Ahead()).seconds = 86400 + 1
    response = client.get("/profile", headers=bearer(token))
    assert response.status_code == 401
    # The document is still there: only the check on read stopped it.
    doc_id = hashlib.sha256(token.encode()).hexdigest()
    assert emulator_get(emulator_host, project, f"sessions/{doc_id}")["name"].endswith(doc_id)


def test_short_lifetime_expires_for_real(make_client: AppFactory) -> None:
    client = make_client(SESSION_TTL_SECONDS="1.5")
    register(client)
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    token = response.json()["token"]
    assert "Max-Age=2" in response.headers["set-cookie"]
    assert client.get("/profile", headers=bearer(token)).status_code == 200
    time.sleep(1.6)
    assert client.get("/profile", headers=bearer(token)).status_code == 401


def test_raw_token_is_nowhere_in_firestore(client: TestClient, project: str, emulator_host: str) -> None:
    register(client)
    token = login(client)
    secret = token.split(".", 1)[1]
    dump = json.dumps([emulator_get(emulator_host, project, c) for c in ("sessions", "users", "login_attempts")])
    assert secret not in dump
    assert token not in dump
    assert hashlib.sha256(token.encode()).hexdigest() in dump  # the session is keyed by the hash
    assert "correct horse" not in dump  # nor the password


def test_stored_documents_have_the_documented_shape(client: TestClient, project: str, emulator_host: str) -> None:
    user = register(client, display_name="Alice")
    token = login(client)
    user_doc = emulator_get(emulator_host, project, "users/alice")["fields"]
    assert user_doc["user_id"]["stringValue"] == user["user_id"]
    assert user_doc["password_hash"]["stringValue"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert {"display_name", "email", "permissions", "created_at", "updated_at"} <= set(user_doc)
    doc_id = hashlib.sha256(token.encode()).hexdigest()
    session_doc = emulator_get(emulator_host, project, f"sessions/{doc_id}")["fields"]
    assert "timestampValue" in session_doc["expires_at"]  # a Firestore Timestamp: the TTL field
    assert session_doc["user_id"]["stringValue"] == user["user_id"]
    assert {"created_at", "user_agent"} <= set(session_doc)


def test_login_rehashes_when_parameters_change(make_client: AppFactory, project: str, emulator_host: str) -> None:
    register(make_client())
    stronger = make_client(SESSION_ARGON2_TIME_COST="3")
    login(stronger)
    stored = emulator_get(emulator_host, project, "users/alice")["fields"]["password_hash"]["stringValue"]
    assert stored.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
    login(stronger)  # and the new hash verifies
