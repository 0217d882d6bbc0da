"""Publishing security events to Pub/Sub (``SESSION_EVENTS_TOPIC``), within a short deadline, never raising.

One ``PublisherAsyncClient`` per event loop, created on the first publish and reused (a gRPC
channel belongs to the loop that made it), as the store does with Firestore's client: a service
without a topic never imports the Pub/Sub library, and one with a topic pays for it on its first
event, not at cold start.

Why the low-level client and one ``Publish`` call per batch rather than the library's batching
``PublisherClient``: that one sends from background threads after the call returns, and a
Cloud Function's CPU is throttled once its response is sent, so a message could wait there
until the next request. Here the request awaits its own publish, bounded by the deadline.

Ordering: every message carries the user's id as its ordering key. Pub/Sub then delivers one
user's events in publish order to a subscription created with message ordering on (others
ignore the key). The order holds for messages published in one region; a deployment's
functions run in one region, whose Pub/Sub the global endpoint reaches, so no regional
endpoint is configured. Delivery is at least once: a subscriber deduplicates by the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from session.config import Settings
from session.events import EventMessage

if TYPE_CHECKING:  # the client library is heavy: import it on first use only
    from google.pubsub_v1 import PublisherAsyncClient

# The longest a request waits for its events to be published; what is not published by then is left for
# `events publish-pending`. A publish on a warm channel takes milliseconds; the first on an instance, a channel.
PUBLISH_DEADLINE_SECONDS = 1.0
# Closing a failed channel is local work; it never holds a request longer than this.
DISCARD_SECONDS = 0.1
# Pub/Sub takes at most 1,000 messages (and 10 MB) per Publish call; an event is well under 2 KiB.
MAX_BATCH = 500

# A channel that lost its server reconnects with a backoff that grows to two minutes by default, failing every call
# at once meanwhile, and gRPC shares that state between channels to the same server (its global subchannel pool).
# So each channel gets its own subchannels, a failed publish drops its channel (_discard), and the backoff stays
# short: the first publish after Pub/Sub is back goes through.
_CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

log = logging.getLogger("session.events")


class EventPublisher:
    """Publishes ``EventMessage`` batches to ``settings.events_topic_path``; does nothing without a topic."""

    def __init__(self, settings: Settings, deadline: float = PUBLISH_DEADLINE_SECONDS) -> None:
        self._topic = settings.events_topic_path
        self._emulator_host = settings.pubsub_emulator_host
        self._deadline = deadline
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PublisherAsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._retry: Any = None

    @property
    def enabled(self) -> bool:
        """True when ``SESSION_EVENTS_TOPIC`` is set, so events are to be published."""
        return self._topic is not None

    @property
    def topic(self) -> str | None:
        """The full topic name (``projects/P/topics/T``), or ``None`` without a topic."""
        return self._topic

    async def publish(self, messages: Sequence[EventMessage]) -> list[bool]:
        """Publish ``messages`` in order; for each, whether Pub/Sub accepted it.

        Never raises for a failure of Pub/Sub, and returns within the deadline given
        to the constructor (for the whole call; plus at most ``DISCARD_SECONDS`` to
        close a failed channel, and the first call of an instance also builds the
        client, synchronously). A message not accepted by then is ``False``, to be
        published again later; a ``False`` message may still have been delivered
        (at least once). Without a topic, nothing is sent and every message is
        ``False``. Messages go in batches of at most ``MAX_BATCH``, each accepted or
        not as a whole. Logs one warning per failed call, with the error's kind and
        the message count, never a message's content; the next call after a
        failure opens a new channel.
        """
        results = [False] * len(messages)
        if self._topic is None or not messages:
            return results
        started = time.monotonic()
        for first in range(0, len(messages), MAX_BATCH):
            batch = messages[first : first + MAX_BATCH]
            left = self._deadline - (time.monotonic() - started)
            if left <= 0 or not await self._send(self._topic, batch, left):
                break
            results[first : first + len(batch)] = [True] * len(batch)
        return results

    async def _send(self, topic: str, batch: Sequence[EventMessage], deadline: float) -> bool:
        try:
            async with asyncio.timeout(deadline):
                client = self._client()
                from google.pubsub_v1 import PubsubMessage

                await client.publish(
                    topic=topic,
                    messages=[
                        PubsubMessage(data=m.data(), attributes=m.attributes(), ordering_key=m.ordering_key)
                        for m in batch
                    ],
                    retry=self._retry,
                    timeout=deadline,
                )
            return True
        except Exception as exc:  # Pub/Sub down, slow, refusing: the caller's request goes on regardless
            log.warning(
                "events_not_published",
                extra={
                    "json_fields": {"event": "events_not_published", "error": type(exc).__name__, "count": len(batch)}
                },
            )
            await self._discard()
            return False

    def _client(self) -> PublisherAsyncClient:
        """The running event loop's client, created on first use, on a channel of its own (``_CHANNEL_OPTIONS``)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            from google.api_core import exceptions as gexc
            from google.api_core.retry import if_exception_type
            from google.api_core.retry_async import AsyncRetry
            from google.pubsub_v1 import PublisherAsyncClient
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport

            if self._emulator_host is not None:  # what the library itself does for the emulator, with our options
                from grpc import aio  # type: ignore[import-untyped]

                channel: Any = aio.insecure_channel(self._emulator_host, options=_CHANNEL_OPTIONS)
            else:

                def channel(*args: Any, options: Sequence[tuple[str, Any]] = (), **kwargs: Any) -> Any:
                    # The transport's own channel (credentials, endpoint, its options), with ours added.
                    create = PublisherGrpcAsyncIOTransport.create_channel
                    return create(*args, options=[*options, *_CHANNEL_OPTIONS], **kwargs)

            client = PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel))
            self._clients[loop] = client
            if self._retry is None:
                # Transient failures are retried until the deadline: a duplicate is allowed (at least once).
                self._retry = AsyncRetry(
                    predicate=if_exception_type(
                        gexc.ServiceUnavailable,
                        gexc.DeadlineExceeded,
                        gexc.InternalServerError,
                        gexc.TooManyRequests,
                        gexc.Aborted,
                    ),
                    initial=0.05,
                    maximum=0.5,
                    multiplier=2.0,
                    timeout=self._deadline,
                )
        return client

    async def _discard(self) -> None:
        """Drop the running loop's client after a failure, so that the next publish opens a fresh channel.

        A channel that lost its server waits out a reconnect backoff, failing every call at
        once meanwhile; a new channel (with its own subchannels) connects on its first call.
        """
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(DISCARD_SECONDS):
                    await client.transport.close()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Close the running event loop's client, if any (its gRPC channel belongs to the loop)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.transport.close()  # type: ignore[no-untyped-call]
