"""The partner product catalog (`/api/partners/{id}/products`) over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from accord.catalog.models import Visibility
from accord.partners.models import Audience
from accord.plans.models import Period, PlanPriceTier
from accord.products.models import ProductMethod
from accord.partners.models import visible_tiers
from accord.teams.models import MemberRole


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def member_of(factory, role: MemberRole = MemberRole.viewer, **partner_kw):
    partner = await factory.partner(**partner_kw)
    _, token = await factory.member(partner, role)
    return partner, bearer(token)


async def one_product_per_visibility(factory) -> dict[Visibility, object]:
    return {v: await factory.product(slug=f"product-{v.value}", visibility=v) for v in Visibility}


EXPECTED = {
    Audience.internal: {"internal", "partner", "public", "open"},
    Audience.partner: {"partner", "public", "open"},
    Audience.public: {"public", "open"},
}


def test_visible_tiers_mapping() -> None:
    assert {a: {v.value for v in visible_tiers(a)} for a in Audience} == EXPECTED
    assert visible_tiers("partner") == visible_tiers(Audience.partner)


@pytest.mark.parametrize("audience", list(Audience))
async def test_audience_visibility_matrix(anon: httpx.AsyncClient, factory, audience: Audience) -> None:
    products = await one_product_per_visibility(factory)
    partner, headers = await member_of(factory, audience=audience)

    listed = await anon.get(f"/api/partners/{partner.id}/products", headers=headers)
    assert listed.status_code == 200, listed.text
    assert {p["visibility"] for p in listed.json()["items"]} == EXPECTED[audience]
    assert listed.json()["total"] == len(EXPECTED[audience])

    for visibility, product in products.items():
        one = await anon.get(f"/api/partners/{partner.id}/products/{product.id}", headers=headers)
        if visibility.value in EXPECTED[audience]:
            assert one.status_code == 200 and one.json()["slug"] == f"product-{visibility.value}"
        else:
            assert one.status_code == 404 and one.json()["type"] == "/problems/not-found"


async def test_partners_see_published_plans_only_and_no_staff_notes(anon: httpx.AsyncClient, factory,
                                                                    session) -> None:
    maps = await factory.api(slug="maps")
    geocode = await factory.metric(maps, "geocode")
    await factory.metric(maps, "route")
    reverse = await factory.metric(maps, "reverse")  # a method left out of the selection
    product = await factory.product(maps, slug="maps-basic", visibility=Visibility.partner,
                                    notes="margin is thin", description="Geocoding for partners")
    session.add(ProductMethod(product_id=product.id, metric_id=geocode.id))
    free = await factory.plan(product, slug="free", is_default=True, notes="loss leader",
                              allowed_http_methods=["GET"], limits=[(geocode, Period.day, 1000)])
    session.add(PlanPriceTier(plan_id=free.id, metric_id=geocode.id, from_units=1000, to_units=None,
                              unit_price=Decimal("0.002")))
    await factory.plan(product, slug="secret-deal", published=False)
    partner, headers = await member_of(factory)

    listed = (await anon.get(f"/api/partners/{partner.id}/products", headers=headers)).json()
    assert [p["slug"] for p in listed["items"]] == ["maps-basic"]
    offer = listed["items"][0]
    assert offer["description"] == "Geocoding for partners"
    assert [(a["slug"], a["whole"]) for a in offer["apis"]] == [("maps", False)]
    assert [m["metric"] for m in offer["methods"]] == ["geocode"]
    assert [p["slug"] for p in offer["plans"]] == ["free"]
    plan = offer["plans"][0]
    assert plan["is_default"] is True and plan["allowed_http_methods"] == ["GET"]
    assert plan["limits"] == [{"api": "maps", "metric": "geocode", "period": "day", "value": 1000}]
    assert plan["price_tiers"] == [{"api": "maps", "metric": "geocode", "from_units": 1000, "to_units": None,
                                    "unit_price": "0.002000"}]
    assert plan["eligible"] is True and plan["min_tier"] is None
    text = str(listed)
    assert "notes" not in text and "margin is thin" not in text and "loss leader" not in text
    assert "secret-deal" not in text and str(reverse.id) not in text

    detail = await anon.get(f"/api/partners/{partner.id}/products/{product.id}", headers=headers)
    assert detail.status_code == 200 and detail.json() == offer


async def test_min_tier_eligibility(anon: httpx.AsyncClient, factory) -> None:
    silver = await factory.tier("Silver", rank=20)
    gold = await factory.tier("Gold", rank=30)
    product = await factory.product(visibility=Visibility.public)
    await factory.plan(product, slug="anyone")
    await factory.plan(product, slug="gold-only", min_tier_id=gold.id)

    async def eligibility(tier):
        partner, headers = await member_of(factory, tier_id=tier.id if tier else None)
        body = (await anon.get(f"/api/partners/{partner.id}/products/{product.id}", headers=headers)).json()
        return {p["slug"]: p["eligible"] for p in body["plans"]}, body

    assert (await eligibility(None))[0] == {"anyone": True, "gold-only": False}
    assert (await eligibility(silver))[0] == {"anyone": True, "gold-only": False}
    seen, body = await eligibility(gold)
    assert seen == {"anyone": True, "gold-only": True}
    gold_only = next(p for p in body["plans"] if p["slug"] == "gold-only")
    assert gold_only["min_tier"] == {"slug": gold.slug, "name": "Gold", "rank": 30}


async def test_another_partners_id_is_not_found(anon: httpx.AsyncClient, factory) -> None:
    product = await factory.product(visibility=Visibility.open)
    mine, headers = await member_of(factory)
    theirs = await factory.partner()
    for path in (f"/api/partners/{theirs.id}/products", f"/api/partners/{theirs.id}/products/{product.id}"):
        response = await anon.get(path, headers=headers)
        assert response.status_code == 404 and response.json()["type"] == "/problems/not-found"
    assert (await anon.get(f"/api/partners/{mine.id}/products/{product.id}", headers=headers)).status_code == 200
    missing = await anon.get(f"/api/partners/{mine.id}/products/{theirs.id}", headers=headers)
    assert missing.status_code == 404
    assert (await anon.get(f"/api/partners/{mine.id}/products")).status_code == 401


async def test_partner_search(anon: httpx.AsyncClient, factory) -> None:
    await factory.product(name="Social Basic", slug="social-basic", visibility=Visibility.public)
    await factory.product(name="Maps", slug="maps", visibility=Visibility.public)
    await factory.product(name="Social Internal", slug="social-internal", visibility=Visibility.internal)
    partner, headers = await member_of(factory, audience=Audience.public)
    found = (await anon.get(f"/api/partners/{partner.id}/products", params={"q": "social"}, headers=headers)).json()
    assert [p["slug"] for p in found["items"]] == ["social-basic"]
