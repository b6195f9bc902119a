"""Running Accord's servers in one event loop: the control plane and, in the demo, its upstream."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import uvicorn

from accord.core.config import Settings

log = logging.getLogger("accord.server")


async def run_servers(settings: Settings, *, demo_upstream_port: int | None = None, with_gateway: bool = False,
                      banner: Callable[[], None] | None = None) -> None:
    from accord.app import create_app

    servers = [uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                             log_level="info", access_log=True))]
    if with_gateway:
        from accord.gateway.app import GatewayApp

        servers.append(uvicorn.Server(uvicorn.Config(GatewayApp(settings), host=settings.gateway_host,
                                                     port=settings.gateway_port, http="httptools", proxy_headers=False,
                                                     log_level="warning", access_log=False)))
    if demo_upstream_port is not None:
        from accord.demo.upstream import DemoUpstream

        servers.append(uvicorn.Server(uvicorn.Config(DemoUpstream(), host="127.0.0.1", port=demo_upstream_port,
                                                     log_level="warning", access_log=False)))
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        for task in tasks:
            if task.done():
                # A server that could not start (port taken): stop the others and say why.
                for s in servers:
                    s.should_exit = True
                await asyncio.gather(*tasks, return_exceptions=True)
                ports = [settings.port] + ([settings.gateway_port] if with_gateway else []) + (
                    [demo_upstream_port] if demo_upstream_port else [])
                raise SystemExit(f"could not start: is one of the ports {ports} already in use?")
        await asyncio.sleep(0.05)
    if banner:
        banner()
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
