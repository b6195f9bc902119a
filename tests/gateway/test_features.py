"""Credential locations, sandbox mocks, per-end-user limits, usage recording and /metrics through a live gateway."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from accord.apps.models import ApplicationSubscription, Credential, CredentialKind, Environment
from accord.catalog.models import Api, CredentialLocation, Metric
from accord.core.db import create_engine, session_factory
from accord.gateway.app import GatewayApp
from accord.plans.models import Period
from accord.usage.models import FirstCall, UsageCount
from tests.gateway.harness import EchoUpstream, Running, committed, gateway_settings, serve, serve_gateway

PETS = {
    "openapi": "3.0.3", "info": {"title": "Pets", "version": "1"},
    "paths": {"/pets/{id}": {"get": {"responses": {"200": {"description": "a pet", "content": {
        "application/json": {"example": {"id": 1, "name": "Rex"}}}}}}}},
}


async def _seed(f, session, upstream: str) -> dict[str, Any]:
    data: dict[str, Any] = {"keys": {}}

    async def api_with_app(slug: str, location: CredentialLocation, name: str = "", *, env=Environment.production,
                           limits=(), kind=CredentialKind.api_key, **api_kw: Any):
        api = await f.api(slug=slug, path_prefix=f"/{slug}", production_upstream_url=upstream,
                          credential_location=location, credential_name=name, **api_kw)
        hits = await session.scalar(select(Metric).where(Metric.api_id == api.id, Metric.system_name == "hits"))
        await f.rule(api, hits, "ANY", "/")
        plan = await f.plan(await f.product(api), limits=[(hits, period, value) for period, value in limits])
        partner = await f.partner()
        subscription = await f.subscription(partner, plan)
        app = await f.application(partner, env)
        session.add(ApplicationSubscription(application_id=app.id, subscription_id=subscription.id))
        _, secret = await f.credential(app, kind=kind)
        data["keys"][slug] = secret
        data[f"{slug}_app"] = app
        return api

    await api_with_app("header", CredentialLocation.header, "X-Partner-Key")
    await api_with_app("query", CredentialLocation.query, "key")
    await api_with_app("appkey", CredentialLocation.app_id_key, kind=CredentialKind.app_key)
    await api_with_app("mocked", CredentialLocation.authorization, env=Environment.sandbox, openapi=PETS,
                       sandbox_upstream_url=None)
    await api_with_app("peruser", CredentialLocation.authorization, limits=[(Period.day, 2)],
                       end_user_header="X-End-User")
    await api_with_app("twolimits", CredentialLocation.authorization, limits=[(Period.day, 4), (Period.month, 8)])
    data["appkey_public_id"] = data.pop("appkey_app").app_id
    data["peruser_app_id"] = data.pop("peruser_app").id
    for key in [k for k in data if k.endswith("_app")]:
        data.pop(key)
    return data


@pytest.fixture
async def running(fresh_database_url: str):
    upstream = EchoUpstream()
    async with serve(upstream) as upstream_url:
        data = await committed(fresh_database_url, lambda f, s: _seed(f, s, upstream_url))
        app = GatewayApp(gateway_settings(fresh_database_url))
        async with serve_gateway(app) as url:
            yield Running(url, app, upstream, fresh_database_url, data)


async def test_credential_locations(running: Running) -> None:
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        by_header = await c.get("/header/a", headers={"X-Partner-Key": keys["header"]})
        assert by_header.status_code == 200 and "x-partner-key" not in by_header.json()["headers"]
        # HEAD: the upstream's headers and no body, the connections reusable after it.
        head = await c.head("/header/a", headers={"X-Partner-Key": keys["header"]})
        assert head.status_code == 200 and head.content == b"" and head.headers["x-upstream"] == "echo"
        posted = await c.post("/header/a", headers={"X-Partner-Key": keys["header"]}, content=b"x" * 70_000)
        assert posted.status_code == 200 and posted.json()["body_bytes"] == 70_000
        assert (await c.get("/header/a", headers={"Authorization": f"Bearer {keys['header']}"})).status_code == 401
        by_query = await c.get("/query/a", params={"q": "1", "key": keys["query"], "z": "a b"})
        assert by_query.status_code == 200 and by_query.json()["query"] == "q=1&z=a+b"  # the key is not forwarded
        app_key = await c.get("/appkey/a", headers={"X-App-Id": running.data["appkey_public_id"],
                                                    "X-App-Key": keys["appkey"]})
        assert app_key.status_code == 200
        wrong_app = await c.get("/appkey/a", headers={"X-App-Id": "someone-else", "X-App-Key": keys["appkey"]})
        assert wrong_app.status_code == 401


async def test_sandbox_without_upstream_answers_from_openapi_examples(running: Running) -> None:
    key = running.data["keys"]["mocked"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        pet = await c.get("/sandbox/mocked/pets/42", headers={"Authorization": f"Bearer {key}"})
        assert pet.status_code == 200 and pet.json() == {"id": 1, "name": "Rex"}
        assert pet.headers["x-accord-mock"] == "true"
        none = await c.get("/sandbox/mocked/owners", headers={"Authorization": f"Bearer {key}"})
        assert none.status_code == 502 and none.json()["type"] == "/problems/no-upstream"


async def test_limits_count_per_end_user_when_the_api_names_the_header(running: Running) -> None:
    headers = {"Authorization": f"Bearer {running.data['keys']['peruser']}"}
    async with httpx.AsyncClient(base_url=running.url) as c:
        for user in ("ann", "bob"):
            statuses = [(await c.get("/peruser/x", headers={**headers, "X-End-User": user})).status_code
                        for _ in range(3)]
            assert statuses == [200, 200, 429], user


async def test_usage_first_calls_and_metrics_are_recorded(running: Running) -> None:
    keys = running.data["keys"]
    async with httpx.AsyncClient(base_url=running.url) as c:
        for _ in range(3):
            assert (await c.get("/peruser/x", headers={"Authorization": f"Bearer {keys['peruser']}"})).status_code \
                in (200, 429)
        await c.get("/peruser/x", headers={"Authorization": "Bearer acc_live_nope"})
        metrics = (await c.get("/metrics")).text
    assert 'accord_gateway_denials_total{reason="credential-unknown"} 1' in metrics
    assert "accord_gateway_snapshot_version" in metrics
    await running.app.recorder.flush()
    engine = create_engine(running.database_url)
    try:
        async with session_factory(engine)() as session:
            admitted = await session.scalar(select(func.sum(UsageCount.count)).where(
                UsageCount.metric_id.is_(None), UsageCount.denial == "",
                UsageCount.application_id == running.data["peruser_app_id"]))
            limited = await session.scalar(select(func.sum(UsageCount.count)).where(
                UsageCount.metric_id.is_(None), UsageCount.denial == "limit-reached"))
            unknown = await session.scalar(select(func.sum(UsageCount.count)).where(
                UsageCount.denial == "credential-unknown", UsageCount.application_id.is_(None)))
            first = await session.get(FirstCall, running.data["peruser_app_id"])
            used = await session.scalar(select(func.count()).select_from(Credential).where(
                Credential.last_used_at.is_not(None)))
    finally:
        await engine.dispose()
    assert (admitted, limited, unknown) == (2, 1, 1)
    assert first is not None and first.environment == "production"
    assert used >= 1


async def test_first_calls_and_limit_thresholds_become_events(running: Running) -> None:
    from accord.events.models import Event

    headers = {"Authorization": f"Bearer {running.data['keys']['peruser']}", "X-End-User": "cat"}
    async with httpx.AsyncClient(base_url=running.url) as c:
        assert [(await c.get("/peruser/x", headers=headers)).status_code for _ in range(3)] == [200, 200, 429]
    await running.app.recorder.flush()
    engine = create_engine(running.database_url)
    try:
        async with session_factory(engine)() as session:
            events = (await session.scalars(select(Event).order_by(Event.seq))).all()
    finally:
        await engine.dispose()
    assert [e.type for e in events] == ["usage.first_call.production", "usage.limit_threshold",
                                        "usage.limit_threshold"]
    assert [e.data["object"]["percent"] for e in events[1:]] == [50, 100]
    assert events[0].data["object"]["application_id"] == str(running.data["peruser_app_id"])


async def test_every_limit_reports_its_own_thresholds(running: Running) -> None:
    from accord.events.models import Event

    headers = {"Authorization": f"Bearer {running.data['keys']['twolimits']}"}
    async with httpx.AsyncClient(base_url=running.url) as c:
        assert [(await c.get("/twolimits/x", headers=headers)).status_code for _ in range(5)] == [200] * 4 + [429]
    await running.app.recorder.flush()
    engine = create_engine(running.database_url)
    try:
        async with session_factory(engine)() as session:
            events = (await session.scalars(select(Event).where(Event.type == "usage.limit_threshold")
                                            .order_by(Event.seq))).all()
    finally:
        await engine.dispose()
    crossed = [(e.data["object"]["period"], e.data["object"]["percent"]) for e in events]
    # day (4): call 2 → 50 %, call 4 → 100 % (it also crosses 80 and 90: the highest is reported);
    # month (8): call 4 → 50 %. The refused fifth call consumes nothing and crosses nothing.
    assert crossed == [("day", 50), ("day", 100), ("month", 50)], crossed
