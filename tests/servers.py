"""Running the real `accord serve` as a separate process, for tests that need committed data."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and that this test run has not handed out before.

    A test often takes several ports before it starts the servers that bind them; the
    kernel may give a port just released by one call to the next call, which would put
    two of those servers on one port.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@contextmanager
def accord_serve(database_url: str, secret_key: str, *, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `accord serve` on a free port and yield its base URL; stop it afterwards."""
    port = free_port()
    env = {**os.environ, "ACCORD_DATABASE_URL": database_url, "ACCORD_SECRET_KEY": secret_key, **(extra_env or {})}
    # Output goes to a file: a pipe nobody reads fills up and stalls the server.
    log = tempfile.NamedTemporaryFile("w+", prefix="accord-serve-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "accord.cli", "serve", "--port", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"accord serve exited early:\n{Path(log.name).read_text()[-5000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("accord serve did not start within 60 s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        Path(log.name).unlink(missing_ok=True)


@asynccontextmanager
async def serve_asgi(app: Any, **kwargs: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in the current event loop."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           **kwargs))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
