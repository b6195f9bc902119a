"""Done means: one partner driven along the whole onboarding path over real HTTP, every stage at its fact's time.

Sign-up → accept the terms → sandbox app and key → a first sandbox call through the
real gateway → request production → staff approve with a plan → production key and
call (live) → a call 8 days later (active) → 31 days of silence (inactive).
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from accord.catalog.models import MappingRule, Metric, Visibility
from accord.core.clock import clock
from accord.events.models import Event
from accord.core.db import create_engine
from tests.gateway.harness import committed
from tests.onboarding.harness import bearer, running_program

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)  # a minute boundary


async def _catalog(database_url: str, upstream_url: str) -> dict:
    async def build(f, session):
        api = await f.api(slug="maps", path_prefix="/maps", visibility=Visibility.public,
                          sandbox_upstream_url=upstream_url, production_upstream_url=upstream_url)
        hits = await session.scalar(select(Metric).where(Metric.api_id == api.id, Metric.system_name == "hits"))
        session.add(MappingRule(api_id=api.id, metric_id=hits.id, http_method="ANY", pattern="/"))
        product = await f.product(api, visibility=Visibility.public)
        trial = await f.plan(product, slug="trial", is_default=True)
        production = await f.plan(product, slug="production", published=False, approval_required=True)
        return {"token": await f.admin_token(), "trial": str(trial.id), "production": str(production.id)}

    return await committed(database_url, build)


def _stages(onboarding: dict) -> list[tuple[str, datetime]]:
    return [(t["to_stage"], datetime.fromisoformat(t["at"])) for t in onboarding["timeline"]]


async def test_a_partner_walks_the_whole_path_and_every_stage_has_its_facts_time(fresh_database_url: str) -> None:
    clock.freeze(T0)
    try:
        async with running_program(fresh_database_url) as (program, upstream):
            ids = await _catalog(fresh_database_url, program.upstream_url)
            async with httpx.AsyncClient(base_url=program.control, timeout=30) as c:
                staff = bearer(ids["token"])
                # The terms every partner accepts to reach `terms_accepted`.
                terms = (await c.post("/admin/api/agreements", headers=staff,
                                      json={"slug": "terms", "title": "API Terms"})).json()
                version = (await c.post(f"/admin/api/agreements/{terms['id']}/versions", headers=staff,
                                        json={"body": "# Terms", "grace_days": 0})).json()
                assert (await c.post(f"/admin/api/agreements/{terms['id']}/versions/{version['id']}/publish",
                                     headers=staff)).status_code == 200
                assert (await c.post(f"/admin/api/agreements/{terms['id']}/requirements", headers=staff,
                                     json={"scope": "stage", "stage_key": "terms_accepted"})).status_code == 201

                # registered
                signup = await c.post("/api/auth/signup", json={
                    "email": "ada@example.com", "name": "Ada", "password": "correct horse battery staple",
                    "organisation": "Ada Labs"})
                assert signup.status_code == 201, signup.text
                me = bearer(signup.json()["token"])
                partner_id = signup.json()["user"]["memberships"][0]["partner_id"]
                base = f"/api/partners/{partner_id}"

                async def position() -> dict:
                    await program.sweep()
                    answer = await c.get(f"{base}/onboarding", headers=me)
                    assert answer.status_code == 200, answer.text
                    return answer.json()

                now = await position()
                assert now["stage_key"] == "registered"
                assert now["next_steps"][0]["stage_key"] == "terms_accepted"
                assert any(s["kind"] == "agreement" and "API Terms" in s["title"] for s in now["next_steps"])

                # terms_accepted
                clock.freeze(T0 + timedelta(hours=1))
                assert (await c.post(f"{base}/agreements/{terms['id']}/accept", headers=me,
                                     json={})).status_code in (200, 201)
                assert (await position())["stage_key"] == "terms_accepted"

                # sandbox_access: a sandbox application using the trial subscription, and a key
                clock.freeze(T0 + timedelta(hours=2))
                subscription = (await c.get(f"{base}/subscriptions", headers=me)).json()["items"][0]
                sandbox = (await c.post(f"{base}/applications", headers=me,
                                        json={"name": "Ada sandbox", "environment": "sandbox"})).json()
                assert (await c.post(f"{base}/applications/{sandbox['id']}/subscriptions", headers=me,
                                     json={"subscription_id": subscription["id"]})).status_code in (200, 201)
                sandbox_key = (await c.post(f"{base}/applications/{sandbox['id']}/credentials", headers=me,
                                            json={"name": "test"})).json()["secret"]
                now = await position()
                assert now["stage_key"] == "sandbox_access"
                assert now["next_steps"][0]["stage_key"] == "first_sandbox_call"

                # first_sandbox_call, recorded by the gateway
                clock.freeze(T0 + timedelta(hours=3))
                call = await program.call("/sandbox/maps/tiles", sandbox_key)
                assert call.status_code == 200, call.text
                assert (await position())["stage_key"] == "first_sandbox_call"

                # production_requested: the request moves the stage at once (no sweep needed)
                clock.freeze(T0 + timedelta(hours=4))
                production_app = (await c.post(f"{base}/applications", headers=me,
                                               json={"name": "Ada live", "environment": "production"})).json()
                assert production_app["state"] == "pending"
                request = await c.post(f"{base}/production-access-requests", headers=me, json={
                    "use_case": "Maps in our delivery app", "expected_volume": "10k calls a day",
                    "custom_fields": {"region": "EU", "launch_q": 2}, "application_id": production_app["id"]})
                assert request.status_code == 201, request.text
                assert (await c.get(f"{base}/onboarding", headers=me)).json()["stage_key"] == "production_requested"

                # production_approved: staff pick the plan; subscription and application follow
                clock.freeze(T0 + timedelta(hours=5))
                approved = await c.post(f"/admin/api/production-access-requests/{request.json()['id']}/approve",
                                        headers=staff, json={"plan_id": ids["production"]})
                assert approved.status_code == 200, approved.text
                assert approved.json()["state"] == "approved"
                app_now = (await c.get(f"{base}/applications/{production_app['id']}", headers=me)).json()
                assert app_now["state"] == "live"
                assert (await c.get(f"{base}/onboarding", headers=me)).json()["stage_key"] == "production_approved"

                # live: the first production call
                clock.freeze(T0 + timedelta(hours=6))
                live_key = (await c.post(f"{base}/applications/{production_app['id']}/credentials", headers=me,
                                         json={"name": "live"})).json()["secret"]
                call = await program.call("/maps/tiles", live_key)
                assert call.status_code == 200, call.text
                now = await position()
                assert now["stage_key"] == "live" and now["status"] == "progressing"

                # active: a production call 8 days after the first one
                clock.freeze(T0 + timedelta(days=8, hours=6))
                assert (await program.call("/maps/tiles", live_key)).status_code == 200
                now = await position()
                assert now["stage_key"] == "active"

                # inactive: 31 days without a call (and a new sign-in: sessions last 30 days)
                clock.freeze(T0 + timedelta(days=39, hours=6))
                login = await c.post("/api/auth/login", json={"email": "ada@example.com",
                                                              "password": "correct horse battery staple"})
                me.update(bearer(login.json()["token"]))
                now = await position()
                assert now["status"] == "inactive"

                assert _stages(now) == [
                    ("registered", T0),
                    ("terms_accepted", T0 + timedelta(hours=1)),
                    ("sandbox_access", T0 + timedelta(hours=2)),
                    ("first_sandbox_call", T0 + timedelta(hours=3)),
                    ("production_requested", T0 + timedelta(hours=4)),
                    ("production_approved", T0 + timedelta(hours=5)),
                    ("live", T0 + timedelta(hours=6)),
                    ("active", T0 + timedelta(days=8, hours=6)),
                    ("inactive", T0 + timedelta(days=38, hours=6)),
                ]
                assert datetime.fromisoformat(now["last_call_at"]) == T0 + timedelta(days=8, hours=6)
                assert datetime.fromisoformat(now["status_since"]) == T0 + timedelta(days=38, hours=6)

                # The same path, as events: a stage_changed per move, production access requested and decided.
                engine = create_engine(fresh_database_url)
                try:
                    async with engine.connect() as conn:
                        rows = (await conn.execute(select(Event.type, Event.data).where(
                            Event.partner_id == uuid.UUID(partner_id)).order_by(Event.seq))).all()
                finally:
                    await engine.dispose()
                moves = [data["object"]["to_stage"] for kind, data in rows if kind == "partner.stage_changed"]
                assert moves == ["terms_accepted", "sandbox_access", "first_sandbox_call", "production_requested",
                                 "production_approved", "live", "active", "inactive"]
                kinds = [kind for kind, _ in rows]
                assert "production_access.requested" in kinds and "production_access.decided" in kinds
                assert "partner.inactive" in kinds
    finally:
        clock.resume()
