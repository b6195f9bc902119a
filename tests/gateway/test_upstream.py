"""The gateway's upstream HTTP/1.1 client against scripted upstreams over real sockets.

Each upstream here is a raw asyncio server that answers exactly as the test says (keep-alive
or not, chunked, close-delimited, interim 1xx, closing an idle connection, never answering),
so every framing and pooling rule of accord.gateway.upstream is exercised for real.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from accord.gateway.upstream import UpstreamClient, UpstreamTimeout, UpstreamUnreachable, parse_origin

# One request per call: (reader, writer, request number on this connection) -> keep the connection?
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int, bytes], Awaitable[bool]]


class Scripted:
    """A raw HTTP upstream: reads each request (head and body) and lets the test's script answer it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        number = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await _read_body(reader, head)
                self.requests.append(head + body)
                number += 1
                if not await self.script(reader, writer, number, head + body):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        return await reader.readexactly(length)
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += chunk[:-2]
    return b""


@asynccontextmanager
async def upstream(script: Script) -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted(script)
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield scripted, f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(scripted.tasks):  # connections still open (idle in a pool): end them now
            task.cancel()
        await asyncio.gather(*scripted.tasks, return_exceptions=True)


def answer(body: bytes = b"ok", status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status.encode() + b"\r\ncontent-length: %d\r\n" % len(body) + extra + b"\r\n" + body


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int, request: bytes) -> bool:
    path = request.split(b" ", 2)[1]
    writer.write(answer(b"you asked for " + path))
    return True


def head(method: str, path: str, extra: bytes = b"") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: upstream\r\n".encode() + extra + b"\r\n"


async def fetch(client: UpstreamClient, url: str, method: str = "GET", path: str = "/", *,
                body: list[bytes] | None = None, chunked: bool = False) -> tuple[int, list, bytes]:
    origin = parse_origin(url)
    assert origin is not None
    framing = b""
    if body is not None:
        framing = b"transfer-encoding: chunked\r\n" if chunked else b"content-length: %d\r\n" % sum(map(len, body))

    async def chunks() -> AsyncIterator[bytes]:
        for part in body or []:
            yield part

    result, connection = await client.request(origin, method, head(method, path, framing),
                                              chunks if body is not None else None, chunked)
    try:
        data = b""
        while part := await result.read():
            data += part
        return result.status, result.headers, data
    finally:
        client.release(connection)


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(connect_timeout=2, read_timeout=0.5)
    yield c
    c.close()


async def test_keep_alive_connections_are_reused(client: UpstreamClient) -> None:
    async with upstream(ok) as (scripted, url):
        for n in range(5):
            status, headers, body = await fetch(client, url, path=f"/item/{n}")
            assert (status, body) == (200, f"you asked for /item/{n}".encode())
        assert scripted.connections == 1 and client.connections_opened == 1
        assert (b"content-length", b"21") in headers  # names lower-cased, values as sent


async def test_many_concurrent_requests_share_the_pool(client: UpstreamClient) -> None:
    async with upstream(ok) as (scripted, url):
        paths = [f"/n/{n}" for n in range(200)]
        results = await asyncio.gather(*(fetch(client, url, path=p) for p in paths))
        assert [body for _, _, body in results] == [b"you asked for " + p.encode() for p in paths]
        opened = client.connections_opened
        assert opened <= 200 and scripted.connections == opened
        # A second wave finds the connections of the first idle in the pool.
        again = await asyncio.gather(*(fetch(client, url, path=p) for p in paths[:opened]))
        assert all(status == 200 for status, _, _ in again)
        assert client.connections_opened == opened


async def test_an_idle_connection_the_upstream_closed_is_not_used(client: UpstreamClient) -> None:
    async def answer_then_close(reader, writer, number, request) -> bool:
        writer.write(answer())  # says keep-alive (HTTP/1.1 default), then closes anyway
        return False

    async with upstream(answer_then_close) as (scripted, url):
        assert (await fetch(client, url))[0] == 200
        await asyncio.sleep(0.05)  # the FIN arrives while the connection sits in the pool
        assert (await fetch(client, url, "POST", body=[b"data"]))[0] == 200
        assert scripted.connections == 2 and client.connections_opened == 2


async def test_a_stale_connection_is_retried_only_when_that_is_safe(client: UpstreamClient) -> None:
    async def first_only(reader, writer, number, request) -> bool:
        if number > 1:  # the upstream gave up on the connection just as the second request came
            writer.transport.abort()
            return False
        writer.write(answer(b"first"))
        return True

    async with upstream(first_only) as (scripted, url):
        assert (await fetch(client, url))[2] == b"first"
        # GET is idempotent: retried once on a new connection, where it is the first request.
        assert (await fetch(client, url, path="/again"))[2] == b"first"
        assert scripted.connections == 2
        # A POST whose body was read from the caller is never sent twice.
        with pytest.raises(UpstreamUnreachable):
            await fetch(client, url, "POST", body=[b"pay once"])
        assert scripted.connections == 2
        assert sum(r.startswith(b"POST") for r in scripted.requests) == 1


async def test_chunked_and_close_delimited_answers(client: UpstreamClient) -> None:
    async def chunked(reader, writer, number, request) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"hello ", b"chunked ", b"world"):
            writer.write(b"%x\r\n%b\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    async with upstream(chunked) as (scripted, url):
        status, headers, body = await fetch(client, url)
        assert body == b"hello chunked world" and (b"transfer-encoding", b"chunked") in headers
        assert (await fetch(client, url))[2] == b"hello chunked world"
        assert scripted.connections == 1  # a chunked answer leaves the connection reusable

    async def until_close(reader, writer, number, request) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of this, until the end")
        return False

    async with upstream(until_close) as (scripted, url):
        assert (await fetch(client, url))[2] == b"all of this, until the end"
        assert (await fetch(client, url))[2] == b"all of this, until the end"
        assert scripted.connections == 2


async def test_answers_without_a_body(client: UpstreamClient) -> None:
    async def bodiless(reader, writer, number, request) -> bool:
        method, path = request.split(b" ", 2)[:2]
        if method == b"HEAD":  # the length of the body a GET would get, and no body
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
        elif path == b"/204":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif path == b"/304":
            writer.write(b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"after an interim answer"))
        return True

    async with upstream(bodiless) as (scripted, url):
        status, headers, body = await fetch(client, url, "HEAD")
        assert (status, body) == (200, b"") and (b"content-length", b"1234") in headers
        assert (await fetch(client, url, path="/204"))[:3:2] == (204, b"")
        assert (await fetch(client, url, path="/304"))[:3:2] == (304, b"")
        assert (await fetch(client, url, "HEAD"))[2] == b""
        assert (await fetch(client, url, path="/"))[::2] == (200, b"after an interim answer")
        assert scripted.connections == 1  # each of these left the connection in a clean state


async def test_request_bodies_stream_with_their_framing(client: UpstreamClient) -> None:
    async def echo_body(reader, writer, number, request) -> bool:
        body = request.split(b"\r\n\r\n", 1)[1]
        writer.write(answer(b"%d bytes" % len(body)))
        return True

    parts = [b"a" * 100_000, b"b" * 300_000, b"c"]
    async with upstream(echo_body) as (scripted, url):
        assert (await fetch(client, url, "PUT", body=parts))[2] == b"400001 bytes"
        assert (await fetch(client, url, "POST", body=parts, chunked=True))[2] == b"400001 bytes"
        assert b"content-length: 400001" in scripted.requests[0]
        assert b"transfer-encoding: chunked" in scripted.requests[1]
        assert scripted.requests[1].endswith(b"a" * 10 + b"b" * 300_000 + b"c")


async def test_a_large_answer_arrives_whole_through_flow_control(client: UpstreamClient) -> None:
    megabytes = 8

    async def big(reader, writer, number, request) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (megabytes << 20))
        for _ in range(megabytes * 16):
            writer.write(b"z" * 65536)
            await writer.drain()
        return True

    async with upstream(big) as (_, url):
        origin = parse_origin(url)
        result, connection = await client.request(origin, "GET", head("GET", "/"), None)
        received = 0
        while part := await result.read():
            received += len(part)
            await asyncio.sleep(0)  # a slow reader: the client pauses reading meanwhile
        client.release(connection)
        assert received == megabytes << 20


async def test_timeouts_and_refusals(client: UpstreamClient) -> None:
    async def never(reader, writer, number, request) -> bool:
        await asyncio.sleep(3)
        return False

    async with upstream(never) as (_, url):
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout):
            await fetch(client, url)
        assert 0.4 <= asyncio.get_running_loop().time() - started < 2.5

    async def garbage(reader, writer, number, request) -> bool:
        writer.write(b"this is not HTTP\r\n\r\n")
        return True

    async with upstream(garbage) as (_, url):
        with pytest.raises(UpstreamUnreachable):
            await fetch(client, url)

    async with upstream(ok) as (_, url):
        pass  # the server is closed now: nothing listens on that port
    with pytest.raises(UpstreamUnreachable):
        await fetch(client, url)


def test_only_plain_http_origins_are_handled_here() -> None:
    origin = parse_origin("http://api.example.com:8081/base/")
    assert origin is not None
    assert (origin.host, origin.port, origin.host_header, origin.base_path) == (
        "api.example.com", 8081, b"api.example.com:8081", b"/base")
    assert parse_origin("http://[::1]/").host_header == b"[::1]"
    assert parse_origin("https://api.example.com/") is None  # TLS goes through aiohttp


# --- hardening: answers that must never be forwarded or mixed up ------------------------------------

AMBIGUOUS = {
    "content-length and transfer-encoding": b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
                                            b"3\r\nabc\r\n0\r\n\r\n",
    "two content-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
    "a coding before chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "a coding without chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc",
    "obs-fold": b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 3\r\n\r\nabc",
    "bare LF": b"HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 3\n\nabc",
    "a CR in a value": b"HTTP/1.1 200 OK\r\nx-a: 1\r2\r\ncontent-length: 3\r\n\r\nabc",
    "a status below 100": b"HTTP/1.1 099 Odd\r\ncontent-length: 3\r\n\r\nabc",
    "too many headers": b"HTTP/1.1 200 OK\r\n" + b"x-a: 1\r\n" * 300 + b"content-length: 3\r\n\r\nabc",
    "too large a head": b"HTTP/1.1 200 OK\r\n" + b"x-a: %b\r\n" % (b"v" * 70_000) + b"content-length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
async def test_ambiguous_or_oversized_answers_are_refused(client: UpstreamClient, case: str) -> None:
    async def bad(reader, writer, number, request) -> bool:
        writer.write(AMBIGUOUS[case])
        return True

    async with upstream(bad) as (_, url):
        with pytest.raises(UpstreamUnreachable):
            await fetch(client, url)


async def test_an_endless_header_line_is_refused_without_holding_it(client: UpstreamClient) -> None:
    async def endless(reader, writer, number, request) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        for _ in range(100):
            writer.write(b"v" * 4096)
            await writer.drain()
            await asyncio.sleep(0)
        await asyncio.sleep(1)
        return False

    async with upstream(endless) as (_, url):
        with pytest.raises(UpstreamUnreachable):
            await fetch(client, url)


async def test_an_answer_nobody_asked_for_is_never_handed_to_the_next_request(client: UpstreamClient) -> None:
    async def two_answers(reader, writer, number, request) -> bool:
        # A second answer right behind the first (a broken or hostile upstream): response queue poisoning.
        path = request.split(b" ", 2)[1]
        writer.write(answer(b"for " + path) + answer(b"for whoever asks next"))
        return True

    async with upstream(two_answers) as (scripted, url):
        status, headers, body = await fetch(client, url, path="/first")
        assert (status, body) == (200, b"for /first") and len(headers) == 1
        assert (await fetch(client, url, path="/second"))[2] == b"for /second"
        assert scripted.connections == 2  # the first connection was not reused

    async def late_answer(reader, writer, number, request) -> bool:
        writer.write(answer(b"for " + request.split(b" ", 2)[1]))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answer(b"for whoever asks next"))  # while the connection is idle in the pool
        return True

    async with upstream(late_answer) as (scripted, url):
        assert (await fetch(client, url, path="/first"))[2] == b"for /first"
        await asyncio.sleep(0.2)
        assert (await fetch(client, url, path="/second"))[2] == b"for /second"
        assert scripted.connections == 2


async def test_a_non_idempotent_request_is_not_retried_even_without_a_body(client: UpstreamClient) -> None:
    async def first_only(reader, writer, number, request) -> bool:
        if number > 1:
            writer.transport.abort()
            return False
        writer.write(answer(b"first"))
        return True

    async with upstream(first_only) as (scripted, url):
        assert (await fetch(client, url))[2] == b"first"
        with pytest.raises(UpstreamUnreachable):
            await fetch(client, url, "POST")  # no body, but POST: it may have been acted on
        assert scripted.connections == 1
