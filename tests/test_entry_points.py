"""Each entry point deployed alone serves its endpoint at its root path (and, behind a Firebase Hosting
rewrite, at its own name)."""

from __future__ import annotations

import pytest

from tests.conftest import AppFactory, bearer

PASSWORD = "correct horse battery"


def test_single_function_deploys(make_client: AppFactory) -> None:
    register = make_client("register")
    assert register.post("/", json={"username": "erin", "password": PASSWORD}).status_code == 201
    login = make_client("login")
    response = login.post("/", json={"username": "erin", "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]

    profile = make_client("profile")
    assert profile.get("/", headers=bearer(token)).json()["username"] == "erin"
    sessions = make_client("sessions")
    listed = sessions.get("/", headers=bearer(token)).json()["sessions"]
    assert len(listed) == 1
    changed = profile.post(
        "/password", headers=bearer(token), json={"current_password": PASSWORD, "new_password": "new passphrase!"}
    )
    assert changed.status_code == 200
    token = changed.json()["token"]
    session_id = sessions.get("/", headers=bearer(token)).json()["sessions"][0]["id"]
    logout = make_client("logout")
    assert logout.post("/", headers=bearer(token)).status_code == 204
    assert sessions.delete(f"/{session_id}", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("target", "method", "path"),
    [("login", "GET", "/"), ("logout", "GET", "/"), ("register", "PATCH", "/"), ("sessions", "POST", "/")],
)
def test_single_function_wrong_method(make_static_client: AppFactory, target: str, method: str, path: str) -> None:
    response = make_static_client(target).request(method, path)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_single_function_other_paths_are_404(make_static_client: AppFactory) -> None:
    login = make_static_client("login")
    response = login.post("/profile", json={"username": "erin", "password": PASSWORD})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_hosting_rewrite_keeps_the_function_name(make_client: AppFactory) -> None:
    """A Hosting rewrite of /login to the `login` function forwards the path /login unchanged."""
    assert make_client("register").post("/register", json={"username": "erin", "password": PASSWORD}).status_code == 201
    token = make_client("login").post("/login", json={"username": "erin", "password": PASSWORD}).json()["token"]
    profile = make_client("profile")
    assert profile.get("/profile", headers=bearer(token)).status_code == 200
    assert profile.get("/profile/", headers=bearer(token)).status_code == 200
