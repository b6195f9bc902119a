"""Real `accord serve` and `accord worker` processes, for the tests that kill and restart them."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET
from tests.servers import free_port

# Short timeouts and leases so that a killed worker's deliveries are taken over within seconds.
WORKER_ENV = {"ACCORD_WEBHOOKS_ALLOW_HTTP": "true", "ACCORD_WEBHOOKS_ALLOW_PRIVATE": "true",
              "ACCORD_WEBHOOKS_TIMEOUT": "2", "ACCORD_WEBHOOKS_CONNECT_TIMEOUT": "1",
              "ACCORD_WEBHOOKS_LEASE_MARGIN": "2", "ACCORD_WEBHOOKS_POLL_INTERVAL": "0.05"}


class AccordProcess:
    """`python -m accord.cli <args>` with the test database, its output in a log file."""

    def __init__(self, database_url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, "ACCORD_DATABASE_URL": database_url, "ACCORD_SECRET_KEY": TEST_SECRET,
                    **WORKER_ENV, **(env or {})}
        self.log = tempfile.NamedTemporaryFile("w+", prefix="accord-webhooks-", suffix=".log", delete=False)
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> AccordProcess:
        self.process = subprocess.Popen([sys.executable, "-m", "accord.cli", *self.args], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT, text=True)
        return self

    def output(self) -> str:
        return Path(self.log.name).read_text()[-5000:]

    def kill(self) -> None:
        """SIGKILL: no cleanup, no draining, exactly like a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    async def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, then wait for the process to drain and exit; its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"{self.args[0]} did not stop within {timeout} s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def worker(database_url: str, **env: str) -> AccordProcess:
    return AccordProcess(database_url, "worker", env=env).start()


async def serve_without_worker(database_url: str) -> tuple[AccordProcess, str]:
    """`accord serve --no-worker` on a free port, once it answers."""
    port = free_port()
    process = AccordProcess(database_url, "serve", "--no-worker", "--port", str(port)).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while True:
            assert process.process is not None
            if process.process.poll() is not None:
                raise AssertionError(f"accord serve exited early:\n{process.output()}")
            try:
                if (await client.get(f"{base}/healthz", timeout=1)).status_code == 200:
                    return process, base
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                process.close()
                raise AssertionError("accord serve did not start within 60 s")
            await asyncio.sleep(0.1)


async def wait_for(condition, timeout: float, what: str, interval: float = 0.1) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
