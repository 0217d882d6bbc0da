"""Issue 22, part 4: the service's events on Pub/Sub, against the real Pub/Sub and Firestore emulators.

The events are the ones the service's own commits wrote: a subscriber pulls them from a subscription
(message ordering on) and sees their types, each user's in order, and no secret. With Pub/Sub stopped
mid-run the user's requests still succeed within the publish deadline, the events stay
``published: false``, and ``python -m session events publish-pending`` delivers them afterwards.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from typing import Any

import pytest
from starlette.testclient import TestClient

from session import cli, tokens
from tests.conftest import AppFactory, bearer, emulator_get, register
from tests.pubsub_emulator import PubSubEmulator
from tests.test_publish import Topic, _topic, pubsub_host, topic  # noqa: F401 (the session's Pub/Sub emulator)

PASSWORD = "correct horse battery"
NEW_PASSWORD = "another horse battery"


def _login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response


def _published_flags(emulator_host: str, project: str, username: str) -> list[Any]:
    docs = emulator_get(emulator_host, project, f"users/{username}/events?pageSize=300").get("documents", [])
    return [d["fields"]["published"].get("booleanValue") for d in docs]


def _with_topic(make_client: AppFactory, where: Topic) -> TestClient:
    return make_client(SESSION_EVENTS_TOPIC=where.topic, PUBSUB_EMULATOR_HOST=where.host)


def test_the_services_events_arrive_in_order_per_user_without_secrets(
    make_client: AppFactory,
    topic: Topic,  # noqa: F811
    emulator_host: str,
    project: str,
) -> None:
    client = _with_topic(make_client, topic)
    register(client, "alice")
    register(client, "bob")
    secrets = [PASSWORD, NEW_PASSWORD]
    first = _login(client, "alice")
    bob = make_client(SESSION_EVENTS_TOPIC=topic.topic, PUBSUB_EMULATOR_HOST=topic.host)
    _login(bob, "bob")
    token = _login(client, "alice").json()["token"]  # with the device cookie: "login"
    changed = client.post(
        "/profile/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer(token)
    )
    assert changed.status_code == 200
    assert client.delete("/sessions", headers=bearer(changed.json()["token"])).status_code == 204
    for t in (first.json()["token"], token, changed.json()["token"]):
        secrets += [t, tokens.hash_token(t)]
    secrets += [c.split(";")[0].partition("=")[2] for c in first.headers.get_list("set-cookie")]

    messages = topic.pull(5)
    assert len(messages) == 5
    by_user: dict[str, list[str]] = {}
    for m in messages:
        data = json.loads(m.data)
        assert dict(m.attributes) == {"type": data["type"], "user_id": data["user_id"]}
        assert m.ordering_key == data["user_id"]
        by_user.setdefault(data["username"], []).append(data["type"])
        assert set(data) == {"id", "type", "at", "session_id", "device", "network", "detail", "user_id", "username"}
        for secret in secrets:
            assert secret not in m.data.decode(), data["type"]
    assert by_user == {
        "alice": ["login_new_device", "login", "password_changed", "sessions_revoked"],
        "bob": ["login_new_device"],
    }
    # Each event is marked published once Pub/Sub took it.
    assert _published_flags(emulator_host, project, "alice") == [True] * 4


def test_with_pubsub_down_requests_succeed_and_publish_pending_delivers_afterwards(
    make_client: AppFactory, emulator_host: str, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PubSubEmulator() as emulator:
        fresh = _topic(emulator.host)
        client = _with_topic(make_client, fresh)
        register(client, "alice")
        _login(client, "alice")
        assert [json.loads(m.data)["type"] for m in fresh.pull(1)] == ["login_new_device"]

        emulator.stop()  # mid-run: the service's publisher has its channel open
        started = time.monotonic()
        token = _login(client, "alice").json()["token"]
        assert client.delete("/sessions", headers=bearer(token)).status_code == 204
        elapsed = time.monotonic() - started
        assert elapsed < 6, f"two requests took {elapsed:.1f} s with Pub/Sub down"  # each within ~1 s of waiting
        assert sorted(_published_flags(emulator_host, project, "alice"), key=str) == [False, False, True]

        emulator.start()  # the same port; the emulator forgets its topics: make them again
        fresh.create()
        monkeypatch.setenv("SESSION_EVENTS_TOPIC", fresh.topic)
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", fresh.host)
        err = io.StringIO()
        monkeypatch.setattr("sys.stderr", err)
        assert cli.main(["events", "publish-pending"]) == 0
        assert "2 published" in err.getvalue()
        assert [json.loads(m.data)["type"] for m in fresh.pull(2)] == ["login", "sessions_revoked"]
        assert _published_flags(emulator_host, project, "alice") == [True] * 3
        assert cli.main(["events", "publish-pending"]) == 0  # nothing left: a second run sends nothing


def test_publish_pending_without_a_topic_is_a_usage_error(client: TestClient) -> None:
    os.environ.pop("SESSION_EVENTS_TOPIC", None)
    assert cli.main(["events", "publish-pending"]) != 0


def test_a_topic_id_alone_names_a_topic_in_the_services_project(pubsub_host: str) -> None:  # noqa: F811
    from session.config import load_settings

    project = f"demo-t{uuid.uuid4().hex[:12]}"
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": project, "SESSION_EVENTS_TOPIC": "session-events"})
    assert settings.events_topic_path == f"projects/{project}/topics/session-events"
