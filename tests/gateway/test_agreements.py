"""Issue 5, done means: a material agreement version, its grace period, and the gateway's agreement gate.

A partner with a live production application calls through a real gateway. A second,
material version of the product's agreement is published with a grace period; calls pass
until the deadline, production calls are refused after it with the agreement named while
sandbox calls keep working, and the partner's acceptance over the partner API lets
production calls through again within a second. The core clock (control plane) and the
proxy's clock are the same controllable clock.
"""
from __future__ import annotations

import asyncio
import uuid
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from accord.agreements.models import AcceptanceSource, Agreement, AgreementAcceptance, AgreementVersion
from accord.app import create_app
from accord.apps.models import ApplicationSubscription, Environment
from accord.catalog.models import Metric
from accord.core.clock import clock
from accord.core.config import Settings
from accord.gateway.app import UVICORN_OPTIONS, GatewayApp
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD
from tests.gateway.harness import EchoUpstream, committed, gateway_settings, serve

GRACE_DAYS = 5


async def _seed(f: Any, session: Any, upstream: str) -> dict[str, Any]:
    api = await f.api(slug="maps", path_prefix="/maps", production_upstream_url=upstream + "/prod",
                      sandbox_upstream_url=upstream + "/sbx")
    hits = await session.scalar(select(Metric).where(Metric.api_id == api.id, Metric.system_name == "hits"))
    await f.rule(api, hits, "ANY", "/")
    product = await f.product(api, slug="maps", visibility="partner")
    plan = await f.plan(product)
    partner = await f.partner(name="Acme Logistics")
    user = await f.user("owner@acme.example")
    await f.member(partner, user=user)
    subscription = await f.subscription(partner, plan)
    keys = {}
    for environment in (Environment.production, Environment.sandbox):
        app = await f.application(partner, environment)
        session.add(ApplicationSubscription(application_id=app.id, subscription_id=subscription.id))
        _, keys[environment.value] = await f.credential(app)
    return {"admin_token": await f.admin_token(), "keys": keys, "partner_id": str(partner.id),
            "product_id": str(product.id), "email": user.email}


async def _accepted_version_1(f: Any, session: Any, data: dict[str, Any]) -> None:
    """Before the test: the agreement's version 1 is published and the partner signed it (imported)."""
    agreement = Agreement(slug="maps-terms", title="Maps Terms of Service")
    session.add(agreement)
    await session.flush()
    first = AgreementVersion(agreement_id=agreement.id, number=1, body="# Maps terms\n\nBe nice.", material=True,
                             grace_days=30, published_at=clock.now() - timedelta(days=400))
    session.add(first)
    await session.flush()
    session.add(AgreementAcceptance(agreement_id=agreement.id, version_id=first.id,
                                    partner_id=uuid.UUID(data["partner_id"]),
                                    accepted_at=clock.now() - timedelta(days=399), source=AcceptanceSource.imported))
    data["agreement_id"] = str(agreement.id)


async def _status(client: httpx.AsyncClient, key: str, path: str = "/maps/tiles") -> httpx.Response:
    return await client.get(path, headers={"Authorization": f"Bearer {key}"})


async def test_production_is_refused_after_the_grace_period_and_restored_by_accepting(
        fresh_database_url: str) -> None:
    upstream = EchoUpstream()
    start = datetime.now(UTC).replace(microsecond=0)
    clock.freeze(start)
    try:
        async with serve(upstream) as upstream_url:
            data = await committed(fresh_database_url, lambda f, s: _seed(f, s, upstream_url))
            await committed(fresh_database_url, lambda f, s: _accepted_version_1(f, s, data))
            gateway = GatewayApp(gateway_settings(fresh_database_url))
            gateway.gateway._clock = lambda: clock.now().timestamp()  # the proxy reads the same clock
            control = create_app(Settings(database_url=fresh_database_url, secret_key=TEST_SECRET))
            async with serve(gateway, **UVICORN_OPTIONS) as gateway_url, serve(control) as control_url, \
                    httpx.AsyncClient(base_url=gateway_url, timeout=10) as calls, \
                    httpx.AsyncClient(base_url=control_url, timeout=30, headers={
                        "Authorization": f"Bearer {data['admin_token']}"}) as admin, \
                    httpx.AsyncClient(base_url=control_url, timeout=30) as partner_client:
                await _run(data, calls, admin, partner_client, gateway, start)
    finally:
        clock.resume()


async def _run(data: dict[str, Any], calls: httpx.AsyncClient, admin: httpx.AsyncClient,
               partner_client: httpx.AsyncClient, gateway: GatewayApp, start: datetime) -> None:
    production, sandbox = data["keys"]["production"], data["keys"]["sandbox"]
    agreement_id = data["agreement_id"]
    assert (await _status(calls, production)).status_code == 200  # traffic admitted

    # The product requires the agreement; the partner has signed version 1: still admitted.
    created = await admin.post(f"/admin/api/agreements/{agreement_id}/requirements",
                               json={"scope": "product", "product_id": data["product_id"]})
    assert created.status_code == 201, created.text
    await asyncio.sleep(0.5)
    assert (await _status(calls, production)).status_code == 200

    # Publish a material version 2 with a grace period.
    draft = await admin.post(f"/admin/api/agreements/{agreement_id}/versions",
                             json={"body": "# Maps terms\n\nBe nice, and keep data 30 days at most.",
                                   "changes_summary": "Data retention", "material": True,
                                   "grace_days": GRACE_DAYS})
    assert draft.status_code == 201, draft.text
    published = await admin.post(f"/admin/api/agreements/{agreement_id}/versions/{draft.json()['id']}/publish")
    assert published.status_code == 200, published.text
    deadline = start + timedelta(days=GRACE_DAYS)

    # The gateway picks up the deadline (the snapshot carries it) but keeps admitting until it passes.
    await _wait_for(lambda: _gate(gateway) is not None)
    assert _gate(gateway)[0] == deadline.timestamp()
    clock.freeze(deadline - timedelta(minutes=1))
    assert (await _status(calls, production)).status_code == 200

    # Past the deadline: production refused, naming the agreement and the version; sandbox works.
    clock.freeze(deadline + timedelta(minutes=1))
    refused = await _status(calls, production)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "/problems/agreement-required"
    assert '"Maps Terms of Service" version 2' in problem["detail"]
    assert (await _status(calls, sandbox, "/sandbox/maps/tiles")).status_code == 200

    # The partner reads it as overdue and accepts over the partner API.
    login = await partner_client.post("/api/auth/login", json={"email": data["email"], "password": PASSWORD})
    assert login.status_code == 200, login.text
    partner_client.headers["Authorization"] = f"Bearer {login.json()['token']}"
    mine = await partner_client.get(f"/api/partners/{data['partner_id']}/agreements")
    assert [(a["slug"], a["state"], a["version_number"], a["accepted_version_number"])
            for a in mine.json()["items"]] == [("maps-terms", "overdue", 2, 1)]
    accepted = await partner_client.post(f"/api/partners/{data['partner_id']}/agreements/{agreement_id}/accept",
                                         json={"version_id": draft.json()["id"]})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["state"] == "accepted"
    accepted_at = time.monotonic()

    # Within a second production calls are admitted again.
    while (await _status(calls, production)).status_code != 200:
        assert time.monotonic() - accepted_at < 1.0, "production still refused a second after accepting"
        await asyncio.sleep(0.05)
    assert (await _status(calls, sandbox, "/sandbox/maps/tiles")).status_code == 200


def _gate(gateway: GatewayApp) -> tuple[float, str] | None:
    snapshot = gateway.loader.current
    for app in snapshot.apps.values():
        if app.environment == "production":
            for access in app.access.values():
                return access.agreement_due
    return None


async def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
