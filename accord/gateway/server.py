"""A small HTTP/1.1 server for the gateway: one asyncio protocol per connection, httptools, and ASGI to one app.

Why not uvicorn here: with the upstream client made lean, uvicorn's protocol was the largest
cost left outside our own code (about a fifth of the gateway's CPU per request, py-spy): a
header-validation regex per response header, the head and the body written in two system
calls, a keep-alive timer per response. This server does only what the gateway needs and
writes a small answer (head and body) with one system call. The gateway stays a plain ASGI
app, so it also runs under uvicorn (the tests check both); see bench/README.md for figures.

What it does: HTTP/1.1 keep-alive (HTTP/1.0 closes unless asked), pipelined requests answered
in order, request bodies by Content-Length or chunked with read flow control, `Expect:
100-continue`, answers framed by the app's Content-Length, else chunked (HTTP/1.1) or by
closing (HTTP/1.0), none for HEAD, 1xx, 204 and 304; write flow control; idle connections
closed after `keepalive_timeout`; a malformed request gets 400 and the connection closed, an
app that fails before answering a 500.

Facing the internet, it refuses what could be read two ways (request smuggling): llhttp's strict
mode refuses Content-Length with Transfer-Encoding, several or malformed Content-Length, obs-fold,
bare CR/LF and malformed chunks; this server adds 501 for a transfer coding other than chunked,
400 for Transfer-Encoding in HTTP/1.0, a missing or repeated Host, CONNECT and an Upgrade with a
body, 505 for versions other than 1.0/1.1. Heads are bounded (414, 431), so are pipelined requests,
the time to send a head (slowloris) and stalls of a body or of a client not reading its answer
(408 / close). An answer longer or shorter than its Content-Length, or left unfinished, closes
the connection rather than desynchronise it; a CR or LF in an answer header is a 500. `serve` runs the ASGI lifespan around the listening
socket and stops on SIGTERM/SIGINT, letting requests in flight finish; `run` does that in
`workers` processes sharing one socket (a supervisor restarts a worker that dies).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

log = logging.getLogger("accord.gateway.server")

_HIGH_WATER: Final = 256 * 1024  # buffered request body bytes that pause reading from the client
_LOW_WATER: Final = 64 * 1024
# Limits on what a client may make this server hold (nginx: 8 KB request line, ~32 KB of header lines;
# h11: 16 KB per head): past them the request is refused and the connection closed. These are the
# defaults of `serve`'s max_url, max_head and max_headers (settings ACCORD_GATEWAY_MAX_*).
MAX_URL = 8 * 1024
MAX_HEAD = 32 * 1024  # request line and header fields (trailer fields too), and bytes without progress
MAX_HEADERS = 100
MAX_PIPELINED: Final = 32  # requests read ahead of the one being answered; more: answered up to there, then closed
_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}
_STATUS_LINES: Final = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus}
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# What a Host (or an absolute-form target's authority) may hold: RFC 3986's host and port characters.
# The characters of a URI host (RFC 3986 3.2.2: reg-name, IP literal) and a port.
_URI_HOST_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:[]%"
_URI_HOSTS: Final[dict[bytes, bool]] = {}  # Host values seen (a few per server), and whether each is one
_URI_HOSTS_KEPT: Final = 1024
_URI_HOST_REMEMBERED: Final = 255  # longer values are checked each time (a host name has at most 253 characters)


def _is_uri_host(value: bytes) -> bool:
    """Whether `value` is made of a URI host's characters (remembered: a check per request is dear)."""
    if not value:
        return True
    if len(value) > _URI_HOST_REMEMBERED:
        return not value.translate(None, _URI_HOST_CHARS)
    valid = _URI_HOSTS.get(value)
    if valid is None:
        if len(_URI_HOSTS) >= _URI_HOSTS_KEPT:
            _URI_HOSTS.clear()
        valid = _URI_HOSTS[value] = not value.translate(None, _URI_HOST_CHARS)
    return valid


def _field(part: Any) -> bytes:
    """An ASGI header name or value as bytes; anything but bytes-like is the app's error (bytes(3) would be NULs)."""
    if isinstance(part, bytes):
        return part
    if isinstance(part, (bytearray, memoryview)):
        return bytes(part)
    raise TypeError(f"an ASGI header name or value must be bytes, not {type(part).__name__}")


def _refusal(status: HTTPStatus) -> bytes:
    return (b"HTTP/1.1 %d %b\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
            % (status.value, status.phrase.encode(), len(status.phrase), status.phrase.encode()))


_BAD_REQUEST = _refusal(HTTPStatus.BAD_REQUEST)
_URI_TOO_LONG = _refusal(HTTPStatus.REQUEST_URI_TOO_LONG)
_HEADERS_TOO_LARGE = _refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
_NOT_IMPLEMENTED = _refusal(HTTPStatus.NOT_IMPLEMENTED)  # a transfer coding other than chunked
_VERSION_NOT_SUPPORTED = _refusal(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
_REQUEST_TIMEOUT = _refusal(HTTPStatus.REQUEST_TIMEOUT)
_SERVER_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 21\r\n"
                 b"connection: close\r\n\r\nInternal Server Error")


class Exchange:
    """One request and its answer: the ASGI `receive` and `send` of one app call."""

    __slots__ = ("connection", "scope", "chunks", "buffered", "body_done", "body_given", "discard", "waiter",
                 "keep_alive", "expect_continue", "status", "headers", "head_sent", "chunked", "no_body", "finished",
                 "head_request", "length", "bodyless", "dispatched", "for_task", "work")

    def __init__(self, connection: _Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool,
                 bodyless: bool = False) -> None:
        self.connection = connection
        self.scope = scope
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.body_done = False
        self.body_given = False  # the last body message (more_body False) was handed to the app
        self.discard = False  # answered before its body was read: the rest of the body is dropped
        self.waiter: asyncio.Future[None] | None = None
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None  # the answer's, names in lower case
        self.head_sent = False
        self.chunked = False
        self.no_body = False
        self.finished = False
        self.head_request = scope["method"] == "HEAD"
        self.length = -1  # body bytes the app's Content-Length still announces (-1: none given)
        self.bodyless = bodyless  # neither Content-Length (other than 0) nor Transfer-Encoding
        self.dispatched = False  # handed to the app's `direct` or to the connection's task
        self.for_task = False  # the connection's task is to run the app (or `work`) for it
        self.work: Any = None  # the coroutine `continue_with` gave, run instead of the app

    # --- ASGI receive --------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        while not self.chunks and not self.body_done and not connection.lost:
            if self.expect_continue:
                self.expect_continue = False
                connection.write(_CONTINUE)
            await self._wait()
        if self.chunks or (self.body_done and not self.body_given):
            chunks = self.chunks
            body = b"" if not chunks else chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.chunks = []
            self.buffered = 0
            self.body_given = self.body_done
            connection.body_taken()
            return {"type": "http.request", "body": body, "more_body": not self.body_done}
        # The whole body was handed over: the next ASGI message is the disconnect, when it comes.
        while not connection.lost and not self.finished:
            await self._wait()
        return {"type": "http.disconnect"}

    async def _wait(self) -> None:
        self.waiter = self.connection.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- ASGI send -------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.headers is None or self.finished:
                raise RuntimeError(f"{kind} out of turn")
            more = message.get("more_body", False)
            self._write(message.get("body", b""), more)
            connection = self.connection
            if not connection.can_write and not connection.lost:
                await connection.drain()
            if not more:
                connection.exchange_done(self)
            return
        if kind == "http.response.start":
            if self.headers is not None:
                raise RuntimeError("http.response.start sent twice")
            self.status = message["status"]
            # As the gateway's own answers come (`answer`): a list of pairs, names in lower case.
            self.headers = [(_field(name).lower(), _field(value)) for name, value in message.get("headers", ())]
            return
        raise RuntimeError(f"unexpected ASGI message {kind!r}")

    # --- the direct way (see `_Connection._dispatch`) ----------------------------------------------

    def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The whole answer at once, without a coroutine: `send` of a start and a last body message.

        Unlike an ASGI app's, the header names must be lower case (the gateway's are: parsed, or its own).
        """
        if self.headers is not None:
            raise RuntimeError("answered twice")
        self.status, self.headers = status, headers
        self._write(body, False)
        if self.connection.can_write or self.connection.lost:
            self.connection.exchange_done(self)
        else:  # the client is slow to read: the next request waits until it has taken this answer
            self.continue_with(self._drained())

    async def _drained(self) -> None:
        await self.connection.drain()
        self.connection.exchange_done(self)

    def continue_with(self, work: Any) -> None:
        """Finish this exchange with `work`, a coroutine run on the connection's task (as the app would be)."""
        self.work = work
        self.for_task = True
        self.connection.wake_task()

    def fail(self) -> None:
        """The direct way failed (logged by the caller): as for an app that raised, 500 if nothing was sent, and close."""
        connection = self.connection
        if not self.head_sent and not connection.lost:
            connection.write(_SERVER_ERROR)
        connection.close()

    def _write(self, body: bytes, more: bool) -> None:
        """Write a body part (with the head first): the synchronous part of `send`."""
        connection = self.connection
        if not self.head_sent:
            data = self._head(body, more)
        else:
            data = b""
        if body and not self.no_body:
            if self.chunked:
                data += b"%x\r\n%b\r\n" % (len(body), body)
            else:
                if self.length >= 0:
                    self.length -= len(body)
                    if self.length < 0:  # more than announced: the excess would read as the next answer
                        connection.write(data + body[:len(body) + self.length])
                        connection.close()
                        raise RuntimeError("the answer is longer than its Content-Length")
                data = data + body if data else body
        if not more:
            self.finished = True
            if self.chunked:
                data += b"0\r\n\r\n"
            elif self.length > 0 and not self.no_body:
                self.keep_alive = False  # shorter than announced: only closing tells the client it is cut
        if data and not connection.lost:
            connection.write(data)

    def _head(self, body: bytes, more: bool) -> bytes:
        """The status line and headers, with the framing the answer needs."""
        status = self.status
        line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
        parts = [line]
        length_given = False
        self.no_body = self.head_request or status in _NO_BODY_STATUSES or status < 200
        headers = self.headers
        assert headers is not None
        for name, value in headers:
            if name == b"content-length":
                if status == 204 or status < 200:
                    continue  # never on these (RFC 9110 8.6): a client could wait for that body
                length_given = True
                if not self.no_body:
                    self.length = int(value)
            elif name == b"transfer-encoding" or name == b"connection":
                continue  # framing and connection handling are this server's
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
            parts.append(b"\r\n")
        fields = (len(parts) - 1) // 4
        if self.expect_continue and not self.body_done:
            # Answered without asking for the body: the client may send it or not, so the next bytes
            # cannot be told apart from a next request (h11 and nginx close too).
            self.keep_alive = False
        if not self.no_body and not length_given:
            if not more:
                parts.append(b"content-length: %d\r\n" % len(body))
            elif self.scope["http_version"] == "1.1":
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the connection ends the body
        if not self.keep_alive or self.connection.closing:
            self.keep_alive = False
            parts.append(b"connection: close\r\n")
        elif self.scope["http_version"] == "1.0":
            parts.append(b"connection: keep-alive\r\n")  # an HTTP/1.0 client assumes a close without it
        parts.append(b"\r\n")
        head = b"".join(parts)
        # Every field is 4 parts, every other part one line: a CR or LF inside a header name or value
        # would split the answer. Two scans in C per answer rather than uvicorn's regex per header.
        lines = len(parts) - 3 * fields
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise ValueError("a CR or LF in an answer header")
        self.head_sent = True
        return head


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the app for each in turn."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.app = server.app
        self.direct = server.direct
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.lost = False
        self.closing = False  # shutting down: close after the answer in progress
        self.half_closed = False  # the client sent all it will send: close after the last answer
        self.can_write = True
        self._drain_waiter: asyncio.Future[None] | None = None
        self.ticks = 0  # seconds spent in the present state (idle, reading a head, waiting on the client)
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self._scope: dict[str, Any] = {}  # what every request's scope on this connection shares (copied per request)
        self.current: Exchange | None = None  # the exchange being answered
        self.parsing: Exchange | None = None  # the exchange whose request is being read
        self.queued: deque[Exchange] = deque()  # pipelined requests waiting for their turn
        self._ready: asyncio.Future[None] | None = None  # the worker task waits on it for the next request
        self._paused = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False  # a request head has begun and is not complete
        self._head_size = 0  # bytes of the request line and fields (trailers included) of this request
        self._progress = False  # the parser made something of the bytes fed (a field, body, the end)
        self._stuck = 0  # bytes fed that the parser still holds without making anything of them
        self._refusal: bytes | None = None  # what a callback refuses the request with
        self.broken = False  # nothing more is read: the answers in progress, then `_final`, then the close
        self._final: bytes | None = None

    # --- transport callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.local = (local[0], local[1]) if isinstance(local, tuple) else None
        self._scope = {"type": "http", "asgi": _ASGI, "http_version": "1.1", "server": self.local,
                       "client": self.client, "scheme": "http", "method": "", "root_path": "", "path": "",
                       "raw_path": b"", "query_string": b"", "headers": []}
        self.server.connections.add(self)
        self.loop.create_task(self._work())

    def data_received(self, data: bytes) -> None:
        while data and not self.broken:
            self._progress = False
            try:
                self.parser.feed_data(data)
            except HttpParserUpgrade as exc:
                # An Upgrade (h2c, websocket) without a body, answered as a plain request (RFC 9110 7.8
                # lets a server ignore it): llhttp stops there, so a fresh parser reads what follows.
                self.parser = HttpRequestParser(self)
                data = data[exc.args[0]:]
                continue
            except HttpParserError:
                refusal, self._refusal = self._refusal, None
                self._refuse(refusal if refusal is not None else _BAD_REQUEST)
                return
            if self._progress:
                self._stuck = 0
            else:
                # Bytes the parser keeps without a callback (a header line without its end, a chunk
                # extension): bounded like a head, or one endless line would take all memory.
                self._stuck += len(data)
                if self._stuck > self.server.max_head:
                    self._refuse(_HEADERS_TOO_LARGE if self._in_head else _BAD_REQUEST)
            return

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        for exchange in (self.current, self.parsing, *self.queued):
            if exchange is not None:
                exchange.wake()
        self._wake_drain()
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def eof_received(self) -> bool | None:
        """The client finished sending (a half-close): answer what it asked, then close."""
        if self.parsing is not None or (self.current is None and not self.queued):
            return None  # a request body that can no longer be complete, or nothing to answer: close
        self.half_closed = True
        return True  # keep the transport open to write the answers; exchange_done closes it

    def pause_writing(self) -> None:
        self.can_write = False
        self.ticks = 0

    def resume_writing(self) -> None:
        self.can_write = True
        self.ticks = 0
        self._wake_drain()

    # --- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._head_size = 0
        self.ticks = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._progress = True
        if len(self._url) > self.server.max_url:
            self._refusal = _URI_TOO_LONG
            raise ValueError("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progress = True
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.server.max_head or len(self._headers) >= self.server.max_headers:
            self._refusal = _HEADERS_TOO_LARGE
            raise ValueError("request head too large")
        if self.parsing is None:  # (trailer fields, after the body, are counted and dropped)
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self._in_head = False
        self._progress = True
        self.ticks = 0
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._refusal = _VERSION_NOT_SUPPORTED
            raise ValueError("HTTP version")
        url = self._url
        raw_path, _, query = url.partition(b"?")
        authority = b""
        if raw_path[:1] != b"/":  # absolute-form (a proxy request) or "*": keep the path part only
            _, scheme_end, rest = raw_path.partition(b"://")
            authority, slash, after = rest.partition(b"/")
            authority = authority.rpartition(b"@")[2]  # (userinfo, deprecated, is no part of the host)
            raw_path = slash + after if scheme_end and slash else b"/"
        raw_path = raw_path.partition(b"#")[0]
        # (find, not `in`: bytes.__contains__ first tries its argument as an int and pays for the TypeError)
        path = raw_path.decode("latin-1") if raw_path.find(b"%") < 0 else unquote(raw_path.decode("latin-1"))
        headers = self._headers
        expect_continue = False
        hosts = 0
        coding = length = None
        host = b""
        for name, value in headers:
            if name == b"host":
                hosts += 1
                host = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                coding = value
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        # (llhttp already refuses Content-Length with Transfer-Encoding, several or malformed Content-Length
        # and a Transfer-Encoding not ending in chunked.)
        # RFC 9112 3.2: exactly one Host (none is allowed in HTTP/1.0), and a valid one.
        if hosts > 1 or (hosts == 0 and version == "1.1") or (hosts and not _is_uri_host(host)) \
                or not _is_uri_host(authority):
            raise ValueError("Host")
        if authority:  # RFC 9112 3.2.2: an absolute-form target's authority names the host, not the Host field
            headers = self._headers = [pair for pair in headers if pair[0] != b"host"]
            headers.append((b"host", authority))
        if coding is not None:
            if version == "1.0":  # RFC 9112 6.1: faulty framing, refused as nginx does
                raise ValueError("Transfer-Encoding in HTTP/1.0")
            if coding.strip().lower() != b"chunked":  # gzip, chunked: a coding this server does not undo
                self._refusal = _NOT_IMPLEMENTED
                raise ValueError("transfer coding")
        if parser.should_upgrade():
            # CONNECT, or an Upgrade with a body: llhttp would not read that body as HTTP, so what
            # follows could not be told from a next request. An Upgrade without one is answered plainly.
            if coding is not None or (length is not None and length != b"0") or parser.get_method() == b"CONNECT":
                raise ValueError("upgrade")
        if len(self.queued) >= MAX_PIPELINED:
            self._refusal = b""  # no answer for it: those read before it are answered, then the close
            raise ValueError("too many pipelined requests")
        scope = self._scope.copy()  # (a dict of its own per request, as ASGI wants: copying is cheaper than building)
        scope["http_version"] = version
        scope["method"] = parser.get_method().decode("ascii")
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query.partition(b"#")[0]
        scope["headers"] = headers
        bodyless = coding is None and (length is None or length == b"0")
        exchange = Exchange(self, scope, parser.should_keep_alive(), expect_continue, bodyless)
        self.parsing = exchange
        if self.current is None:
            self._start(exchange)
        else:
            self.queued.append(exchange)
            self._pause()  # pipelining: read no further until this one's turn

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self.ticks = 0
        exchange = self.parsing
        if exchange is None or exchange.discard:
            return
        exchange.chunks.append(body)
        exchange.buffered += len(body)
        if exchange.buffered > _HIGH_WATER:
            self._pause()
        exchange.wake()

    def on_message_complete(self) -> None:
        self._progress = True
        exchange = self.parsing
        if exchange is not None:
            exchange.body_done = True
            exchange.expect_continue = False
            exchange.wake()
            self.parsing = None
            if exchange is self.current and not exchange.dispatched:
                self._dispatch(exchange)

    # --- running the app --------------------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        self.current = exchange
        if exchange.bodyless and not exchange.body_done and self.direct is not None:
            return  # the app's `direct` may take it once it is whole (on_message_complete, just after)
        self._dispatch(exchange)

    def _dispatch(self, exchange: Exchange) -> None:
        """Offer a request without a body to the app's `direct` (answered from callbacks), else run the app on the task.

        `direct(exchange)` is an optional method of the app: it returns False to decline, or True
        having answered (`exchange.answer`) or going to (from callbacks of its own, or with
        `exchange.continue_with(coroutine)`, which the connection's task runs as it would the app).
        accord.gateway.proxy's `Gateway.direct` is the one user; any other ASGI app runs as usual.
        """
        exchange.dispatched = True
        direct = self.direct
        if direct is not None and exchange.bodyless and exchange.body_done:
            try:
                if direct(exchange):
                    return
            except Exception:
                log.exception("the gateway failed on %s %s", exchange.scope["method"], exchange.scope["path"])
                exchange.fail()
                return
        exchange.for_task = True
        self.wake_task()

    def wake_task(self) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def _work(self) -> None:
        """The connection's one task: runs the app for each request handed to it, in turn.

        (A task per connection rather than per request: creating a task cost more than the
        future that wakes this one.)
        """
        done: Exchange | None = None
        while not self.lost:
            exchange = self.current
            if exchange is None or exchange is done or not exchange.for_task:
                self._ready = self.loop.create_future()
                try:
                    await self._ready
                finally:
                    self._ready = None
                continue
            done = exchange
            if not await self._run(exchange):
                return

    async def _run(self, exchange: Exchange) -> bool:
        """Run the app for one request; False when the connection cannot go on."""
        work, exchange.work = exchange.work, None
        try:
            await (work if work is not None else self.app(exchange.scope, exchange.receive, exchange.send))
        except Exception:
            log.exception("the gateway failed on %s %s", exchange.scope["method"], exchange.scope["path"])
            if not exchange.head_sent and not self.lost:
                self.write(_SERVER_ERROR)
            self.close()
            return False
        if not exchange.finished:
            if not exchange.head_sent and not self.lost:
                log.error("the gateway returned without answering %s %s", exchange.scope["method"],
                          exchange.scope["path"])
                self.write(_SERVER_ERROR)
            self.close()  # an answer cut short: only closing tells the client
            return False
        return True

    def exchange_done(self, exchange: Exchange) -> None:
        """The answer is written: go on with the next request, or close."""
        if exchange is not self.current:
            return
        self.current = None
        self.ticks = 0
        exchange.wake()  # an app waiting in receive() for the disconnect: the exchange is over
        if not exchange.keep_alive or self.closing or self.lost:
            self.close()
            return
        if not exchange.body_done:
            # Answered without reading the whole body (a refusal, say): read the rest and drop it, so
            # the connection stays usable and the client is not reset while it is still sending.
            exchange.discard = True
            exchange.chunks = []
            exchange.buffered = 0
        if self.queued:
            self._start(self.queued.popleft())
        elif self.broken:
            if self._final:
                self.write(self._final)  # the refusal of the request read after those answered
            self.close()
            return
        elif self.half_closed and self.parsing is None:
            self.close()
            return
        if self._paused and (self.parsing is None or self.parsing.discard or self.parsing.buffered <= _LOW_WATER):
            self._resume()

    def body_taken(self) -> None:
        if self._paused and not self.queued:
            self._resume()

    # --- helpers -------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.lost and not transport.is_closing():
            transport.write(data)

    async def drain(self) -> None:
        while not self.can_write and not self.lost:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self.transport is not None and not self.lost and not self.broken:
            self._paused = False
            self.transport.resume_reading()

    def _refuse(self, answer: bytes) -> None:
        """A request that cannot be read (malformed, too large, too slow): nothing more is read from here.

        The requests read before it are answered first (pipelining); a request whose body turned out
        malformed is cut: its app sees a disconnect, and the client gets `answer` if nothing of the
        answer was sent yet. Then the connection closes.
        """
        self.broken = True
        self._pause()
        parsing = self.parsing
        self.parsing = None
        if parsing is not None:
            if parsing.discard:  # the body of a request answered already: nothing more to say
                self.close()
                return
            if parsing is self.current:
                if not parsing.head_sent:
                    self.write(answer)
                self.close()  # the app sees the disconnect; what it answers now is dropped
                return
            self.queued.remove(parsing)  # waiting for its turn with a broken body: never run
        if self.current is None:
            self.write(answer)
            self.close()
        else:
            self._final = answer  # exchange_done writes it after the answers in progress

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close without waiting for the client to take what is buffered (it may never read it)."""
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def tick(self, keepalive_ticks: int, header_ticks: int, stall_ticks: int) -> None:
        """Called every second: close a connection idle too long, or whose client stalls.

        Idle (no request begun) for `keepalive_ticks`; a request head begun but not complete after
        `header_ticks` (slowloris); a request body that stops coming, or an answer the client stops
        reading, for `stall_ticks` (nginx: client_header_timeout, client_body_timeout, send_timeout).
        """
        self.ticks += 1
        if self._in_head and not self.broken:
            if self.ticks >= header_ticks:
                self._refuse(_REQUEST_TIMEOUT)
        elif self.current is None and self.parsing is None:
            if self.ticks >= keepalive_ticks or self.closing:
                self.close() if self.can_write else self.abort()
        elif not self.can_write:
            if self.ticks >= stall_ticks:
                log.info("closing a connection whose client does not read its answer")
                self.abort()
        elif (self.parsing is not None and not self._paused and not self.parsing.expect_continue
              and not self.broken):
            if self.ticks >= stall_ticks:
                self._refuse(_REQUEST_TIMEOUT)
        else:
            self.ticks = 0  # the app is at work: nothing is asked of the client meanwhile

    def shut(self) -> None:
        """Shutdown: close now if idle, else after the answer in progress."""
        self.closing = True
        if self.current is None and self.parsing is None:
            self.close()


class _Server:
    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop, max_url: int, max_head: int,
                 max_headers: int) -> None:
        self.app = app
        self.direct: Callable[[Exchange], bool] | None = getattr(app, "direct", None)
        self.loop = loop
        self.connections: set[_Connection] = set()
        self.max_url = max_url
        self.max_head = max_head
        self.max_headers = max_headers


async def _lifespan(app: Any, phase: str, state: dict[str, Any]) -> None:
    """Run the ASGI lifespan's startup (a task that then waits for the shutdown) or its shutdown."""
    if phase == "startup":
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        state.update(inbox=inbox, outbox=outbox)

        async def run() -> None:
            try:
                await app({"type": "lifespan", "asgi": _ASGI, "state": {}}, inbox.get, outbox.put)
            except Exception as exc:  # an app without lifespan support: nothing to start or stop
                await outbox.put({"type": "lifespan.unsupported", "message": repr(exc)})

        state["task"] = asyncio.get_running_loop().create_task(run())
        await inbox.put({"type": "lifespan.startup"})
        answer = await outbox.get()
        if answer["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the gateway failed to start: {answer.get('message', '')}")
        state["supported"] = answer["type"] == "lifespan.startup.complete"
        return
    if state.get("supported"):
        await state["inbox"].put({"type": "lifespan.shutdown"})
        await state["outbox"].get()
    await asyncio.gather(state["task"], return_exceptions=True)


async def serve(app: Any, sock: socket.socket, *, keepalive_timeout: int = 5, header_timeout: int = 10,
                stall_timeout: int = 30, max_url: int = MAX_URL, max_head: int = MAX_HEAD,
                max_headers: int = MAX_HEADERS, shutdown_timeout: float = 30.0, stop: asyncio.Event | None = None,
                started: Callable[[], None] | None = None) -> None:
    """Serve `app` on a listening socket until `stop` is set (or SIGTERM/SIGINT when `stop` is None).

    Timeouts in seconds (checked once a second): `keepalive_timeout` idle between requests,
    `header_timeout` to send a whole request head, `stall_timeout` without a byte of a request
    body the app waits for, or without the client taking a byte of its answer. Heads are bounded:
    a request target longer than `max_url` bytes is answered 414; header (or trailer) fields
    over `max_head` bytes in all, or more than `max_headers` of them, 431.
    """
    loop = asyncio.get_running_loop()
    lifespan: dict[str, Any] = {}
    await _lifespan(app, "startup", lifespan)
    server_state = _Server(app, loop, max_url, max_head, max_headers)
    server = await loop.create_server(lambda: _Connection(server_state), sock=sock, backlog=2048)
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(1.0)
            for connection in list(server_state.connections):
                connection.tick(keepalive_timeout, header_timeout, stall_timeout)

    sweeper = loop.create_task(sweep())
    if started is not None:
        started()
    try:
        await stop.wait()
    finally:
        server.close()  # no new connections; those open finish what they are answering
        for connection in list(server_state.connections):
            connection.shut()
        deadline = time.monotonic() + shutdown_timeout
        while server_state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(server_state.connections):
            connection.abort()  # (a close would wait for a client that does not read)
        sweeper.cancel()
        await _lifespan(app, "shutdown", lifespan)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run(app_factory: Callable[[], Any], host: str, port: int, *, workers: int = 1, **options: Any) -> None:
    """Serve in this process (workers=1) or in `workers` forked processes accepting from one socket.

    `options` are `serve`'s timeouts and limits.
    """
    import uvloop

    sock = bind(host, port)
    if workers <= 1:
        uvloop.run(serve(app_factory(), sock, **options))
        return
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: its own loop and app, the parent's socket
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            code = 0
            try:
                uvloop.run(serve(app_factory(), sock, **options))
            except BaseException:  # noqa: BLE001 - report and leave with a failure code
                log.exception("gateway worker %d failed", number)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = number

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for number in range(workers):
        start(number)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid in children:
            died = children.pop(pid)
            if not stopping:
                log.error("gateway worker %d (pid %d) died (status %d); starting another", died, pid, status)
                time.sleep(0.5)
                start(died)
    sock.close()
    sys.stdout.flush()
