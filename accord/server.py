"""Running Accord's servers in one event loop: the control plane and, in the demo, its upstream."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import uvicorn

from accord.core.config import Settings

log = logging.getLogger("accord.server")


async def run_servers(settings: Settings, *, demo_upstream_port: int | None = None, with_gateway: bool = False,
                      banner: Callable[[], None] | None = None, with_worker: bool = True) -> None:
    """Serve until interrupted; with `with_worker`, the background worker (accord.worker) runs alongside."""
    from accord.app import create_app

    servers = [uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                             log_level="info", access_log=True))]
    if demo_upstream_port is not None:
        from accord.demo.upstream import DemoUpstream

        servers.append(uvicorn.Server(uvicorn.Config(DemoUpstream(), host="127.0.0.1", port=demo_upstream_port,
                                                     log_level="warning", access_log=False)))
    ports = [settings.port] + ([settings.gateway_port] if with_gateway else []) + (
        [demo_upstream_port] if demo_upstream_port else [])
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    gateway_stop = asyncio.Event()
    if with_gateway:
        # The gateway runs on its own small HTTP server (accord.gateway.server), as `accord gateway` does.
        from accord.gateway.app import GatewayApp, server_options
        from accord.gateway.server import bind, serve

        try:
            sock = bind(settings.gateway_host, settings.gateway_port)
        except OSError as exc:
            for s in servers:
                s.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            raise SystemExit(f"could not start: is one of the ports {ports} already in use?") from exc
        gateway_started = asyncio.Event()
        tasks.append(asyncio.create_task(serve(GatewayApp(settings), sock, stop=gateway_stop,
                                               started=gateway_started.set, **server_options(settings))))
    while not all(s.started for s in servers) or (with_gateway and not gateway_started.is_set()):
        for task in tasks:
            if task.done():
                # A server that could not start (port taken): stop the others and say why.
                for s in servers:
                    s.should_exit = True
                gateway_stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise SystemExit(f"could not start: is one of the ports {ports} already in use?")
        await asyncio.sleep(0.05)
    worker_stop = asyncio.Event()
    worker = asyncio.create_task(_run_worker(settings, worker_stop)) if with_worker else None
    if banner:
        banner()
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    gateway_stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if worker is not None:
        # The servers stopped (Ctrl+C, SIGTERM): the worker finishes its attempts in flight, then stops.
        worker_stop.set()
        await asyncio.gather(worker, return_exceptions=True)


async def _run_worker(settings: Settings, stop: asyncio.Event) -> None:
    from accord.worker import run_worker

    try:
        await run_worker(settings, stop)
    except Exception:
        log.exception("the background worker stopped; the servers go on without it")
