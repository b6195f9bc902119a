"""A minimal pipelined Redis (RESP2) client for the rate limiter's one command per request.

Why not redis-py here: through its asyncio client a limiter decision cost about 90 µs of
the gateway's CPU (connection pool, command machinery), more than everything else a
request does; this client sends each call at once on ONE connection and matches the
replies in order (Redis answers a connection's commands in the order they came), which
measured about 9 µs per decision with 16 in flight (see bench/README.md).

It knows what the limiter needs and no more: connect (TCP, TLS with rediss://, or a Unix
socket), AUTH and SELECT from the URL, send a command, parse the reply (simple strings,
errors, integers, bulk strings, arrays). Failures raise what redis-py would, so the
limiter tells an outage from a bug the same way: ConnectionError or TimeoutError (both
OSError) when Redis cannot answer — then every call in flight fails and the next call
reconnects — and redis.exceptions errors for error replies (NoScriptError, ReadOnlyError,
BusyLoadingError, ResponseError). Nothing is ever retried: a script call is not idempotent.
"""
from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import BusyLoadingError, NoScriptError, ReadOnlyError, ResponseError

_ERRORS = {b"NOSCRIPT": NoScriptError, b"READONLY": ReadOnlyError, b"LOADING": BusyLoadingError}
_MAX_BULK = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len: a larger size is a stream out of step


class _Incomplete(Exception):
    """The buffer does not hold a whole reply yet."""


def _parse(buffer: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One reply from `buffer` at `pos`: (value, position after it); raises _Incomplete."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buffer[pos]
    if kind == 58:  # ":" integer
        return int(buffer[pos + 1:end]), end + 2
    if kind == 42:  # "*" array
        count = int(buffer[pos + 1:end])
        if count < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 36:  # "$" bulk string
        size = int(buffer[pos + 1:end])
        if size < 0:
            return None, end + 2
        if size > _MAX_BULK:
            raise ConnectionError(f"a bulk string of {size} bytes")
        if len(buffer) < end + 4 + size:
            raise _Incomplete
        if buffer[end + 2 + size:end + 4 + size] != b"\r\n":  # out of step: nothing after can be trusted
            raise ConnectionError("a bulk string longer than announced")
        return bytes(buffer[end + 2:end + 2 + size]), end + 4 + size
    if kind == 43:  # "+" simple string
        return bytes(buffer[pos + 1:end]), end + 2
    if kind == 45:  # "-" error: returned (not raised) so the caller of that command gets it
        message = bytes(buffer[pos + 1:end])
        error = _ERRORS.get(message.split(b" ", 1)[0], ResponseError)
        return error(message.decode("utf-8", "replace")), end + 2
    raise ConnectionError(f"unreadable Redis reply {bytes(buffer[pos:end + 2])!r}")


def encode(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()  # (reply, when sent), in order
        self._buffer = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> asyncio.Future[Any]:
        reply = self._loop.create_future()
        self.pending.append((reply, self._loop.time()))
        assert self.transport is not None
        self.transport.write(data)
        return reply

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        try:
            while self.pending and pos < len(buffer):
                value, pos = _parse(buffer, pos)
                reply, _ = self.pending.popleft()
                if not reply.done():
                    if isinstance(value, Exception):
                        reply.set_exception(value)
                    else:
                        reply.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError, RecursionError) as exc:
            self.fail(ConnectionError(f"Redis protocol error: {exc}"))
            return
        if not self.pending and pos < len(buffer):
            # A reply to no call: every later reply would go to the wrong caller. Start afresh.
            self.fail(ConnectionError("Redis protocol error: a reply nobody asked for"))
            return
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail(ConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))

    def fail(self, error: Exception) -> None:
        """Every call in flight fails (their replies can no longer be matched); the connection closes."""
        self.lost = True
        while self.pending:
            reply, _ = self.pending.popleft()
            if not reply.done():
                reply.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class RespClient:
    def __init__(self, url: str, *, connect_timeout: float = 0.5, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {url!r} (redis://, rediss:// or unix://)")
        query = parse_qs(parts.query)
        self.path = unquote(parts.path) if parts.scheme == "unix" else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        db = query.get("db", [None])[0] or (parts.path.lstrip("/") if parts.scheme != "unix" else "") or "0"
        self.db = int(db)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.tls = parts.scheme == "rediss"
        self.where = f"{self.path}/{self.db}" if self.path else f"{self.host}:{self.port}/{self.db}"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (an error reply is raised)."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connected()
        return await protocol.send(encode(args))

    async def _connected(self) -> _Protocol:
        if self._connecting is None:  # one connection attempt, shared by the calls that arrive meanwhile
            self._connecting = asyncio.get_running_loop().create_future()
            connecting = self._connecting
            try:
                protocol = await asyncio.wait_for(self._connect(), self.connect_timeout)
            except (asyncio.TimeoutError, TimeoutError) as exc:
                error: BaseException = TimeoutError(f"no connection to Redis at {self.where} within "
                                                    f"{self.connect_timeout} s")
                error.__cause__ = exc
                connecting.set_exception(error)
            except asyncio.CancelledError:
                connecting.set_exception(ConnectionError("the connection attempt was cancelled"))
                connecting.exception()
                self._connecting = None
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                connecting.set_exception(exc if isinstance(exc, (OSError, ResponseError)) else ConnectionError(exc))
            else:
                self._protocol = protocol
                connecting.set_result(protocol)
            finally:
                self._connecting = None
            connecting.exception()  # retrieved here too, so an unawaited failure is not logged
            return await connecting
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self.path:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(loop), self.path)
        else:
            context = ssl.create_default_context() if self.tls else None
            _, protocol = await loop.create_connection(lambda: _Protocol(loop), self.host, self.port, ssl=context)
        setup = []
        if self.password is not None:
            setup.append(protocol.send(encode(("AUTH", self.username, self.password) if self.username
                                              else ("AUTH", self.password))))
        if self.db:
            setup.append(protocol.send(encode(("SELECT", self.db))))
        try:
            for reply in setup:
                await reply
        except BaseException:
            protocol.fail(ConnectionError("Redis connection set-up failed"))
            raise
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(), name="accord-redis-timeouts")
        return protocol

    async def _sweep(self) -> None:
        """A reply later than `timeout` fails that connection's calls (order could not be kept after it)."""
        loop = asyncio.get_running_loop()
        tick = min(0.1, self.timeout / 4)
        while True:
            await asyncio.sleep(tick)
            protocol = self._protocol
            if protocol is not None and protocol.pending and loop.time() - protocol.pending[0][1] >= self.timeout:
                protocol.fail(TimeoutError(f"Redis at {self.where} did not answer within {self.timeout} s"))

    async def reset(self) -> None:
        """Drop the connection (the next call connects afresh)."""
        if self._protocol is not None:
            self._protocol.fail(ConnectionError("connection reset by the client"))
            self._protocol = None

    async def close(self) -> None:
        await self.reset()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
