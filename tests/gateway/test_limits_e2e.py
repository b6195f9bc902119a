"""Limits as a partner meets them, through the running gateway over real sockets."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import redis

from accord.auth.actor import CLI_ACTOR
from accord.demo.upstream import DemoUpstream
from accord.gateway.app import GatewayApp
from accord.gateway.limits import MemoryLimiter
from accord.plans.models import Period
from accord.program.apply import apply_program
from accord.program.document import load_document
from accord.demo.setup import PROGRAM
from tests.conftest import TEST_SECRET
from tests.gateway.harness import EchoUpstream, committed, gateway_settings, serve, serve_gateway
from tests.gateway.test_limits import REDIS_URL, require_redis
from tests.servers import free_port


async def test_the_demo_trial_plan_allows_100_gets_a_month_and_no_post(fresh_database_url: str,
                                                                       monkeypatch) -> None:
    async with serve(DemoUpstream()) as upstream_url:
        monkeypatch.setenv("ACCORD_DEMO_UPSTREAM", upstream_url)

        async def apply(f, session):
            return await apply_program(session, gateway_settings(fresh_database_url), load_document(PROGRAM),
                                       actor=CLI_ACTOR)

        result = await committed(fresh_database_url, apply)
        dana = next(s.secret for s in result.secrets if s.partner == "dana-dev")
        gateway = GatewayApp(gateway_settings(fresh_database_url))
        async with serve_gateway(gateway) as url:
            headers = {"Authorization": f"Bearer {dana}"}
            async with httpx.AsyncClient(base_url=url) as c:
                first = await c.get("/sandbox/social/users", headers=headers)
                assert first.status_code == 200, first.text
                assert first.json()["items"][0]["handle"] == "ada"
                assert first.headers["ratelimit-policy"].startswith('"hits-month";q=100;w=')
                assert first.headers["ratelimit"].startswith('"hits-month";r=99;t=')
                for _ in range(99):
                    assert (await c.get("/sandbox/social/posts", headers=headers)).status_code == 200
                over = await c.get("/sandbox/social/users", headers=headers)
                assert over.status_code == 429
                assert over.json()["type"] == "/problems/limit-reached"
                assert int(over.headers["retry-after"]) > 0
                assert over.headers["ratelimit"].startswith('"hits-month";r=0;t=')
                post = await c.post("/sandbox/social/posts", headers=headers, json={"text": "hi"})
                assert post.status_code == 403 and post.json()["type"] == "/problems/http-method-disabled"
                production = await c.get("/social/users", headers=headers)
                assert production.status_code == 403 and production.json()["type"] == "/problems/wrong-environment"


async def _limited_program(f, session, upstream: str, limit: int, period: Period):
    from sqlalchemy import select

    from accord.apps.models import ApplicationSubscription, Environment
    from accord.catalog.models import Metric

    api = await f.api(slug="limited", path_prefix="/limited", production_upstream_url=upstream)
    hits = await session.scalar(select(Metric).where(Metric.api_id == api.id, Metric.system_name == "hits"))
    await f.rule(api, hits, "ANY", "/")
    product = await f.product(api)
    plan = await f.plan(product, limits=[(hits, period, limit)])
    partner = await f.partner()
    subscription = await f.subscription(partner, plan)
    app = await f.application(partner, Environment.production)
    session.add(ApplicationSubscription(application_id=app.id, subscription_id=subscription.id))
    _, secret = await f.credential(app)
    return str(app.id), secret


async def test_a_month_limit_resets_at_the_calendar_boundary(fresh_database_url: str) -> None:
    now = [datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp()]  # a leap day, the month's last second
    async with serve(EchoUpstream()) as upstream_url:
        _, secret = await committed(fresh_database_url,
                                    lambda f, s: _limited_program(f, s, upstream_url, 2, Period.month))
        gateway = GatewayApp(gateway_settings(fresh_database_url))
        gateway.limiter = gateway.gateway.limiter = MemoryLimiter(clock=lambda: now[0])
        async with serve_gateway(gateway) as url:
            headers = {"Authorization": f"Bearer {secret}"}
            async with httpx.AsyncClient(base_url=url) as c:
                assert [(await c.get("/limited/x", headers=headers)).status_code for _ in range(3)] == [200, 200, 429]
                denied = await c.get("/limited/x", headers=headers)
                assert denied.headers["retry-after"] == "1"
                now[0] = datetime(2028, 3, 1, tzinfo=UTC).timestamp()
                assert (await c.get("/limited/x", headers=headers)).status_code == 200


def test_two_gateway_processes_sharing_redis_admit_exactly_the_limit(fresh_database_url: str) -> None:
    require_redis()
    limit, requests = 60, 240
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "uvicorn", "accord.demo.upstream:DemoUpstream", "--factory",
                                 "--port", str(upstream_port), "--log-level", "warning"])
    app_id, secret = asyncio.run(committed(
        fresh_database_url,
        lambda f, s: _limited_program(f, s, f"http://127.0.0.1:{upstream_port}/social", limit, Period.eternity)))
    env = {**os.environ, "ACCORD_DATABASE_URL": fresh_database_url, "ACCORD_SECRET_KEY": TEST_SECRET,
           "ACCORD_GATEWAY_REDIS_URL": REDIS_URL}
    ports = [free_port(), free_port()]
    gateways = [subprocess.Popen([sys.executable, "-m", "accord.cli", "gateway", "--port", str(port)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    try:
        for port in [*ports, upstream_port]:
            _wait_for(f"http://127.0.0.1:{port}/healthz" if port != upstream_port
                      else f"http://127.0.0.1:{port}/social/users")

        async def hammer() -> list[int]:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
                calls = [client.get(f"http://127.0.0.1:{ports[i % 2]}/limited/users",
                                    headers={"Authorization": f"Bearer {secret}"}) for i in range(requests)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        statuses = asyncio.run(hammer())
        assert [g.poll() for g in gateways] == [None, None], "a gateway process stopped"
        fallbacks = [_metric(f"http://127.0.0.1:{port}/metrics", "accord_gateway_limiter_unavailable_total")
                     for port in ports]
        assert fallbacks == [0, 0], "a gateway fell back to per-process limits (Redis too slow?)"
        assert statuses.count(200) == limit, statuses
        assert statuses.count(429) == requests - limit
    finally:
        for process in [*gateways, upstream]:
            process.terminate()
            process.wait(timeout=20)
        with redis.Redis.from_url(REDIS_URL) as client:
            for key in client.scan_iter(match=f"*{app_id}*"):
                client.delete(key)


def _metric(url: str, name: str) -> float:
    page = httpx.get(url)
    for line in page.text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {url} ({page.status_code}): {page.text[:500]!r}")


def _wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.1)
