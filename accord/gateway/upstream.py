"""The gateway's HTTP/1.1 client for plain-http upstreams: pooled keep-alive connections, parsed by httptools.

Why not aiohttp here: it was about 45 % of the gateway's CPU per request (py-spy), and this
client — an asyncio protocol per connection, llhttp through httptools, bytes in and bytes
out, no URL objects, no header multidicts — does the same job in a fraction of that (see
bench/README.md). https:// upstreams still go through aiohttp (`Gateway._forward_aiohttp`).

What it does:

- one pool of idle connections per (host, port), reused last-in first-out, closed after
  `idle_timeout` seconds unused or as soon as the upstream closes them;
- the request body is streamed from the caller as it arrives (Content-Length kept when the
  caller gave one, chunked otherwise) with write flow control; the answer's body is handed
  over as it arrives, reading paused while more than `_HIGH_WATER` bytes wait to be taken;
- a reused connection that turns out dead before any byte of the answer (the upstream closed
  it while it was idle) is retried once on a new connection if the request is idempotent
  and its body had not been read from the caller yet; nothing else is ever retried;
- `read_timeout` bounds every wait for the upstream (no byte for that long: `UpstreamTimeout`),
  `connect_timeout` the connection set-up;
- interim 1xx answers are skipped; HEAD, 204 and 304 answers have no body; an answer with
  neither Content-Length nor chunked framing ends when the upstream closes the connection.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Final
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_HIGH_WATER: Final = 256 * 1024  # buffered answer bytes that pause reading from the upstream
_LOW_WATER: Final = 64 * 1024
_MAX_IDLE_PER_ORIGIN: Final = 512
MAX_ANSWER_HEAD: Final = 64 * 1024  # status line and header fields of an answer (nginx proxy_buffer_size: 4-8 KB)
MAX_ANSWER_HEADERS: Final = 256


class UpstreamUnreachable(Exception):
    """The upstream refused, reset or closed the connection before answering, or answered nonsense."""


class UpstreamTimeout(Exception):
    """The upstream did not answer (or accept the request body) within the read or connect timeout."""


class Origin:
    """Where an upstream base URL points: its address, Host header and the path to prefix."""

    __slots__ = ("key", "host", "port", "host_header", "base_path")

    def __init__(self, host: str, port: int, host_header: bytes, base_path: bytes) -> None:
        self.key = (host, port)
        self.host, self.port = host, port
        self.host_header = host_header
        self.base_path = base_path


def parse_origin(url: str) -> Origin | None:
    """The origin of an http:// base URL; None for any other scheme (https goes through aiohttp)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    port = parts.port or 80
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == 80 else f"{shown}:{port}"
    return Origin(host, port, host_header.encode("idna"), parts.path.rstrip("/").encode())


class Answer:
    """The upstream's answer: status and headers (names lower-cased), then the body via `read()`."""

    __slots__ = ("status", "headers", "_connection")

    def __init__(self, connection: UpstreamConnection) -> None:
        self.status = connection.status
        self.headers = connection.headers
        self._connection = connection

    @property
    def complete(self) -> bool:
        """True when the whole body is already here (`read()` then never waits)."""
        return self._connection.complete

    async def read(self) -> bytes:
        """The body received so far and not yet taken (waiting for more if there is none); b"" at the end."""
        return await self._connection.read()


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream and the answer being read on it."""

    def __init__(self, client: UpstreamClient, key: tuple[str, int]) -> None:
        self._client = client
        self._loop = client.loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._can_write = True
        self._waiter: asyncio.Future[None] | None = None
        # Instead of a waiter: called on every change (data, end, error, timeout) until `stop_listening`.
        self.listener: Callable[[], None] | None = None
        self._last_read = 0.0  # loop time of the upstream's last sign of life (or of our last write)
        self._new_answer(False)

    def _new_answer(self, head_request: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self.head_request = head_request
        self.headers_done = False
        self.complete = False
        self.received_any = False
        self.error: Exception | None = None
        self._framed = False  # Content-Length or chunked: the end is known without the connection closing
        self._keep_alive = True
        self._head_size = 0
        self._progress = False
        self._stuck = 0  # bytes the parser holds without a callback (an endless header line)

    # --- the protocol (called by the event loop) ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._last_read = self._loop.time()
        self._progress = False
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            self._fail(UpstreamUnreachable(f"unreadable answer: {exc.__context__ or exc}"))
            return
        if self._progress:
            self._stuck = 0
        else:
            self._stuck += len(data)
            if self._stuck > MAX_ANSWER_HEAD:
                self._fail(UpstreamUnreachable("unreadable answer: a header line without end"))
                return
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost tells the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not self._framed and not self.head_request:
            self.complete = True  # an answer delimited by the connection's end
        elif not self.complete and self.error is None:
            self.error = UpstreamUnreachable(f"connection closed: {exc or 'end of stream'}")
        self._client._forget(self)
        self._wake()

    def pause_writing(self) -> None:
        self._can_write = False

    def resume_writing(self) -> None:
        self._can_write = True
        self._last_read = self._loop.time()
        self._wake()

    # --- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.headers_done:
            # A second answer to one request, or bytes while idle in the pool: handed on, it would
            # become the answer to someone else's request (response queue poisoning). Never reused.
            raise ValueError("an answer nobody asked for")
        self._progress = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progress = True
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_ANSWER_HEAD or len(self.headers) >= MAX_ANSWER_HEADERS:
            raise ValueError("answer head too large")
        if self.headers_done:
            return  # trailer fields: not forwarded (the answer is re-framed), counted above
        name = name.lower()
        if name == b"content-length":
            self._framed = True
        elif name == b"transfer-encoding":
            self._framed = True
            if value.strip().lower() != b"chunked":
                # gzip, chunked: llhttp undoes only the chunks, and the coding would be lost on the
                # way out; an answer whose length cannot be told is not forwarded (nginx: 502).
                raise ValueError(f"transfer coding {value!r}")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._progress = True
        if status < 100:
            raise ValueError(f"status {status}")
        if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the real answer follows
            self.headers = []
            self._framed = False
            self._head_size = 0
            return
        self.status = status
        self.headers_done = True
        self._keep_alive = self._parser.should_keep_alive()
        if status == 204 or status == 304:
            self._framed = True
        if self.head_request:
            # llhttp does not know the request was HEAD and would wait for Content-Length bytes:
            # the answer ends here, and the next request on this connection gets a fresh parser.
            self.complete = True
            self._parser = HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self._progress = True
        if self.head_request:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self._progress = True
        if self.headers_done:
            self.complete = True

    # --- used by the client and the gateway ----------------------------------------------------

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def wait(self) -> asyncio.Future[None]:
        """A future the loop resolves on data, the end or writability; failed after `read_timeout` without a byte.

        The timeout is watched by the client's once-a-tick sweep rather than a timer per wait
        (a timer armed and cancelled per request cost more than the sweep over waiting connections).
        """
        waiter = self._waiter = self._loop.create_future()
        self._client.waiting.add(self)
        return waiter

    def _wake(self, error: Exception | None = None) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self._client.waiting.discard(self)
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
            return
        listener = self.listener
        if listener is not None:
            if error is not None and self.error is None:
                self.error = error
            listener()

    def stop_listening(self) -> None:
        self.listener = None
        self._client.waiting.discard(self)

    def check_timeout(self, now: float) -> None:
        if (self._waiter is None or self._waiter.done()) and self.listener is None:
            self._client.waiting.discard(self)  # resolved or cancelled meanwhile
            self._waiter = None
        elif now - self._last_read >= self._client.read_timeout:
            self._wake(UpstreamTimeout())

    async def write_body(self, data: bytes) -> bool:
        """Write part of the request body; False when the upstream has answered already (stop sending)."""
        if self.headers_done:
            return False
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(data)
        self._last_read = self._loop.time()  # the timeout counts from the last thing either side did
        while not self._can_write and not self.headers_done:
            if self.error is not None:
                raise self.error
            await self.wait()
        return not self.headers_done

    async def read(self) -> bytes:
        while not self._chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self.wait()
        return self.take()

    def take(self) -> bytes:
        """The body received and not yet taken, without waiting (all of it once `complete`)."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return self.complete and self._framed and self._keep_alive and not self.closed and not self._chunks


class UpstreamClient:
    """Pools connections per upstream and sends requests on them; one per gateway process."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 30.0, idle_timeout: float = 60.0,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.loop = loop or asyncio.get_running_loop()
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self.waiting: set[UpstreamConnection] = set()  # connections whose user waits for the upstream
        self._sweeper: asyncio.Task[None] | None = None
        self.connections_opened = 0  # for tests and operators: how often the pool had to connect

    async def _sweep(self) -> None:
        """Fail the waits that saw nothing from the upstream for `read_timeout` (checked every tick)."""
        tick = min(0.1, self.read_timeout / 10)
        while True:
            await asyncio.sleep(tick)
            if self.waiting:
                now = self.loop.time()
                for connection in list(self.waiting):
                    connection.check_timeout(now)

    async def request(self, origin: Origin, method: str, head: bytes, body: Callable[[], AsyncIterator[bytes]] | None,
                      chunked: bool = False, retry: bool = True) -> tuple[Answer, UpstreamConnection]:
        """Send `head` (the request line and headers, CRLF CRLF included), then the body if any.

        `body` makes an iterator over the caller's body chunks (called at most once: a body
        read from the caller cannot be replayed). Returns when the answer's headers are in;
        pass the connection to `release` once the answer has been read (or abandoned).
        """
        self._watch_timeouts()
        retry = retry and method in IDEMPOTENT
        while True:
            connection = self.idle_connection(origin.key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(origin)
            self._expect_answer(connection, method)
            sent_body = False
            try:
                assert connection.transport is not None
                connection.transport.write(head)
                if body is not None:
                    sent_body = True
                    await self._send_body(connection, body(), chunked)
                while not connection.headers_done:  # (inline rather than a coroutine: one frame less per wake-up)
                    if connection.error is not None:
                        raise connection.error
                    if connection.closed:
                        raise UpstreamUnreachable("connection closed before an answer")
                    await connection.wait()
                return Answer(connection), connection
            except UpstreamUnreachable:
                connection.close()
                if retry and reused and not sent_body and not connection.received_any:
                    retry = False  # the upstream closed an idle connection as we used it: once more, afresh
                    continue
                raise
            except BaseException:
                connection.close()
                raise

    def begin(self, connection: UpstreamConnection, head: bytes, method: str, listener: Callable[[], None]) -> None:
        """Send a bodyless request on an idle connection (from `idle_connection`) and call `listener` on each change.

        The callback way of `request`, without a task: the listener looks at `headers_done`,
        `complete` and `error` (a timeout is an `UpstreamTimeout` there), calls `stop_listening`,
        then takes the body (`take`, or `read` for an answer still arriving) and `release`s it.
        Nothing is retried here.
        """
        self._watch_timeouts()
        self._expect_answer(connection, method)
        connection.listener = listener
        self.waiting.add(connection)
        assert connection.transport is not None
        connection.transport.write(head)

    def _expect_answer(self, connection: UpstreamConnection, method: str) -> None:
        connection._new_answer(method == "HEAD")
        connection._last_read = self.loop.time()  # the read timeout counts from the request

    def _watch_timeouts(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep(), name="accord-upstream-timeouts")

    async def _send_body(self, connection: UpstreamConnection, chunks: AsyncIterator[bytes], chunked: bool) -> None:
        async for chunk in chunks:
            if not chunk:
                continue
            data = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
            if not await connection.write_body(data):
                connection._keep_alive = False  # answered before the whole body was sent: not reusable
                return
        if chunked and not connection.headers_done:
            await connection.write_body(b"0\r\n\r\n")

    def release(self, connection: UpstreamConnection) -> None:
        """Back to the pool if the answer was read to its end and the connection may be kept; else closed."""
        if not connection.reusable:
            connection.close()
            return
        idle = self._idle.get(connection.key)
        if idle is None:
            idle = self._idle[connection.key] = []
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        idle.append(connection)

    def idle_connection(self, key: tuple[str, int]) -> UpstreamConnection | None:
        """A pooled connection to `key` still open (most recently used first), or None."""
        idle = self._idle.get(key)
        if not idle:
            return None
        now = self.loop.time()
        while idle:
            connection = idle.pop()
            if connection.closed or connection.transport is None or connection.transport.is_closing():
                continue
            if now - connection.idle_since > self.idle_timeout:
                connection.close()
                continue
            return connection
        return None

    def _forget(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    async def _connect(self, origin: Origin) -> UpstreamConnection:
        connection = UpstreamConnection(self, origin.key)
        try:
            await asyncio.wait_for(self.loop.create_connection(lambda: connection, origin.host, origin.port),
                                   timeout=self.connect_timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise UpstreamTimeout(f"no connection to {origin.host}:{origin.port} within "
                                  f"{self.connect_timeout} s") from exc
        except OSError as exc:
            raise UpstreamUnreachable(str(exc)) from exc
        self.connections_opened += 1
        return connection

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
