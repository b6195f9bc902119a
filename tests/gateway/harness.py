"""Gateway test harness: a real upstream, a real gateway and a committed program, all over sockets."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


from accord.core.config import Settings
from accord.core.db import create_engine, session_factory
from accord.gateway.app import GatewayApp
from tests.conftest import TEST_SECRET
from tests.servers import serve_asgi


class EchoUpstream:
    """Answers with what it received; `/slow` waits, `/big?mb=N` streams N MiB."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the request never came whole: not recorded
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        record = {"method": scope["method"], "path": scope["path"], "raw_path": scope["raw_path"].decode(),
                  "query": scope["query_string"].decode(),
                  "headers": headers, "header_names": [k.decode() for k, _ in scope["headers"]], "body_bytes": size}
        self.seen.append(record)
        if scope["path"].endswith("/slow"):
            await asyncio.sleep(3)
        if scope["path"].endswith("/big"):
            megabytes = int(dict(p.split("=") for p in record["query"].split("&") if p).get("mb", "1"))
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
            chunk = b"x" * 65536
            for _ in range(megabytes * 16):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps(record).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"x-upstream", b"echo")]})
        await send({"type": "http.response.body", "body": body})


serve = serve_asgi  # the shared helper, under the name these tests use


@dataclass
class Running:
    url: str
    app: GatewayApp
    upstream: EchoUpstream
    database_url: str
    data: dict[str, Any] = field(default_factory=dict)


def gateway_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "secret_key": TEST_SECRET, "gateway_poll_interval": 0.1,
                              "gateway_flush_interval": 0.2, "gateway_upstream_timeout": 1.0}
    values.update(overrides)
    return Settings(**values)


async def committed(database_url: str, build: Any) -> Any:
    """Run `build(factory, session)` on the database and commit it for the gateway to see."""
    from tests.factories import Factory

    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            result = await build(Factory(session, TEST_SECRET), session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


@asynccontextmanager
async def serve_gateway(app: Any) -> AsyncIterator[str]:
    """Serve the gateway as `accord gateway` does (accord.gateway.server) on a free port in this event loop."""
    from accord.gateway.server import bind, serve as serve_http

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_http(app, sock, stop=stop, started=started.set, shutdown_timeout=5))
    while not started.is_set():
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await task
        sock.close()
