"""The limiter's pipelined Redis client: replies matched in order, errors as redis-py names them, timeouts."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from accord.gateway.resp import RespClient, encode
from tests.gateway.test_limits import REDIS_URL, require_redis


@asynccontextmanager
async def fake_redis(answer: Callable[[list[bytes]], Awaitable[bytes | None]]) -> AsyncIterator[tuple[int, list]]:
    """A scripted server speaking RESP: `answer(command)` gives the raw reply (None: never answer)."""
    seen: list[list[bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                count = int((await reader.readline())[1:])
                command = []
                for _ in range(count):
                    size = int((await reader.readline())[1:])
                    command.append((await reader.readexactly(size + 2))[:-2])
                seen.append(command)
                reply = await answer(command)
                if reply is not None:
                    writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()


def test_commands_are_encoded_as_resp_arrays() -> None:
    assert encode(("EVALSHA", "abc", 2, b"k\r\n")) == b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n2\r\n$3\r\nk\r\n\r\n"


async def test_concurrent_calls_get_their_own_replies_over_one_connection() -> None:
    require_redis()
    client = RespClient(REDIS_URL, connect_timeout=5, timeout=5)
    prefix = f"accord:test:resp:{uuid.uuid4().hex}:"
    try:
        keys = [f"{prefix}{n}" for n in range(300)]
        assert await asyncio.gather(*(client.call("INCRBY", key, n) for n, key in enumerate(keys))) == list(range(300))
        assert await asyncio.gather(*(client.call("GET", key) for key in keys)) == [b"%d" % n for n in range(300)]
        assert await client.call("EVAL", "return {1, 'two', {3}}", 0) == [1, b"two", [3]]
        assert await client.call("GET", f"{prefix}missing") is None
        with pytest.raises(NoScriptError):
            await client.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await client.call("INCRBY", keys[0], "not a number")
        assert await client.call("GET", keys[1]) == b"1"  # the connection is still in step after errors
    finally:
        await client.call("DEL", *keys)
        await client.close()


async def test_password_and_database_come_from_the_url() -> None:
    async def ok(command: list[bytes]) -> bytes:
        return b"+OK\r\n" if command[0] in (b"AUTH", b"SELECT") else b":7\r\n"

    async with fake_redis(ok) as (port, seen):
        client = RespClient(f"redis://app:s%40cret@127.0.0.1:{port}/3")
        assert await client.call("INCR", "k") == 7
        await client.close()
    assert seen == [[b"AUTH", b"app", b"s@cret"], [b"SELECT", b"3"], [b"INCR", b"k"]]


async def test_a_late_reply_fails_every_call_in_flight_and_the_next_call_reconnects() -> None:
    calls = 0

    async def slow_then_fine(command: list[bytes]) -> bytes | None:
        nonlocal calls
        calls += 1
        return None if calls <= 2 else b":1\r\n"  # the first two are never answered

    async with fake_redis(slow_then_fine) as (port, _):
        client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(client.call("GET", "a"), client.call("GET", "b"), return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results)
        assert asyncio.get_running_loop().time() - started < 2
        assert await client.call("GET", "c") == 1  # a fresh connection, in step again
        await client.close()


async def test_error_replies_are_named_as_redis_py_names_them() -> None:
    async def read_only(command: list[bytes]) -> bytes:
        return b"-READONLY You can't write against a read only replica.\r\n"

    async with fake_redis(read_only) as (port, _):
        client = RespClient(f"redis://127.0.0.1:{port}")
        with pytest.raises(ReadOnlyError):
            await client.call("INCR", "k")
        await client.close()


async def test_unreachable_redis_raises_connection_errors() -> None:
    async with fake_redis(lambda command: asyncio.sleep(0)) as (port, _):
        pass  # closed: nothing listens there now
    client = RespClient(f"redis://127.0.0.1:{port}/0", connect_timeout=1)
    with pytest.raises(OSError):
        await client.call("PING")
    await client.close()
    with pytest.raises(ValueError):
        RespClient("http://127.0.0.1:6379")


async def test_replies_that_would_put_the_connection_out_of_step_fail_it() -> None:
    replies = iter([b"$3\r\nabcdef\r\n",  # longer than announced
                    b":1\r\n:2\r\n",  # a reply to no call
                    b"$-1\r\n", b"*-1\r\n", b"*2\r\n$1\r\na\r\n-ERR inner\r\n", b"-ERR outer\r\n",
                    b"$999999999999\r\n",  # more than Redis ever sends
                    b":5\r\n"])

    async def scripted(command: list[bytes]) -> bytes:
        return next(replies)

    async with fake_redis(scripted) as (port, _):
        client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=2)
        with pytest.raises(ConnectionError):
            await client.call("GET", "a")
        assert await client.call("GET", "b") == 1
        await asyncio.sleep(0.05)  # the ":2" that answers nothing arrives: that connection is dropped
        assert await client.call("GET", "c") is None  # on a new connection, in step: nil bulk string
        assert await client.call("GET", "d") is None  # nil array
        items = await client.call("EXEC")
        assert items[0] == b"a" and isinstance(items[1], ResponseError)
        with pytest.raises(ResponseError):
            await client.call("GET", "e")
        with pytest.raises(ConnectionError):
            await client.call("GET", "f")
        assert await client.call("GET", "g") == 5
        await client.close()
