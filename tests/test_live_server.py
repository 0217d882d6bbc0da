"""The same contract against the `make run` server, over real HTTP."""

from __future__ import annotations

import httpx2 as httpx


def test_full_flow_over_http(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        assert http.post("/register", json={"username": "bob", "password": "hunter2hunter2"}).status_code == 201
        login = http.post("/login", json={"username": "bob", "password": "hunter2hunter2"})
        assert login.status_code == 200
        token = login.json()["token"]
        assert "HttpOnly" in login.headers["set-cookie"]
        profile = http.get("/profile", headers={"Authorization": f"Bearer {token}"})
        assert profile.status_code == 200
        assert profile.json()["username"] == "bob"
        bad = http.post("/login", content="{", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400
        assert bad.json()["code"] == "invalid_json"
        assert http.post("/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
        after = http.get("/profile", headers={"Authorization": f"Bearer {token}"})
        assert after.status_code == 401
        assert after.headers["www-authenticate"].startswith("Bearer")
