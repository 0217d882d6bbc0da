"""A property over every username the alphabet allows: no 5xx, ever, from register, login, profile and logout.

Hypothesis draws names of 3 to 64 characters of a-z 0-9 . _ - (in either case,
as a client may send them), with names of Firestore's reserved form __…__ drawn
on purpose, and sends each through the real service on the real emulator: a
register, a login, the profile and logout with the real token, and the profile
and logout with a forged token naming that user.
"""

from __future__ import annotations

import base64
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.testclient import TestClient

from session.models import RegisterRequest
from tests.conftest import bearer

PASSWORD = "correct horse battery"
ALPHABET = string.ascii_lowercase + string.digits + "._-"
CHARS = ALPHABET + string.ascii_uppercase

NAMES = st.one_of(
    st.text(alphabet=CHARS, min_size=3, max_size=64),
    st.text(alphabet=CHARS, min_size=0, max_size=60).map(lambda core: f"__{core}__"),
)


def _valid(username: str) -> bool:
    """What the one username rule says (session.models), independently of the HTTP answers."""
    try:
        RegisterRequest.model_validate({"username": username, "password": PASSWORD})
    except ValidationError:
        return False
    return True


def _forged(username: str) -> str:
    key = base64.urlsafe_b64encode(username.lower().encode()).rstrip(b"=").decode()
    return f"{key}.{'A' * 43}"


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=NAMES)
@example(name="__x__")
@example(name="__name__")
@example(name="__NAME__")
@example(name="____")
@example(name="...")
@example(name="._-")
@example(name="a" * 64)
def test_no_username_is_a_server_error(client: TestClient, name: str) -> None:
    body = {"username": name, "password": PASSWORD}
    registered = client.post("/register", json=body)
    assert registered.status_code in (201, 400, 409), (name, registered.text)
    logged_in = client.post("/login", json=body)
    assert logged_in.status_code in (200, 400), (name, logged_in.text)
    assert (registered.status_code == 400) == (logged_in.status_code == 400) == (not _valid(name)), name
    if logged_in.status_code == 200:
        token = logged_in.json()["token"]
        profile = client.get("/profile", headers=bearer(token))
        assert profile.status_code == 200, (name, profile.text)
        assert profile.json()["username"] == name.lower()
        assert client.post("/logout", headers=bearer(token)).status_code == 204
    forged = _forged(name)
    profile = client.get("/profile", headers=bearer(forged))
    assert profile.status_code == 401, (name, profile.text)
    assert client.post("/logout", headers=bearer(forged)).status_code == 204
