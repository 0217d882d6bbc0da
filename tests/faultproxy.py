"""A TCP fault proxy between the service and the Firestore emulator: cuts, latency, refusals.

The emulator speaks gRPC over cleartext HTTP/2, so forwarding bytes is enough. The
proxy runs an asyncio loop in a thread of its own, so the apps of ``make_client``
(each on its own loop), live servers and the test's own clients can all use it.

What "a request" is: the Firestore client keeps one long-lived HTTP/2 connection
and multiplexes every call on it, so a cut rate per connection would almost never
fire (one connection per test). The proxy therefore reads the client's HTTP/2
frames (after the 24-byte connection preface) and counts a request each time a
client stream ends (a DATA or HEADERS frame with END_STREAM): that is one RPC
(a commit, a batched read, a query) sent whole. With probability ``cut_rate`` it
then cuts: the request's bytes go upstream, every answer from then on is dropped,
and after ``hold`` seconds (time for the emulator to apply a commit) both sides
are reset (RST). The client sees UNAVAILABLE; the write may well have landed.
Frames that end no request (SETTINGS, WINDOW_UPDATE, PING) are never a cut point.

Traffic stays on loopback: the proxy listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
DATA, HEADERS = 0x0, 0x1
END_STREAM = 0x1


@dataclass
class ProxyStats:
    """What the proxy did so far (updated on its own thread; read anywhere)."""

    connections: int = 0
    requests: int = 0
    cuts: int = 0
    refused: int = 0


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    dropping: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: a connection that dies, rather than one that ends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``with FaultProxy("127.0.0.1:8085", cut_rate=0.1) as proxy: ... proxy.host ...``.

    Settable at any time, from any thread: ``cut_rate`` (probability per request),
    ``hold`` (seconds between a cut request going upstream and the reset), ``latency``
    (seconds added before each chunk the client sends). ``refuse_for(seconds)`` resets
    new connections at once for a while; ``reset_all()`` cuts every open connection now.
    """

    def __init__(
        self, upstream: str, *, cut_rate: float = 0.0, hold: float = 0.05, latency: float = 0.0, seed: int | None = None
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self.cut_rate = cut_rate
        self.hold = hold
        self.latency = latency
        self.stats = ProxyStats()
        self._random = random.Random(seed)
        self._refuse_until = 0.0
        self._cut_at: int | None = None
        self._refuse_after_cut = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # awaited at stop (3.11's wait_closed does not)
        self.host = ""

    # --- control (any thread) ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.host = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse_for(self, seconds: float) -> None:
        """Reset every new connection at once for ``seconds`` (connections already open are left alone)."""
        self._refuse_until = time.monotonic() + seconds

    def cut_nth(self, n: int, *, then_refuse: float = 0.0) -> None:
        """Cut the ``n``-th request from now (1: the next one), whatever ``cut_rate`` says: a fault placed exactly.

        ``then_refuse``: refuse new connections for that many seconds from the cut (so a resend fails too).
        """
        self._cut_at = self.stats.requests + n
        self._refuse_after_cut = then_refuse

    def reset_all(self) -> None:
        """Cut every open connection now (a request in flight loses its answer)."""
        asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(10)

    @contextlib.contextmanager
    def cutting(self, rate: float) -> Iterator[FaultProxy]:
        """``cut_rate = rate`` inside the block, 0 after it."""
        self.cut_rate = rate
        try:
            yield self
        finally:
            self.cut_rate = 0.0

    # --- the loop's side -----------------------------------------------------------------------------

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._reset_all()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _reset_all(self) -> None:
        for conn in list(self._open):
            self._cut_now(conn)

    def _cut_now(self, conn: _Connection) -> None:
        conn.dropping = True
        _reset(conn.client)
        _reset(conn.upstream)
        self._open.discard(conn)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if time.monotonic() < self._refuse_until:
            self.stats.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            self.stats.refused += 1
            _reset(writer)
            return
        self.stats.connections += 1
        conn = _Connection(writer, up_writer)
        self._open.add(conn)
        conn.tasks = [
            asyncio.create_task(self._client_to_server(conn, reader)),
            asyncio.create_task(self._server_to_client(conn, up_reader)),
        ]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        if conn in self._open:
            self._open.discard(conn)
            for side in (writer, up_writer):
                side.transport.abort()

    async def _server_to_client(self, conn: _Connection, up_reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await up_reader.read(65536):
                if conn.dropping:
                    continue  # the answer of a cut request (and everything after it) never arrives
                conn.client.write(chunk)
                await conn.client.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            if not conn.dropping:
                with contextlib.suppress(OSError, RuntimeError):
                    conn.client.close()

    async def _client_to_server(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        pending = bytearray()
        preface_left = len(PREFACE)
        try:
            while chunk := await reader.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                pending += chunk
                if preface_left:  # forwarded as is; frames start after it
                    take = min(preface_left, len(pending))
                    conn.upstream.write(bytes(pending[:take]))
                    del pending[:take]
                    preface_left -= take
                ready, cut = self._frames(pending)
                if ready:
                    conn.upstream.write(ready)
                    await conn.upstream.drain()
                if cut:
                    conn.dropping = True
                    self.stats.cuts += 1
                    await asyncio.sleep(self.hold)
                    self._cut_now(conn)
                    return
        except (OSError, ConnectionError):
            pass
        finally:
            if not conn.dropping:
                with contextlib.suppress(OSError, RuntimeError):
                    conn.upstream.close()

    def _frames(self, pending: bytearray) -> tuple[bytes, bool]:
        """Take the complete frames off ``pending``: the bytes to forward, and whether to cut after them.

        Stops right after the first frame that ends a client stream and draws a cut.
        """
        end = 0
        while len(pending) - end >= FRAME_HEADER:
            length = int.from_bytes(pending[end : end + 3], "big")
            kind, flags = pending[end + 3], pending[end + 4]
            stream = int.from_bytes(pending[end + 5 : end + 9], "big") & 0x7FFFFFFF
            if len(pending) - end < FRAME_HEADER + length:
                break
            end += FRAME_HEADER + length
            if kind in (DATA, HEADERS) and flags & END_STREAM and stream % 2 == 1:
                self.stats.requests += 1
                placed = self._cut_at == self.stats.requests
                if placed or (self.cut_rate and self._random.random() < self.cut_rate):
                    if placed:
                        self._cut_at = None
                        if self._refuse_after_cut:
                            self.refuse_for(self._refuse_after_cut)
                    ready = bytes(pending[:end])
                    del pending[:end]
                    return ready, True
        ready = bytes(pending[:end])
        del pending[:end]
        return ready, False
