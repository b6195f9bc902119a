"""The integration audit over real HTTP: each flag triggered and not, the details, paging, filters, exports.

The program (now = 2026-03-20 12:00 UTC; stale after 90 days, no traffic after 30):
- clean: everything in order (the control: no flag);
- stale: two working credentials unused for 100 and 95 days, next to a revoked, an expired
  and a recently used one;
- above: a public-audience partner subscribed to a partner-visibility product, and (pending)
  to a plan whose minimum tier is above its own;
- lonely: its only member's user is deactivated;
- quiet: working access for 60 days, last admitted call 45 days ago;
- newcomer: working access for 10 days and no call yet (too early to flag);
- unsigned: a reseller integrating without the reseller terms (published 30 days ago, 14 grace days);
- closed: closed, with a stale credential and no member (closed partners get no flags).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import RequirementScope
from accord.apps.models import Credential, Environment
from accord.catalog.models import Visibility
from accord.core.clock import clock
from accord.partners.models import Audience, Partner, PartnerStatus, PartnerType
from accord.plans.models import Plan
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.teams.models import MemberRole, Membership
from accord.users.models import User
from accord.usage.models import FirstCall
from tests.factories import Factory
from tests.integrations.helpers import accept, agreement, days_ago, usage

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
AUDIT = "/admin/api/integration-audit"


def ago(days: float) -> datetime:
    return days_ago(NOW, days)


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.resume()


async def _subscribe(factory: Factory, partner: Partner, plan: Plan,
                     state: SubscriptionState = SubscriptionState.active,
                     since: datetime | None = None) -> Subscription:
    return await factory._add(Subscription(partner_id=partner.id, product_id=plan.product_id, plan_id=plan.id,
                                           state=state, activated_at=since, created_at=since or NOW))


async def build(session: AsyncSession, factory: Factory) -> dict:
    silver, gold = await factory.tier("Silver", 20), await factory.tier("Gold", 30)
    api = await factory.api()
    partner_product = await factory.product(api, slug="partner-product", visibility=Visibility.partner)
    public_product = await factory.product(api, slug="public-product", visibility=Visibility.public)
    standard = await factory.plan(partner_product, slug="standard")
    premium = await factory.plan(public_product, slug="premium", min_tier_id=gold.id)
    basic = await factory.plan(public_product, slug="basic")
    p = {"gold": gold}

    async def partner(slug: str, members: bool = True, **kw):  # noqa: ANN003, ANN202
        kw.setdefault("type", PartnerType.technology)
        kw.setdefault("tier_id", gold.id)
        p[slug] = await factory.partner(slug=slug, name=slug.title(), created_at=ago(300),
                                        contact_email=f"contact@{slug}.example", **kw)
        if members:
            await member(p[slug])
        return p[slug]

    async def member(owner, active: bool = True):  # noqa: ANN001, ANN202 - no password: hashing one is slow
        user = await factory._add(User(email=f"admin@{owner.slug}.example", is_active=active, password_hash=None))
        await factory._add(Membership(partner_id=owner.id, user_id=user.id, role=MemberRole.partner_admin))

    async def live_app(owner, created: float, last_used: float | None, **kw):  # noqa: ANN001, ANN202
        app = await factory.application(owner, Environment.production, name=f"{owner.slug} app")
        credential, _ = await factory.credential(app, created_at=ago(created),
                                                 last_used_at=ago(last_used) if last_used is not None else None, **kw)
        return app, credential

    clean = await partner("clean", type=PartnerType.reseller)
    await _subscribe(factory, clean, standard, since=ago(60))
    app, _ = await live_app(clean, 60, 1)
    await usage(session, app, ago(2), 5)
    await usage(session, app, ago(10), 7)
    await usage(session, app, ago(1), 3, denial="limit-reached")
    await usage(session, app, ago(40), 2)
    metric = (await factory.api()).id  # any id: metric rows are never counted as calls
    await usage(session, app, ago(2), 100, metric_id=metric)
    await factory._add(FirstCall(application_id=app.id, partner_id=clean.id, environment="production", at=ago(50)))
    _, terms = await agreement(session, "reseller-terms", published_at=ago(30), scope=RequirementScope.partner_type,
                               partner_type="reseller")
    await accept(session, terms, clean.id, ago(25))

    stale = await partner("stale")
    await _subscribe(factory, stale, standard, since=ago(200))
    app, p["stale_1"] = await live_app(stale, 200, 100)
    p["stale_2"], _ = await factory.credential(app, name="never used", created_at=ago(95))
    p["revoked"], _ = await factory.credential(app, name="revoked", created_at=ago(200), revoked_at=ago(150))
    p["expired"], _ = await factory.credential(app, name="expired", created_at=ago(200), last_used_at=ago(150),
                                               expires_at=ago(1))
    p["fresh"], _ = await factory.credential(app, name="fresh", created_at=ago(200), last_used_at=ago(1))
    await usage(session, app, ago(1), 1)

    above = await partner("above", audience=Audience.public, tier_id=silver.id)
    p["hidden_sub"] = await _subscribe(factory, above, standard, since=ago(20))
    p["tier_sub"] = await _subscribe(factory, above, premium, state=SubscriptionState.pending)
    await _subscribe(factory, above, premium, state=SubscriptionState.cancelled)
    await _subscribe(factory, above, basic, since=ago(20))

    lonely = await partner("lonely", members=False)
    await member(lonely, active=False)

    quiet = await partner("quiet")
    await _subscribe(factory, quiet, standard, since=ago(60))
    app, _ = await live_app(quiet, 60, 45)
    await usage(session, app, ago(45), 4)

    newcomer = await partner("newcomer")
    await _subscribe(factory, newcomer, standard, since=ago(10))
    await live_app(newcomer, 10, None)

    unsigned = await partner("unsigned", type=PartnerType.reseller)
    app = await factory.application(unsigned, Environment.sandbox)
    await factory.credential(app, created_at=ago(5), last_used_at=ago(1))
    await usage(session, app, ago(1), 9)
    p["terms"] = terms

    closed = await partner("closed", members=False, status=PartnerStatus.closed)
    await live_app(closed, 300, 200)
    await session.flush()
    return p


@pytest.fixture
async def program(session: AsyncSession, factory: Factory, frozen: None) -> dict:
    return await build(session, factory)


def _flags(items: list[dict]) -> dict[str, list[str]]:
    return {item["slug"]: [f["flag"] for f in item["flags"]] for item in items}


async def test_each_flag_is_triggered_once_and_only_where_it_should(admin: httpx.AsyncClient, program: dict) -> None:
    response = await admin.get(AUDIT, params={"limit": 200})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 8 and body["stale_credential_days"] == 90 and body["no_traffic_days"] == 30
    assert _flags(body["items"]) == {
        "above": ["above-tier"], "clean": [], "closed": [], "lonely": ["no-active-member"], "newcomer": [],
        "quiet": ["no-traffic"], "stale": ["stale-credential"], "unsigned": ["missing-agreement"]}
    assert [item["slug"] for item in body["items"]] == sorted(_flags(body["items"]))  # by name
    assert body["flag_counts"] == {"missing-agreement": 1, "stale-credential": 1, "above-tier": 1,
                                   "no-active-member": 1, "no-traffic": 1}
    by_slug = {item["slug"]: item for item in body["items"]}

    stale = by_slug["stale"]["flags"][0]
    assert stale["recommendation"] == "revoke"
    assert set(stale["subject_ids"]) == {str(program["stale_1"].id), str(program["stale_2"].id)}
    assert "unused 100 days" in stale["detail"] and "unused 95 days" in stale["detail"]
    above = by_slug["above"]["flags"][0]
    assert set(above["subject_ids"]) == {str(program["hidden_sub"].id), str(program["tier_sub"].id)}
    assert "not visible to the public audience" in above["detail"] and "needs tier" in above["detail"]
    missing = by_slug["unsigned"]["flags"][0]
    assert missing["subject_ids"] == [str(program["terms"].agreement_id)]
    assert "Reseller Terms v1 missing" in missing["detail"]


async def test_the_details_of_a_partner(admin: httpx.AsyncClient, program: dict) -> None:
    body = (await admin.get(AUDIT, params={"partner_id": str(program["clean"].id)})).json()
    assert body["total"] == 1
    clean = body["items"][0]
    assert (clean["type"], clean["tier"], clean["status"], clean["audience"]) == \
        ("reseller", program["gold"].slug, "active", "partner")
    assert [(s["product"], s["plan"], s["state"]) for s in clean["subscriptions"]] == \
        [("partner-product", "standard", "active")]
    assert [(a["environment"], a["state"]) for a in clean["applications"]] == [("production", "live")]
    [credential] = clean["credentials"]
    assert (credential["age_days"], credential["unused_days"]) == (60, 1)
    assert [(a["slug"], a["state"], a["accepted_version_number"]) for a in clean["agreements_signed"]] == \
        [("reseller-terms", "accepted", 1)]
    assert clean["agreements_missing"] == []
    # Admitted request rows of the last 30 days only: not the denied calls, the 40-day-old ones or metric rows.
    assert clean["calls_30d"] == 12
    assert clean["first_call_at"].startswith(ago(50).date().isoformat())
    assert datetime.fromisoformat(clean["last_call_at"]) == ago(2).replace(second=0, microsecond=0)

    stale = (await admin.get(AUDIT, params={"partner_id": str(program["stale"].id)})).json()["items"][0]
    names = {c["name"] for c in stale["credentials"]}
    assert "revoked" not in names and {"never used", "expired", "fresh"} <= names
    unsigned = (await admin.get(AUDIT, params={"partner_id": str(program["unsigned"].id)})).json()["items"][0]
    assert [(a["slug"], a["state"]) for a in unsigned["agreements_missing"]] == [("reseller-terms", "missing")]
    quiet = (await admin.get(AUDIT, params={"partner_id": str(program["quiet"].id)})).json()["items"][0]
    assert quiet["calls_30d"] == 0 and quiet["last_call_at"].startswith(ago(45).date().isoformat())


async def test_filter_by_flag_and_paging(admin: httpx.AsyncClient, program: dict) -> None:
    body = (await admin.get(AUDIT, params={"flag": "no-traffic"})).json()
    assert (body["total"], [i["slug"] for i in body["items"]]) == (1, ["quiet"])
    assert body["flag_counts"]["stale-credential"] == 1  # the counts ignore the flag filter
    page = (await admin.get(AUDIT, params={"limit": 3, "offset": 3})).json()
    assert page["total"] == 8 and [i["slug"] for i in page["items"]] == ["lonely", "newcomer", "quiet"]
    bad = await admin.get(AUDIT, params={"flag": "nope"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.flag"


async def test_thresholds_come_from_the_settings(admin: httpx.AsyncClient, program: dict,
                                                 server: tuple[FastAPI, str]) -> None:
    app, _ = server
    settings = app.state.settings
    before = settings.stale_credential_days, settings.no_traffic_days
    settings.stale_credential_days, settings.no_traffic_days = 97, 50
    try:
        body = (await admin.get(AUDIT, params={"limit": 200})).json()
    finally:
        settings.stale_credential_days, settings.no_traffic_days = before
    flags = _flags(body["items"])
    assert flags["stale"] == ["stale-credential"]  # only the 100-day one now
    assert body["items"][[i["slug"] for i in body["items"]].index("stale")]["flags"][0]["subject_ids"] == \
        [str(program["stale_1"].id)]
    assert flags["quiet"] == []  # 45 days without a call is within 50


async def test_csv_and_json_exports(admin: httpx.AsyncClient, program: dict) -> None:
    response = await admin.get(f"{AUDIT}/export.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 8
    by_slug = {row["slug"]: row for row in rows}
    assert by_slug["stale"]["flags"] == "stale-credential"
    assert by_slug["clean"]["flags"] == "" and by_slug["clean"]["calls_30d"] == "12"
    assert by_slug["clean"]["subscriptions"] == "partner-product/standard (active)"
    assert by_slug["clean"]["agreements_signed"] == "reseller-terms v1"
    assert by_slug["unsigned"]["agreements_missing"] == "reseller-terms v1 (missing)"

    filtered = await admin.get(f"{AUDIT}/export.csv", params={"flag": "above-tier"})
    assert [row["slug"] for row in csv.DictReader(io.StringIO(filtered.text))] == ["above"]

    response = await admin.get(f"{AUDIT}/export.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    items = json.loads(response.text)
    assert len(items) == 8 and _flags(items)["lonely"] == ["no-active-member"]
    page = (await admin.get(AUDIT, params={"limit": 200})).json()["items"]
    assert items == page  # the export is the report, unpaged


async def test_a_viewer_reads_but_cannot_remediate(base_url: str, factory: Factory, program: dict) -> None:
    from accord.users.models import StaffRole

    token = await factory.admin_token(StaffRole.viewer)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as viewer:
        assert (await viewer.get(AUDIT)).status_code == 200
        assert (await viewer.post(f"{AUDIT}/revoke-stale", json={})).status_code == 403


async def test_partner_filter_for_an_unknown_partner_is_empty(admin: httpx.AsyncClient, program: dict) -> None:
    import uuid

    body = (await admin.get(AUDIT, params={"partner_id": str(uuid.uuid4())})).json()
    assert body["total"] == 0 and body["items"] == []


async def test_credentials_keep_their_hashes_out_of_the_report(admin: httpx.AsyncClient, session: AsyncSession,
                                                               program: dict) -> None:
    text = (await admin.get(f"{AUDIT}/export.json")).text
    hashes = await session.scalars(select(Credential.key_hash))
    assert not any(h in text for h in hashes)



async def test_the_last_call_is_never_shown_before_the_first(admin: httpx.AsyncClient, factory,
                                                              session: AsyncSession) -> None:
    clock.freeze(NOW)
    try:
        partner = await factory.partner()
        app = await factory.application(partner, Environment.sandbox)
        first = ago(1).replace(second=40)
        session.add(FirstCall(application_id=app.id, partner_id=partner.id, environment="sandbox", at=first))
        await usage(session, app, first, 1)  # its usage row is the minute: 40 s before the first call
        [row] = (await admin.get(AUDIT, params={"partner_id": str(partner.id)})).json()["items"]
    finally:
        clock.resume()
    assert datetime.fromisoformat(row["first_call_at"]) == datetime.fromisoformat(row["last_call_at"]) == first
    assert row["calls_30d"] == 1
