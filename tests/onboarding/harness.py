"""A whole program running for real: control plane, gateway and upstream over sockets, on a committed database.

The control plane runs in this process so the controllable clock (accord.core.clock)
moves it; the gateway's usage recorder is given the same clock, so first calls and
usage minutes are stamped with the time the test chose.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from accord.app import create_app
from accord.core.clock import clock
from accord.core.config import Settings
from accord.gateway.app import UVICORN_OPTIONS, GatewayApp
from accord.gateway.recorder import UsageRecorder
from accord.onboarding.sweeper import OnboardingSweeper
from tests.conftest import TEST_SECRET
from tests.gateway.harness import EchoUpstream, gateway_settings, serve


@dataclass
class Program:
    settings: Settings
    control: str  # the control plane's base URL
    gateway_url: str
    gateway: GatewayApp

    async def sweep(self) -> None:
        """One pass of the onboarding sweeper, as the worker runs it (changed partners, then the full pass)."""
        sweeper = OnboardingSweeper(self.settings)
        await sweeper.start()
        try:
            await sweeper.run_once()
        finally:
            await sweeper.close()

    async def call(self, path: str, secret: str) -> httpx.Response:
        """A call through the gateway, retried while the gateway has not seen the new key yet (≤ 1 s; its
        first snapshot after start may still be the empty program, built on its own thread)."""
        not_yet = {"/problems/application-pending", "/problems/snapshot-unavailable"}
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=10) as client:
            for _ in range(50):
                response = await client.get(path, headers={"Authorization": f"Bearer {secret}"})
                if response.status_code != 401 and response.json().get("type") not in not_yet:
                    break
                await asyncio.sleep(0.1)
        await self.gateway.recorder.flush()
        return response


@asynccontextmanager
async def running_program(database_url: str) -> AsyncIterator[tuple[Program, EchoUpstream]]:
    settings = Settings(database_url=database_url, secret_key=TEST_SECRET)
    upstream = EchoUpstream()
    async with serve(upstream) as upstream_url:
        gateway = GatewayApp(gateway_settings(database_url))
        # The recorder stamps calls with the test's clock (first calls, usage minutes).
        recorder = UsageRecorder(database_url, flush_interval=3600, clock=lambda: clock.now().timestamp())
        gateway.recorder = gateway.gateway.recorder = recorder
        async with serve(create_app(settings)) as control, serve(gateway, **UVICORN_OPTIONS) as gateway_url:
            program = Program(settings, control, gateway_url, gateway)
            program.upstream_url = upstream_url  # type: ignore[attr-defined]
            yield program, upstream


def bearer(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}
