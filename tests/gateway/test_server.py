"""The gateway's own HTTP/1.1 server (accord.gateway.server), spoken to over raw sockets.

A small ASGI app stands in for the gateway so that each rule of the server — keep-alive,
pipelining, request and answer framing, 100-continue, errors, idle timeout, shutdown — is
seen byte for byte on the wire.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from accord.gateway.server import bind, serve


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
