"""The gateway's own HTTP/1.1 server (accord.gateway.server), spoken to over raw sockets.

A small ASGI app stands in for the gateway so that each rule of the server — keep-alive,
pipelining, request and answer framing, 100-continue, errors, idle timeout, shutdown — is
seen byte for byte on the wire.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from accord.gateway.server import bind, serve
from tests.conftest import TEST_SECRET
from tests.servers import free_port


class App:
    """/echo answers with what it read; /stream answers in parts; /head-only, /fail, /early, /slow as named."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path = scope["path"]
        if path == "/fail":
            raise RuntimeError("the app broke")
        if path == "/early":  # answers without reading the request body
            return await _answer(send, 403, b"no")
        if path == "/slow":
            await asyncio.sleep(0.5)
            return await _answer(send, 200, b"slow but done")
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"stream")]})
            for part in (b"one ", b"two ", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = {"method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(), "body": body.decode(), "client": scope["client"][0],
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]}
        await _answer(send, 200, json.dumps(seen).encode(), [(b"content-type", b"application/json")])


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def running(app: Any, **options: Any) -> AsyncIterator[tuple[int, asyncio.Event]]:
    sock = bind("127.0.0.1", 0)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(app, sock, stop=stop, started=started.set, **options))
    await asyncio.wait_for(started.wait(), 5)
    try:
        yield sock.getsockname()[1], stop
    finally:
        stop.set()
        await task


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while (size := int((await reader.readuntil(b"\r\n")).strip(), 16)) > 0:
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
    else:
        body = await reader.read()  # until the server closes
    return status, headers, body


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_keep_alive_pipelining_and_the_request_as_the_app_sees_it() -> None:
    app = App()
    async with running(app) as (port, _):
        reader, writer = await connect(port)
        # Two requests in one write: answered in order on the same connection.
        writer.write(b"GET /echo/a%2Fb?x=1&y=%20 HTTP/1.1\r\nHost: gw\r\nX-Thing: 1\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello")
        first = await read_answer(reader)
        second = await read_answer(reader)
        seen = json.loads(first[2])
        assert seen["path"] == "/echo/a/b" and seen["raw_path"] == "/echo/a%2Fb" and seen["query"] == "x=1&y=%20"
        assert ["x-thing", "1"] in seen["headers"] and seen["client"] == "127.0.0.1"
        assert json.loads(second[2])["body"] == "hello"
        assert "connection" not in first[1]
        writer.write(b"GET /echo HTTP/1.1\r\nHost: gw\r\n\r\n")  # and still open after both
        assert (await read_answer(reader))[0] == 200
        writer.close()
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


async def test_an_absolute_form_target_names_the_host() -> None:
    """RFC 9112 3.2.2: the target's authority, not the Host field, is the host (and userinfo is no part of it)."""
    async with running(App()) as (port, _):
        reader, writer = await connect(port)
        for target, host, path in ((b"http://user@api.example:8080/echo/x?q=1", "api.example:8080", "/echo/x"),
                                   (b"http://api.example", "api.example", "/"),
                                   (b"/echo", "gw", "/echo")):
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
            status, _, body = await read_answer(reader)
            seen = json.loads(body)
            assert status == 200 and seen["path"] == path
            assert [value for name, value in seen["headers"] if name == "host"] == [host]
        writer.close()


async def test_request_bodies_chunked_and_with_expect_continue() -> None:
    async with running(App()) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert json.loads((await read_answer(reader))[2])["body"] == "hello world"
        writer.write(b"PUT /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"data")
        assert json.loads((await read_answer(reader))[2])["body"] == "data"
        writer.close()


async def test_answer_framing_streamed_head_and_http_1_0() -> None:
    async with running(App()) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n")
        status, headers, body = await read_answer(reader)
        assert headers["transfer-encoding"] == "chunked" and body == b"one two three"
        writer.write(b"HEAD /echo HTTP/1.1\r\nHost: gw\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"content-length:" in head.lower()
        writer.write(b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n")  # nothing of the HEAD's body came in between
        assert (await read_answer(reader))[2] == b"one two three"
        writer.close()

        # HTTP/1.0 without keep-alive: the answer, then the server closes; a stream ends by closing.
        reader, writer = await connect(port)
        writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
        status, headers, body = await read_answer(reader)
        assert status == 200 and "transfer-encoding" not in headers and body == b"one two three"
        assert headers["connection"] == "close" and await reader.read() == b""
        writer.close()


async def test_an_answer_before_the_body_keeps_the_connection_usable() -> None:
    async with running(App()) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"POST /early HTTP/1.1\r\nHost: gw\r\nContent-Length: 300000\r\n\r\n")
        assert (await read_answer(reader))[:3:2] == (403, b"no")
        writer.write(b"x" * 300_000)  # the client goes on sending; the server drops it
        writer.write(b"GET /echo HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert json.loads((await read_answer(reader))[2])["method"] == "GET"
        writer.close()


async def test_errors_bad_requests_and_failing_apps() -> None:
    async with running(App()) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"GET /fail HTTP/1.1\r\nHost: gw\r\n\r\n")
        status, headers, body = await read_answer(reader)
        assert status == 500 and body == b"Internal Server Error" and headers["connection"] == "close"
        assert await reader.read() == b""

        reader, writer = await connect(port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, _ = await read_answer(reader)
        assert status == 400 and await reader.read() == b""


async def test_idle_connections_close_and_shutdown_lets_requests_finish() -> None:
    async with running(App(), keepalive_timeout=1) as (port, stop):
        reader, writer = await connect(port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: gw\r\n\r\n")
        await read_answer(reader)
        assert await asyncio.wait_for(reader.read(), 3.5) == b""  # closed by the server after ~1–2 s idle

        reader, writer = await connect(port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        await asyncio.sleep(0.1)
        stop.set()  # shutdown begins while /slow is being answered
        status, headers, body = await read_answer(reader)
        assert (status, body) == (200, b"slow but done") and headers["connection"] == "close"


async def test_a_client_that_half_closes_still_gets_its_answers() -> None:
    async with running(App()) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        writer.write_eof()  # like `printf ... | nc`: nothing more will come, while /slow is being answered
        assert (await read_answer(reader))[2] == b"slow but done"
        assert await reader.read() == b""  # then the server closes

        reader, writer = await connect(port)  # pipelined, then the end: every request is answered
        writer.write(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\nGET /echo HTTP/1.1\r\nHost: gw\r\n\r\n")
        writer.write_eof()
        assert (await read_answer(reader))[2] == b"slow but done"
        assert json.loads((await read_answer(reader))[2])["path"] == "/echo"
        assert await reader.read() == b""


async def test_a_client_leaving_mid_body_is_a_disconnect_for_the_app() -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await App()(scope, receive, send)
        while True:
            messages.append(await receive())
            if messages[-1]["type"] == "http.disconnect" or not messages[-1]["more_body"]:
                return

    async with running(app) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 1024 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()  # gone before the last chunk (a FIN: the body can never be complete now)
        await asyncio.sleep(0.2)
    assert [m["type"] for m in messages] == ["http.request", "http.disconnect"]
    assert messages[0]["body"] == b"x" * 1024 and messages[0]["more_body"] is True


# --- hardening: what an attacker or a broken client sends -------------------------------------------

import pytest  # noqa: E402

from accord.gateway import server as http_server  # noqa: E402


class Counting(App):
    """App, counting the requests that reach it; /answer-* break the framing rules on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.finished: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls.append(scope["path"])
        path = scope.get("path")
        if path == "/answer-204":
            return await _answer(send, 204, b"")  # with content-length: 0, which 204 must not carry
        if path == "/answer-long":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
            await send({"type": "http.response.body", "body": b"abcdef"})
            return
        if path == "/answer-short":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"abc"})
            return
        if path == "/answer-split":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"x-note", b"a\r\nset-cookie: evil=1")]})
            await send({"type": "http.response.body", "body": b"x"})
            return
        if path == "/answer-int":  # not bytes: bytes(3) would be three NULs on the wire
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-count", 3)]})
            await send({"type": "http.response.body", "body": b"x"})
            return
        if path == "/answer-list":  # [name, value] lists and mixed case, as ASGI allows
            await send({"type": "http.response.start", "status": 200,
                        "headers": [[b"X-Mixed", bytearray(b"yes")], [b"Content-Length", b"1"]]})
            await send({"type": "http.response.body", "body": b"x"})
            return
        if path == "/cut":  # a proxied answer whose upstream broke off: left unfinished
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            return
        if path == "/big":  # more than any socket buffer, to a client that may not read it
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(400):
                await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            self.finished.append(path)
            return
        await super().__call__(scope, receive, send)
        if path is not None:
            self.finished.append(path)


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Send `raw`, read one answer; also whether the server closed the connection after it."""
    reader, writer = await connect(port)
    writer.write(raw)
    try:
        status, headers, body = await asyncio.wait_for(read_answer(reader), 3)
        rest = await asyncio.wait_for(reader.read(), 3)
        return status, headers, body, rest == b""
    finally:
        writer.close()


SMUGGLING = {
    "content-length and transfer-encoding": (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "transfer-encoding and content-length": (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                             b"Content-Length: 4\r\n\r\n0\r\n\r\n", 400),
    "two content-lengths": (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    "a host that is no URI host": (b"GET /echo HTTP/1.1\r\nHost: a, for=6.6.6.6\r\n\r\n", 400),
    "an absolute-form authority that is no URI host": (b"GET http://a#f/echo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "a content-length list": (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "a signed content-length": (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    "a coding before chunked": (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                b"3\r\nabc\r\n0\r\n\r\n", 501),
    "chunked not last": (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    "no chunked at all": (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc", 501),
    "two transfer-encodings": (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "transfer-encoding in HTTP/1.0": (b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      b"3\r\nabc\r\n0\r\n\r\n", 400),
    "a space before the colon": (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc", 400),
    "obs-fold": (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n", 400),
    "bare LF": (b"GET /echo HTTP/1.1\nHost: a\n\n", 400),
    "bare CR": (b"GET /echo HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n", 400),
    "a control character in a value": (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400),
    "no Host in HTTP/1.1": (b"GET /echo HTTP/1.1\r\n\r\n", 400),
    "two Hosts": (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "HTTP/2.0 over HTTP/1": (b"GET /echo HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "HTTP/0.9": (b"GET /echo\r\n\r\n", 505),
    "CONNECT": (b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n", 400),
    "an Upgrade with a body": (b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                               b"Content-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", list(SMUGGLING))
async def test_ambiguous_or_malformed_requests_are_refused_before_the_app(case: str) -> None:
    raw, expected = SMUGGLING[case]
    app = Counting()
    async with running(app) as (port, _):
        # A request the client believes harmless follows in the same write: it must not be read.
        status, headers, _, closed = await exchange(port, raw + b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (status, headers["connection"], closed) == (expected, "close", True)
    assert app.calls == []


async def test_malformed_chunks_answer_400_and_close() -> None:
    for chunk in (b"3x\r\nabc\r\n0\r\n\r\n", b"0x3\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffffff\r\nabc\r\n",
                  b"3;ext=\x01\r\nabc\r\n0\r\n\r\n", b"3\r\nabcX0\r\n\r\n"):
        async with running(Counting()) as (port, _):
            status, _, _, closed = await exchange(
                port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
            assert (status, closed) == (400, True), chunk[:20]
    async with running(Counting()) as (port, _):  # a chunk extension that never ends, sent in parts
        reader, writer = await connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;")
        for _ in range(40):
            writer.write(b"e" * 4096)
            await writer.drain()
        assert (await asyncio.wait_for(read_answer(reader), 3))[0] == 400
        writer.close()


async def test_a_get_with_a_body_keeps_its_framing_and_trailers_are_dropped() -> None:
    async with running(App()) as (port, _):
        reader, writer = await connect(port)
        inner = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"  # a body that looks like a request
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%b" % (len(inner), inner) +
                     b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\nHost: evil\r\nX-Trailer: 1\r\n\r\n")
        first = json.loads((await read_answer(reader))[2])
        second = json.loads((await read_answer(reader))[2])
        assert first["path"] == "/echo" and first["body"].startswith("GET /smuggled")
        assert second["body"] == "abc" and second["headers"] == [["host", "a"], ["transfer-encoding", "chunked"]]
        writer.close()


async def test_heads_are_bounded_431_414_and_closed() -> None:
    app = Counting()
    async with running(app) as (port, _):
        long_url = b"GET /echo?" + b"q" * http_server.MAX_URL + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        assert (await exchange(port, long_url))[::3] == (414, True)
        many = b"".join(b"X-%d: 1\r\n" % n for n in range(http_server.MAX_HEADERS + 1))
        assert (await exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n"))[::3] == (431, True)
        large = b"".join(b"X-%d: %b\r\n" % (n, b"v" * 4000) for n in range(10))
        assert (await exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\n" + large + b"\r\n"))[::3] == (431, True)
        trailers = b"".join(b"X-%d: %b\r\n" % (n, b"v" * 4000) for n in range(10))
        assert (await exchange(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"0\r\n" + trailers + b"\r\n"))[::3] == (431, True)

        # One header line that never ends, sent in parts: refused once past the limit, not buffered on.
        reader, writer = await connect(port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        for _ in range(40):
            writer.write(b"v" * 4096)
            await writer.drain()
        status, headers, _ = await asyncio.wait_for(read_answer(reader), 3)
        assert (status, headers["connection"]) == (431, "close")
        writer.close()

        # Near the limits is fine.
        fine = b"".join(b"X-%d: %b\r\n" % (n, b"v" * 200) for n in range(90))
        status, _, body, closed = await exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                                 + fine + b"\r\n")
        assert status == 200 and len(json.loads(body)["headers"]) == 92
    assert app.calls == ["/echo", "/echo"]  # the request with too many trailers, and the last one

    # The bounds are the server's options: what passed above is refused under tighter ones, and the reverse.
    close = b"GET /echo%b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n%b\r\n"
    async with running(app, max_url=1024, max_head=2048, max_headers=10) as (port, _):
        eight = b"".join(b"X-%d: 1\r\n" % n for n in range(8))
        assert (await exchange(port, close % (b"", eight)))[0] == 200  # 10 fields with Host and Connection
        assert (await exchange(port, close % (b"", eight + b"X-9: 1\r\n")))[::3] == (431, True)
        assert (await exchange(port, close % (b"", b"X: %b\r\n" % (b"v" * 2100))))[::3] == (431, True)
        assert (await exchange(port, close % (b"?" + b"q" * 1100, b"")))[::3] == (414, True)
    async with running(app, max_url=64 * 1024, max_head=128 * 1024, max_headers=300) as (port, _):
        assert (await exchange(port, close % (b"?" + b"q" * http_server.MAX_URL, b"")))[0] == 200
        assert (await exchange(port, close % (b"", many)))[0] == 200
        assert (await exchange(port, close % (b"", large)))[0] == 200


async def test_slow_clients_are_cut_off() -> None:
    app = Counting()
    async with running(app, keepalive_timeout=5, header_timeout=1, stall_timeout=1) as (port, _):
        # Slowloris: a head that trickles in (each byte would reset an idle timer) is cut by its own timer.
        reader, writer = await connect(port)
        started = asyncio.get_running_loop().time()
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            for _ in range(30):
                writer.write(b"X-A: 1\r\n")
                await writer.drain()
                if reader.at_eof() or (reader._buffer and b"\r\n\r\n" in reader._buffer):  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.25)
            status = (await read_answer(reader))[0]
            assert status == 408
            raise ConnectionError("answered and closed")
        assert asyncio.get_running_loop().time() - started < 4
        writer.close()

        # A body announced and never sent: 408 and a disconnect for the app, not a pinned connection.
        status, _, _, closed = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        assert (status, closed) == (408, True)

        # An answer the client never reads: the connection is dropped and the app is let go.
        reader, writer = await connect(port)
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        writer.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        for _ in range(100):
            if "/big" in app.finished:
                break
            await asyncio.sleep(0.1)
        assert "/big" in app.finished
        writer.close()
    assert app.calls == ["/echo", "/big"]  # the slowloris head never reached the app


async def test_pipelining_is_bounded() -> None:
    app = Counting()
    async with running(app) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n" * 200)
        answered = 0
        while True:
            try:
                await asyncio.wait_for(read_answer(reader), 3)
            except asyncio.IncompleteReadError:
                break
            answered += 1
        assert answered == http_server.MAX_PIPELINED + 1 and len(app.calls) == answered
        writer.close()

        # A malformed request behind good ones: those are answered first, then the 400.
        reader, writer = await connect(port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
                     b"GET /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n")
        assert [(await read_answer(reader))[0] for _ in range(3)] == [200, 200, 400]
        assert await reader.read() == b""
        writer.close()


async def test_upgrade_without_a_body_is_answered_as_plain_http() -> None:
    app = Counting()
    async with running(app) as (port, _):
        reader, writer = await connect(port)  # what `curl --http2 http://…` sends
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                     b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /echo/next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_answer(reader))[0] == 200
        assert json.loads((await read_answer(reader))[2])["path"] == "/echo/next"
        writer.close()
    assert app.calls == ["/echo", "/echo/next"]


async def test_connection_semantics_http_1_0_and_expect_continue() -> None:
    async with running(Counting()) as (port, _):
        reader, writer = await connect(port)  # HTTP/1.0 asking for keep-alive is told it got it
        writer.write(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await read_answer(reader))[1]["connection"] == "keep-alive"
        writer.write(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await read_answer(reader))[0] == 200
        writer.close()

        # Answered without the 100 Continue: whether the body comes is the client's choice, so the
        # connection closes instead of reading what follows as a request (or a request as the body).
        status, headers, _, closed = await exchange(port, b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                                                    b"Expect: 100-continue\r\n\r\n")
        assert (status, headers["connection"], closed) == (403, "close", True)


async def test_answers_the_app_frames_wrongly_never_desynchronise_the_connection() -> None:
    async with running(Counting()) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"GET /answer-204 HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 204") and b"content-length" not in head.lower()
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_answer(reader))[0] == 200  # still in step
        writer.close()

        # More than its Content-Length: cut at the announced length and closed.
        reader, writer = await connect(port)
        writer.write(b"GET /answer-long HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 3)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nabc") and b'"path"' not in data
        # Less than its Content-Length: closed, so the client sees the answer is short.
        reader, writer = await connect(port)
        writer.write(b"GET /answer-short HTTP/1.1\r\nHost: a\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 3)
        assert data.endswith(b"\r\n\r\nabc")  # and then the end of the connection (read() returned)
        # An upstream that broke off: no last chunk, the connection closes.
        reader, writer = await connect(port)
        writer.write(b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 3)
        assert b"4\r\npart\r\n" in data and not data.endswith(b"0\r\n\r\n")
        # A CR or LF in a header value: a 500, never a second header line.
        status, headers, body, closed = await exchange(port, b"GET /answer-split HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (status, closed) == (500, True) and "set-cookie" not in headers
        # A header value that is not bytes: a 500, not NULs.
        status, headers, body, closed = await exchange(port, b"GET /answer-int HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 500 and "x-count" not in headers
        status, headers, body, closed = await exchange(port, b"GET /answer-list HTTP/1.1\r\nHost: a\r\n"
                                                       b"Connection: close\r\n\r\n")
        assert (status, headers["x-mixed"], body) == (200, "yes", b"x")


async def test_the_gateway_command_takes_its_server_timeouts_from_settings(fresh_database_url: str) -> None:
    """`accord gateway` passes ACCORD_GATEWAY_*_TIMEOUT and _MAX_* to its server (here: idle keep-alive
    1 s, not 5; at most 10 header fields, not 100)."""
    port = free_port()
    env = {**os.environ, "ACCORD_DATABASE_URL": fresh_database_url, "ACCORD_SECRET_KEY": TEST_SECRET,
           "ACCORD_GATEWAY_KEEPALIVE_TIMEOUT": "1", "ACCORD_GATEWAY_MAX_HEADERS": "10"}
    gateway = subprocess.Popen([sys.executable, "-m", "accord.cli", "gateway", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                reader, writer = await connect(port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the gateway did not come up")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await read_answer(reader))[0] in (200, 503)
        assert await asyncio.wait_for(reader.read(), 3.5) == b""  # closed after ~1–2 s idle
        writer.close()
        eleven = b"".join(b"X-%d: 1\r\n" % n for n in range(10))
        assert (await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + eleven + b"\r\n"))[0] == 431
    finally:
        gateway.terminate()
        gateway.wait(timeout=20)
