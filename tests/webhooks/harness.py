"""Webhook test harness: a real receiver on loopback, the real app on a committed database, the dispatcher.

`Receiver` is an aiohttp server that records every request; it can be stopped and
started again on the same port (an endpoint that goes down and comes back). Its paths:

- `/hook…` answers `status` (200 by default) after `delay` seconds, with `body`;
- `/endless` answers 200 and streams forever (the response size cap);
- `/slow` waits 30 s before answering (the timeout);
- `/redirect` answers 302 to `/redirected`.
"""
from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from accord.app import create_app
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory
from accord.webhooks.dispatcher import WebhookDispatcher
from tests.conftest import TEST_SECRET
from tests.factories import Factory
from tests.servers import serve_asgi


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: datetime  # wall-clock time of arrival

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int = 0
    status: int = 200
    delay: float = 0.0
    body: bytes = b"ok"
    requests: list[Received] = field(default_factory=list)
    answering: int = 0  # requests received and not yet answered
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/endless", self._endless)
        app.router.add_route("POST", "/slow", self._slow)
        app.router.add_route("POST", "/redirect", self._redirect)
        app.router.add_route("*", "/{tail:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def ids(self, path: str | None = None) -> Counter[str]:
        return Counter(r.webhook_id for r in self.requests if path is None or r.path == path)

    async def _record(self, request: web.Request) -> Received:
        received = Received(request.path, {k.lower(): v for k, v in request.headers.items()}, await request.read(),
                            datetime.now(UTC))
        self.requests.append(received)
        return received

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        self.answering += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.Response(status=self.status, body=self.body)
        finally:
            self.answering -= 1

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:
                await response.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        raise web.HTTPFound(location="/redirected")


def webhook_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "secret_key": TEST_SECRET, "webhooks_allow_http": True,
                              "webhooks_allow_private": True, "webhooks_timeout": 5.0,
                              "webhooks_connect_timeout": 2.0, "webhooks_poll_interval": 0.05}
    values.update(overrides)
    return Settings(**values)


serve = serve_asgi  # the shared helper, under the name these tests use


async def committed(engine: AsyncEngine, build: Any) -> Any:
    """Run `build(factory)` and commit, for the app and the dispatcher to see."""
    async with session_factory(engine)() as session:
        result = await build(Factory(session, TEST_SECRET))
        await session.commit()
        return result


@dataclass
class Live:
    settings: Settings
    engine: AsyncEngine
    base_url: str
    admin: httpx.AsyncClient
    dispatcher: WebhookDispatcher

    def client(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})

    async def dispatch(self, dispatcher: WebhookDispatcher | None = None, max_passes: int = 100) -> int:
        """Run passes until one finds nothing to do; the total work done."""
        dispatcher = dispatcher or self.dispatcher
        total = 0
        for _ in range(max_passes):
            worked = await dispatcher.run_once()
            if not worked:
                return total
            total += worked
        raise AssertionError(f"the dispatcher still had work after {max_passes} passes")

    async def endpoint(self, url: str, **body: Any) -> dict[str, Any]:
        response = await self.admin.post("/admin/api/webhooks/endpoints", json={"url": url, **body})
        assert response.status_code == 201, response.text
        return response.json()

    async def member_token(self, partner_id: str, role: str = "partner-admin") -> str:
        """A committed member of the partner with `role`; their session token."""
        from accord.partners.models import Partner

        async def build(factory: Factory) -> str:
            partner = await factory.session.get(Partner, uuid.UUID(partner_id))
            return (await factory.member(partner, role))[1]

        return await committed(self.engine, build)

    async def partner(self, slug: str) -> dict[str, Any]:
        response = await self.admin.post("/admin/api/partners", json={"name": slug.title(), "slug": slug,
                                                                      "type": "technology"})
        assert response.status_code == 201, response.text
        return response.json()


@asynccontextmanager
async def live(database_url: str, **overrides: Any) -> AsyncIterator[Live]:
    """The control plane on `database_url` over real HTTP, an owner token, and a started dispatcher."""
    settings = webhook_settings(database_url, **overrides)
    engine = create_engine(database_url)
    try:
        token = await committed(engine, lambda f: f.admin_token())
        async with serve(create_app(settings, engine)) as base_url, httpx.AsyncClient(
                base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as admin:
            dispatcher = WebhookDispatcher(settings, engine=engine)
            await dispatcher.start()
            try:
                yield Live(settings, engine, base_url, admin, dispatcher)
            finally:
                await dispatcher.close()
    finally:
        await engine.dispose()


def signed_by(secret: str, request: Received) -> bool:
    """Whether one of the request's signatures is `secret`'s, whatever the clock says (frozen-time tests)."""
    moment = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(request.webhook_id, moment, request.body.decode())
    return expected in request.headers["webhook-signature"].split(" ")


def resolves_to_non_public(host: str) -> bool:
    from accord.webhooks.safety import refusal_reason

    try:
        infos = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(refusal_reason(info[4][0]) for info in infos)
