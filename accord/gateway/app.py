"""The gateway as an ASGI application: lifespan, /healthz, /metrics, and everything else proxied."""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from accord.core.config import Settings
from accord.gateway.limits import MemoryLimiter, RedisLimiter
from accord.gateway.loader import SnapshotLoader
from accord.gateway.metrics import GatewayMetrics
from accord.gateway.proxy import Gateway
from accord.gateway.recorder import UsageRecorder

log = logging.getLogger("accord.gateway")

# `accord gateway` serves the app with its own server (accord.gateway.server); any ASGI server will do.
# How uvicorn must run the gateway: the fast parser, and no header rewriting of its own — the
# client address is the socket's (X-Forwarded-For is appended to, never trusted) and Date/Server
# come from the upstream, not twice.
UVICORN_OPTIONS = {"http": "httptools", "proxy_headers": False, "date_header": False, "server_header": False}

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


class GatewayApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loader = SnapshotLoader(settings.database_url, settings.secret_key,
                                     poll_interval=settings.gateway_poll_interval)
        if settings.gateway_redis_url:
            self.limiter: Any = RedisLimiter(settings.gateway_redis_url,
                                             on_unavailable=settings.gateway_limits_on_redis_down)
        else:
            self.limiter = MemoryLimiter()
        self.recorder = UsageRecorder(settings.database_url, flush_interval=settings.gateway_flush_interval)
        self.metrics = GatewayMetrics()
        self.gateway = Gateway(server_key=settings.secret_key, snapshots=self.loader, limiter=self.limiter,
                               recorder=self.recorder, metrics=self.metrics,
                               upstream_timeout=settings.gateway_upstream_timeout,
                               own_paths=frozenset({HEALTH_PATH, METRICS_PATH}))
        # accord.gateway.server's way in for a request without a body: the gateway's own (compiled)
        # method, with no Python frame of ours around it on every request.
        self.direct = self.gateway.direct

    async def startup(self) -> None:
        await self.loader.start()
        await self.recorder.start()
        await self.gateway.start()

    async def shutdown(self) -> None:
        await self.gateway.close()
        await self.recorder.close()  # the final flush
        await self.loader.close()
        if isinstance(self.limiter, RedisLimiter):
            await self.limiter.close()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == HEALTH_PATH:
                return await self._health(send)
            if path == METRICS_PATH:
                return await self._metrics(send)
            return await self.gateway.handle(scope, receive, send)
        if kind == "lifespan":
            return await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, send: Any) -> None:
        snapshot = self.loader.current
        ok = snapshot.version > 0 or bool(snapshot.apis_by_prefix)
        body = json.dumps({"status": "ok" if ok else "starting", "snapshot_version": snapshot.version,
                           "snapshot_age_seconds": round(time.time() - snapshot.built_at, 3) if ok else None,
                           "database": "ok" if self.loader.database_ok else "unreachable"}).encode()
        await _send(send, 200 if ok else 503, body, b"application/json")

    async def _metrics(self, send: Any) -> None:
        snapshot = self.loader.current
        body = self.metrics.render({
            "accord_gateway_flush_lag_seconds": self.recorder.flush_lag_seconds,
            "accord_gateway_snapshot_version": snapshot.version,
            "accord_gateway_snapshot_age_seconds": time.time() - snapshot.built_at if snapshot.built_at else 0.0,
            "accord_gateway_limiter_unavailable_total": getattr(self.limiter, "unavailable_total", 0),
        })
        await _send(send, 200, body, b"text/plain; version=0.0.4; charset=utf-8")


async def _send(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def server_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of accord.gateway.server's `serve` (and `run`) that settings give."""
    return {"keepalive_timeout": settings.gateway_keepalive_timeout,
            "header_timeout": settings.gateway_header_timeout,
            "stall_timeout": settings.gateway_stall_timeout,
            "max_url": settings.gateway_max_url_bytes,
            "max_head": settings.gateway_max_head_bytes,
            "max_headers": settings.gateway_max_headers}


def create_gateway_app() -> GatewayApp:
    """Factory for `uvicorn --factory` (one per worker process); settings come from ACCORD_* variables."""
    return GatewayApp(Settings())
