"""End to end: what the gateway's recorder commits is what the usage API reports."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from accord.app import create_app
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory
from accord.gateway.recorder import UsageRecorder
from tests.conftest import TEST_SECRET
from tests.factories import Factory

T0 = 1_740_823_200.0  # 2025-03-01T10:00:00Z


@asynccontextmanager
async def control_plane(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under uvicorn on the test's own database, with an owner token."""
    engine = create_engine(database_url)
    async with session_factory(engine)() as session:
        token = await Factory(session, TEST_SECRET).admin_token()
        await session.commit()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(database_url=database_url, secret_key=TEST_SECRET),
                                                      engine), host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        await engine.dispose()


async def test_recorded_traffic_is_reported(fresh_database_url: str) -> None:
    now = [T0]
    recorder = UsageRecorder(fresh_database_url, flush_interval=3600, clock=lambda: now[0])
    await recorder.start()
    partner, app, api, hits = (str(uuid.uuid4()) for _ in range(4))
    call = dict(application_id=app, partner_id=partner, api_id=api, environment="production")
    for second in (5, 65, 3605):  # two minutes of the first hour, one of the next
        now[0] = T0 + second
        recorder.record(**call, metrics=[(hits, 2)], status=200, denial=None, latency=0.01)
    await recorder.flush()  # two flushes into the same rows add up
    now[0] = T0 + 3606
    recorder.record(**call, metrics=[(hits, 2)], status=429, denial="limit-reached", latency=0.001)
    recorder.record(application_id=None, partner_id=None, api_id=api, environment="production", metrics=(),
                    status=401, denial="credential-missing", latency=0.001)
    await recorder.close()

    async with control_plane(fresh_database_url) as admin:
        hourly = (await admin.get("/admin/api/usage", params={"granularity": "hour", "metric": hits})).json()
        assert [(b["start"][:13], b["count"], b["denied"], b["units"]) for b in hourly["items"]] == [
            ("2025-03-01T10", 2, 0, 4), ("2025-03-01T11", 2, 1, 2)]
        daily = (await admin.get("/admin/api/usage", params={"group_by": "application"})).json()
        assert {(b["application_id"], b["count"]) for b in daily["items"]} == {(app, 4), (None, 1)}
        denials = (await admin.get("/admin/api/usage/denials")).json()
        assert denials["by_reason"] == [{"reason": "credential-missing", "count": 1},
                                        {"reason": "limit-reached", "count": 1}]
        first = (await admin.get("/admin/api/usage/first-calls")).json()
        assert [(i["application_id"], i["at"][:19]) for i in first["items"]] == [(app, "2025-03-01T10:00:05")]
