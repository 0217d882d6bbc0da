"""session.publish and session.events against the real Pub/Sub emulator: types, order per user, no secrets,
and a publish that keeps its deadline when Pub/Sub is gone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from session import tokens
from session.config import load_settings
from session.devices import coarse_network, device_name
from session.events import EVENT_TYPES, EventMessage, SecurityEvent
from session.publish import DISCARD_SECONDS, EventPublisher
from tests.conftest import ROOT
from tests.pubsub_emulator import PubSubEmulator, free_port

AT = datetime(2026, 12, 7, 9, 30, 0, 123456, tzinfo=UTC)
PASSWORD = "correct horse battery"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:146.0) Gecko/20100101 Firefox/146.0"
PUBSUB_MODULES = ("google.cloud.pubsub", "google.pubsub")


@pytest.fixture(scope="session")
def pubsub_host() -> Iterator[str]:
    """The Pub/Sub emulator of this test run (PUBSUB_EMULATOR_HOST if given), for the tests that publish."""
    given = os.environ.get("PUBSUB_EMULATOR_HOST")
    if given:
        yield given
        return
    with PubSubEmulator() as emulator:
        yield emulator.host


@dataclass
class Topic:
    """A fresh topic in a fresh `demo-` project, with one subscription (message ordering on)."""

    host: str
    project: str
    topic: str
    subscription: str

    def create(self) -> None:
        from google.pubsub_v1 import PublisherClient, SubscriberClient

        PublisherClient().create_topic(name=self.topic)
        SubscriberClient().create_subscription(
            request={"name": self.subscription, "topic": self.topic, "enable_message_ordering": True}
        )

    def pull(self, count: int, timeout: float = 20.0) -> list[Any]:
        """``count`` messages, acknowledged batch by batch (an ordered key releases its next one after an ack)."""
        from google.pubsub_v1 import SubscriberClient

        subscriber = SubscriberClient()
        received: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            response = subscriber.pull(request={"subscription": self.subscription, "max_messages": 100}, timeout=5)
            if response.received_messages:
                subscriber.acknowledge(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    }
                )
                received += [m.message for m in response.received_messages]
        return received


def _topic(host: str) -> Topic:
    os.environ["PUBSUB_EMULATOR_HOST"] = host  # restored after the test (conftest._restore_environ)
    project = f"demo-t{uuid.uuid4().hex[:12]}"
    topic = Topic(host, project, f"projects/{project}/topics/session-events", f"projects/{project}/subscriptions/app")
    topic.create()
    return topic


@pytest.fixture
def topic(pubsub_host: str) -> Topic:
    return _topic(pubsub_host)


def message(user: str, type_: str, at: datetime = AT, **fields: Any) -> EventMessage:
    event = SecurityEvent(type=type_, at=at, **fields)  # type: ignore[arg-type]
    return EventMessage(user_id=f"uid-{user}", username=user, event=event)


def publisher(topic: Topic, deadline: float = 1.0) -> EventPublisher:
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": topic.project,
            "SESSION_EVENTS_TOPIC": "session-events",
            "PUBSUB_EMULATOR_HOST": topic.host,
        }
    )
    return EventPublisher(settings, deadline=deadline)


async def publish_and_close(pub: EventPublisher, messages: list[EventMessage]) -> list[bool]:
    try:
        return await pub.publish(messages)
    finally:
        await pub.close()


# --- the event and its message ----------------------------------------------------------------------------


def test_the_types_are_exactly_the_issues() -> None:
    assert EVENT_TYPES == (
        "login",
        "login_new_device",
        "lockout",
        "password_changed",
        "reauthenticated",
        "session_revoked",
        "sessions_revoked",
        "email_changed",
        "account_disabled",
        "account_enabled",
        "password_set_by_admin",
        "sessions_revoked_by_admin",
        "device_revoked",
        "session_bound",  # issue 25 (DBSC)
        "bound_refresh_failed",
    )


def test_the_message_is_the_event_plus_its_user() -> None:
    sent = message(
        "alice", "login_new_device", session_id="sess-1", device="Chrome 156 on Linux", network="203.0.113.0/24"
    )
    data = json.loads(sent.data())
    assert data == {
        "id": sent.event.id,
        "type": "login_new_device",
        "at": "2026-12-07T09:30:00.123456Z",
        "session_id": "sess-1",
        "device": "Chrome 156 on Linux",
        "network": "203.0.113.0/24",
        "detail": {},
        "user_id": "uid-alice",
        "username": "alice",
    }
    assert sent.attributes() == {"type": "login_new_device", "user_id": "uid-alice"}
    assert sent.ordering_key == "uid-alice"
    assert SecurityEvent.model_validate_json(json.dumps({k: data[k] for k in SecurityEvent.model_fields})) == sent.event


def test_event_ids_are_unique() -> None:
    assert len({SecurityEvent(type="login", at=AT).id for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"type": "logged_in"}, "type"),
        ({"at": datetime(2026, 12, 7)}, "at"),  # naive: not a moment
        ({"detail": {"password": "x"}}, "detail"),
        ({"detail": {"new_password_hash": "x"}}, "detail"),
        ({"detail": {"device_cookie": "x"}}, "detail"),
        ({"detail": {"refresh_token": "x"}}, "detail"),
        ({"detail": {"Place": "x"}}, "detail"),  # keys are lower-case names
        ({"detail": {"place": "x" * 201}}, "detail"),
        ({"detail": {"nested": {"a": 1}}}, "detail"),
        ({"detail": {f"k{i}": i for i in range(11)}}, "detail"),
        ({"device": "d" * 101}, "device"),
        ({"id": "short"}, "id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_an_event_refuses_what_it_must_not_carry(fields: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SecurityEvent.model_validate({"type": "login", "at": AT, **fields})
    assert loc in {str(error["loc"][0]) for error in caught.value.errors()}


def test_the_event_is_frozen() -> None:
    event = SecurityEvent(type="login", at=AT)
    with pytest.raises(ValidationError):
        event.type = "lockout"  # type: ignore[misc]


# --- nothing at cold start --------------------------------------------------------------------------------


def _modules_after(code: str, **env: str) -> list[str]:
    script = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.startswith({PUBSUB_MODULES!r})))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "GOOGLE_CLOUD_PROJECT": "demo-cold", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')))


PUBLISH_ONE = (
    "import asyncio\n"
    "from datetime import datetime, UTC\n"
    "from session.config import load_settings\n"
    "from session.events import EventMessage, SecurityEvent\n"
    "from session.publish import EventPublisher\n"
    "pub = EventPublisher(load_settings(), deadline=0.2)\n"
    "event = SecurityEvent(type='login', at=datetime.now(UTC))\n"
    "print(asyncio.run(pub.publish([EventMessage(user_id='u1', username='alice', event=event)])))"
)


def test_the_app_without_a_topic_never_imports_pubsub() -> None:
    assert _modules_after("import main, session.publish, session.events\n" + PUBLISH_ONE) == []


def test_the_app_with_a_topic_imports_pubsub_only_at_the_first_publish() -> None:
    env = {"SESSION_EVENTS_TOPIC": "session-events", "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    assert _modules_after("import main, session.publish, session.events", **env) == []
    assert "google.pubsub_v1" in _modules_after(PUBLISH_ONE, **env)  # the check above can fail


def test_without_a_topic_nothing_is_published() -> None:
    pub = EventPublisher(load_settings({}))
    assert (pub.enabled, pub.topic) == (False, None)
    assert asyncio.run(pub.publish([message("alice", "login")] * 3)) == [False] * 3
    assert asyncio.run(pub.publish([])) == []


# --- against the emulator ---------------------------------------------------------------------------------


def test_events_arrive_with_their_types_in_order_per_user(topic: Topic) -> None:
    base = AT
    rounds = [
        [message("alice", "login_new_device", base), message("bob", "lockout", base, detail={"retry_after": 900})],
        [message("bob", "login", base + timedelta(seconds=1)), message("alice", "password_changed", base)],
        [
            message("alice", "sessions_revoked", base + timedelta(seconds=2)),
            message("alice", "device_revoked", base + timedelta(seconds=3), detail={"place": "DE,Berlin"}),
            message("bob", "account_disabled", base + timedelta(seconds=4)),
        ],
    ]
    pub = publisher(topic)

    async def run() -> list[list[bool]]:
        try:
            return [await pub.publish(batch) for batch in rounds]
        finally:
            await pub.close()

    assert asyncio.run(run()) == [[True] * len(batch) for batch in rounds]
    sent = [m for batch in rounds for m in batch]
    received = topic.pull(len(sent))
    assert len(received) == len(sent)
    for user in ("alice", "bob"):
        mine = [json.loads(m.data) for m in received if m.attributes["user_id"] == f"uid-{user}"]
        assert [d["id"] for d in mine] == [m.event.id for m in sent if m.username == user]
    by_id = {m.event.id: m for m in sent}
    for got in received:
        data = json.loads(got.data)
        expected = by_id[data["id"]]
        assert data == json.loads(expected.data())
        assert dict(got.attributes) == {"type": expected.event.type, "user_id": expected.user_id}
        assert got.ordering_key == expected.user_id


def test_no_secret_reaches_a_message(topic: Topic) -> None:
    """A login's event, made from everything the login handled: none of its secrets is in the message."""
    token = tokens.mint("alice")
    device_cookie = tokens.mint("alice")
    token_hash = tokens.hash_token(token)
    secrets = [token, token.split(".", 1)[1], token_hash, device_cookie, tokens.device_hash(device_cookie), PASSWORD]
    event = SecurityEvent(
        type="login_new_device",
        at=AT,
        session_id=tokens.public_id(token_hash),
        device=device_name(FIREFOX),
        network=coarse_network("203.0.113.77"),
        detail={"place": "US,Mountain View"},
    )
    sent = EventMessage(user_id="uid-alice", username="alice", event=event)
    assert asyncio.run(publish_and_close(publisher(topic), [sent])) == [True]
    [got] = topic.pull(1)
    wire = got.data.decode() + json.dumps(dict(got.attributes)) + got.ordering_key
    assert [secret for secret in secrets if secret in wire] == []
    assert "203.0.113.77" not in wire
    assert json.loads(got.data)["device"] == "Firefox 146 on Windows"


@pytest.mark.slow
def test_a_stopped_emulator_costs_the_deadline_and_no_exception_then_publishing_resumes() -> None:
    with PubSubEmulator() as emulator:
        topic = _topic(emulator.host)
        pub = publisher(topic, deadline=1.0)

        async def timed(batch: list[EventMessage]) -> tuple[list[bool], float]:
            started = time.monotonic()
            results = await pub.publish(batch)
            return results, time.monotonic() - started

        async def run() -> tuple[Any, ...]:
            try:
                before = await timed([message("alice", "login")])
                emulator.stop()  # mid-run: the same publisher, its channel open
                during = [await timed([message("alice", "lockout"), message("bob", "login")]) for _ in range(3)]
                emulator.start()
                topic.create()  # the emulator forgot its topics
                after = await timed([message("alice", "password_changed")])
                return before, during, after
            finally:
                await pub.close()

        before, during, after = asyncio.run(run())
        assert before[0] == [True]
        for results, elapsed in during:
            assert results == [False, False]
            assert elapsed < 1.0 + DISCARD_SECONDS + 0.25, elapsed  # the deadline, closing, and a little slack
        assert after[0] == [True], "publishing did not resume after the emulator came back"
        [got] = topic.pull(1)
        assert json.loads(got.data)["type"] == "password_changed"


def test_a_topic_that_does_not_exist_is_a_failure_not_an_exception(pubsub_host: str) -> None:
    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": "demo-none",
            "SESSION_EVENTS_TOPIC": "missing-topic",
            "PUBSUB_EMULATOR_HOST": pubsub_host,
        }
    )
    started = time.monotonic()
    assert asyncio.run(publish_and_close(EventPublisher(settings), [message("alice", "login")])) == [False]
    assert time.monotonic() - started < 1.0 + 0.25


def test_a_large_batch_is_sent_in_parts(topic: Topic) -> None:
    sent = [message("alice", "login", AT + timedelta(milliseconds=i)) for i in range(1200)]
    assert asyncio.run(publish_and_close(publisher(topic, deadline=5.0), sent)) == [True] * 1200
    received = topic.pull(1200, timeout=60)
    assert [json.loads(m.data)["id"] for m in received] == [m.event.id for m in sent]


def test_the_client_for_google_cloud_is_built_offline(tmp_path: Any) -> None:
    """Without an emulator: the transport's own channel (credentials, endpoint) with our options; nothing sent."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    account = {
        "type": "service_account",
        "project_id": "demo-offline",
        "private_key_id": "k1",
        "private_key": key.decode(),
        "client_email": "fn@demo-offline.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.invalid/token",
    }
    (tmp_path / "account.json").write_text(json.dumps(account))
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "account.json")
    os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    pub = EventPublisher(load_settings({"GOOGLE_CLOUD_PROJECT": "demo-offline", "SESSION_EVENTS_TOPIC": "events"}))

    async def build() -> tuple[str, str]:
        client = pub._client()  # the one way to build it without sending anything
        try:
            return client.api_endpoint, type(client.transport.grpc_channel).__module__
        finally:
            await pub.close()

    # The transport called our channel factory with its credentials and endpoint: Google's, over gRPC asyncio.
    assert asyncio.run(build()) == ("pubsub.googleapis.com:443", "grpc.aio._channel")
