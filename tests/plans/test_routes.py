"""The plans admin API over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import httpx
from sqlalchemy import select

from accord.auth.actor import CLI_ACTOR
from accord.plans import service
from accord.plans.models import Period, Plan
from accord.plans.schemas import PlanCreate
from accord.users.models import StaffRole


def field_errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


async def maps_product(factory, **kw):
    """A product holding the maps API (methods geocode and route) whole, and the social API."""
    maps = await factory.api(slug="maps")
    metrics = {"geocode": await factory.metric(maps, "geocode"), "route": await factory.metric(maps, "route")}
    social = await factory.api(slug="social")
    return await factory.product(maps, social, **kw), metrics


def plan_body(**kw):
    body = {"name": "Basic", "slug": "basic"}
    body.update(kw)
    return body


async def test_a_whole_plan_in_one_request(admin: httpx.AsyncClient, factory) -> None:
    product, metrics = await maps_product(factory)
    gold = await factory.tier("Gold", rank=30)
    created = await admin.post(f"/admin/api/products/{product.id}/plans", json=plan_body(
        description="Read-only trial", notes="for the spring campaign", published=False, approval_required=True,
        trial_days=30, allowed_http_methods=["HEAD", "GET"], min_tier_id=str(gold.id),
        setup_fee="99.5", monthly_fee=49, currency="EUR",
        limits=[{"api": "maps", "metric": "hits", "period": "minute", "value": 60},
                {"metric_id": str(metrics["geocode"].id), "period": "day", "value": 1000},
                {"api": "maps", "metric": "geocode", "period": "second", "value": 0}],
        disabled_methods=[{"api": "maps", "metric": "route"}],
        price_tiers=[{"api": "maps", "metric": "geocode", "from_units": 0, "to_units": 1000, "unit_price": "0"},
                     {"api": "maps", "metric": "geocode", "from_units": 1000, "unit_price": "0.0015"}]))
    assert created.status_code == 201, created.text
    plan = created.json()
    assert plan["product_id"] == str(product.id)
    assert (plan["published"], plan["approval_required"], plan["trial_days"]) == (False, True, 30)
    assert plan["is_default"] is True  # the product's first plan
    assert plan["allowed_http_methods"] == ["GET", "HEAD"]
    assert plan["min_tier_id"] == str(gold.id)
    assert plan["min_tier"] == {"id": str(gold.id), "slug": gold.slug, "name": "Gold", "rank": 30}
    assert (plan["setup_fee"], plan["monthly_fee"], plan["currency"]) == ("99.50", "49.00", "EUR")
    assert plan["notes"] == "for the spring campaign"
    assert [(x["api"], x["metric"], x["period"], x["value"]) for x in plan["limits"]] == [
        ("maps", "geocode", "second", 0), ("maps", "geocode", "day", 1000), ("maps", "hits", "minute", 60)]
    assert plan["limits"][1]["metric_id"] == str(metrics["geocode"].id)
    assert plan["disabled_methods"] == [{"metric_id": str(metrics["route"].id), "api": "maps", "metric": "route"}]
    assert [(t["from_units"], t["to_units"], t["unit_price"]) for t in plan["price_tiers"]] == [
        (0, 1000, "0.000000"), (1000, None, "0.001500")]

    assert (await admin.get(f"/admin/api/plans/{plan['id']}")).json() == plan
    listed = (await admin.get(f"/admin/api/products/{product.id}/plans")).json()
    assert listed["total"] == 1 and listed["items"][0] == plan
    hidden = (await admin.get(f"/admin/api/products/{product.id}/plans", params={"published": "true"})).json()
    assert hidden["total"] == 0

    audit = (await admin.get("/admin/api/audit", params={"target_id": plan["id"]})).json()
    assert [e["action"] for e in audit["items"]] == ["plan.created"]
    assert audit["items"][0]["after"]["limits"] == ["maps/geocode 0/second", "maps/geocode 1000/day",
                                                    "maps/hits 60/minute"]


async def test_update_plan_scalars_and_lists(admin: httpx.AsyncClient, factory) -> None:
    product, metrics = await maps_product(factory)
    plan = (await admin.post(f"/admin/api/products/{product.id}/plans", json=plan_body(
        allowed_http_methods=["GET"], limits=[{"api": "maps", "metric": "hits", "period": "day", "value": 10}],
        disabled_methods=[{"api": "maps", "metric": "route"}]))).json()
    limit_id = plan["limits"][0]["id"]

    patched = await admin.patch(f"/admin/api/plans/{plan['id']}", json={
        "name": "Basic+", "allowed_http_methods": None, "monthly_fee": "10",
        "limits": [{"api": "maps", "metric": "hits", "period": "day", "value": 20},
                   {"api": "social", "metric": "hits", "period": "eternity", "value": 5}]})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "Basic+" and body["allowed_http_methods"] is None and body["monthly_fee"] == "10.00"
    assert [(x["api"], x["period"], x["value"]) for x in body["limits"]] == [("maps", "day", 20),
                                                                             ("social", "eternity", 5)]
    assert body["limits"][0]["id"] == limit_id  # a limit that stays keeps its id
    assert [d["metric"] for d in body["disabled_methods"]] == ["route"]  # left out, so unchanged

    cleared = await admin.patch(f"/admin/api/plans/{plan['id']}", json={"disabled_methods": [], "price_tiers": []})
    assert cleared.status_code == 200 and cleared.json()["disabled_methods"] == []

    audit = (await admin.get("/admin/api/audit", params={"target_id": plan["id"]})).json()
    assert [e["action"] for e in audit["items"]] == ["plan.updated", "plan.updated", "plan.created"]
    assert audit["items"][1]["before"]["limits"] == ["maps/hits 10/day"]
    assert audit["items"][1]["after"]["allowed_http_methods"] is None

    for field in ("name", "published", "currency", "limits"):
        nulled = await admin.patch(f"/admin/api/plans/{plan['id']}", json={field: None})
        assert nulled.status_code == 422 and field in field_errors(nulled), field


async def test_validation_errors_name_the_field(admin: httpx.AsyncClient, factory) -> None:
    product, _ = await maps_product(factory)
    outsider = await factory.api(slug="outsider")
    await factory.metric(outsider, "secret")
    url = f"/admin/api/products/{product.id}/plans"

    shape = await admin.post(url, json=plan_body(slug="Bad Slug", trial_days=-1, currency="euro",
                                                 allowed_http_methods=["GET", "FETCH"], setup_fee="-1",
                                                 limits=[{"api": "maps", "metric": "hits", "period": "fortnight",
                                                          "value": -5}]))
    assert shape.status_code == 422
    assert set(field_errors(shape)) == {"slug", "trial_days", "currency", "allowed_http_methods.1", "setup_fee",
                                        "limits.0.period", "limits.0.value"}

    outside = await admin.post(url, json=plan_body(limits=[
        {"api": "maps", "metric": "hits", "period": "day", "value": 1},
        {"api": "outsider", "metric": "secret", "period": "day", "value": 1},
        {"api": "maps", "metric": "nope", "period": "day", "value": 1},
        {"api": "ghost", "metric": "hits", "period": "day", "value": 1},
        {"api": "maps", "metric": "hits", "period": "day", "value": 2}]))
    assert outside.status_code == 422
    assert field_errors(outside) == {
        "limits.1.api": "the API 'outsider' is not in this product",
        "limits.2.metric": "no metric 'nope' in API 'maps'",
        "limits.3.api": "no API with slug 'ghost'",
    }
    duplicate = await admin.post(url, json=plan_body(limits=[
        {"api": "maps", "metric": "hits", "period": "day", "value": 1},
        {"api": "maps", "metric": "hits", "period": "day", "value": 2}]))
    assert duplicate.status_code == 422
    assert field_errors(duplicate) == {"limits.1.period": "a day limit on 'hits' is already listed"}

    disabled = await admin.post(url, json=plan_body(disabled_methods=[{"api": "outsider", "metric": "secret"}]))
    assert disabled.status_code == 422 and "disabled_methods.0.api" in field_errors(disabled)
    tier = await admin.post(url, json=plan_body(min_tier_id="00000000-0000-0000-0000-000000000000"))
    assert tier.status_code == 422 and field_errors(tier) == {"min_tier_id": "no such program tier"}

    # None of the refused requests left a plan behind.
    assert (await admin.get(url)).json()["total"] == 0

    assert (await admin.post(url, json=plan_body())).status_code == 201
    dup = await admin.post(url, json=plan_body(name="Other"))
    assert dup.status_code == 409
    assert dup.json()["errors"] == [{"field": "slug", "reason": "this product already has a plan with slug 'basic'"}]
    elsewhere = await factory.product()
    assert (await admin.post(f"/admin/api/products/{elsewhere.id}/plans", json=plan_body())).status_code == 201
    assert (await admin.post(f"/admin/api/products/{outsider.id}/plans", json=plan_body())).status_code == 404


async def test_method_selected_api_only_exposes_its_methods(admin: httpx.AsyncClient, factory) -> None:
    maps = await factory.api(slug="maps")
    geocode = await factory.metric(maps, "geocode")
    await factory.metric(maps, "batch", parent=geocode)
    await factory.metric(maps, "route")
    product = (await admin.post("/admin/api/products", json={
        "name": "Geo", "slug": "geo", "apis": ["maps"], "methods": [{"api": "maps", "metric": "geocode"}]})).json()
    url = f"/admin/api/products/{product['id']}/plans"

    refused = await admin.post(url, json=plan_body(limits=[{"api": "maps", "metric": "route", "period": "day",
                                                            "value": 1}]))
    assert refused.status_code == 422
    assert field_errors(refused) == {
        "limits.0.metric": "'route' is not among the product's selected methods of its API"}
    allowed = await admin.post(url, json=plan_body(limits=[
        {"api": "maps", "metric": name, "period": "day", "value": 1} for name in ("hits", "geocode", "batch")]))
    assert allowed.status_code == 201, allowed.text


async def test_exactly_one_default_plan(admin: httpx.AsyncClient, factory) -> None:
    product, _ = await maps_product(factory)
    url = f"/admin/api/products/{product.id}/plans"
    first = (await admin.post(url, json=plan_body(slug="first"))).json()
    second = (await admin.post(url, json=plan_body(slug="second"))).json()
    assert first["is_default"] is True and second["is_default"] is False
    third = (await admin.post(url, json=plan_body(slug="third", is_default=True))).json()
    assert third["is_default"] is True

    async def defaults() -> list[str]:
        return [p["slug"] for p in (await admin.get(url)).json()["items"] if p["is_default"]]

    assert await defaults() == ["third"]
    assert (await admin.patch(f"/admin/api/plans/{second['id']}", json={"is_default": True})).status_code == 200
    assert await defaults() == ["second"]
    unset = await admin.patch(f"/admin/api/plans/{second['id']}", json={"is_default": False})
    assert unset.status_code == 422 and "is_default" in field_errors(unset)
    assert (await admin.patch(f"/admin/api/plans/{first['id']}", json={"is_default": False})).status_code == 200
    assert await defaults() == ["second"]

    audit = (await admin.get("/admin/api/audit", params={"target_id": third["id"]})).json()
    assert audit["items"][0]["action"] == "plan.updated"
    assert (audit["items"][0]["before"]["is_default"], audit["items"][0]["after"]["is_default"]) == (True, False)

    # Deleting the default hands the role to the oldest remaining plan.
    assert (await admin.delete(f"/admin/api/plans/{second['id']}")).status_code == 204
    assert await defaults() == ["first"]
    assert (await admin.get(f"/admin/api/plans/{second['id']}")).status_code == 404


async def test_limits_sub_resource(admin: httpx.AsyncClient, factory) -> None:
    product, metrics = await maps_product(factory)
    plan = await factory.plan(product)
    base = f"/admin/api/plans/{plan.id}/limits"

    added = await admin.post(base, json={"api": "maps", "metric": "geocode", "period": "hour", "value": 100})
    assert added.status_code == 201, added.text
    limit = added.json()
    assert (limit["api"], limit["metric"], limit["period"], limit["value"]) == ("maps", "geocode", "hour", 100)
    by_id = await admin.post(base, json={"metric_id": str(metrics["geocode"].id), "period": "hour", "value": 5})
    assert by_id.status_code == 409 and field_errors(by_id) == {
        "period": "the plan already has a hour limit on this metric"}
    negative = await admin.post(base, json={"api": "maps", "metric": "geocode", "period": "day", "value": -1})
    assert negative.status_code == 422 and "value" in field_errors(negative)
    neither = await admin.post(base, json={"period": "day", "value": 1})
    assert neither.status_code == 422 and "api" in field_errors(neither)

    other = (await admin.post(base, json={"api": "maps", "metric": "geocode", "period": "day", "value": 7})).json()
    clash = await admin.patch(f"{base}/{other['id']}", json={"period": "hour"})
    assert clash.status_code == 409 and "period" in field_errors(clash)
    changed = await admin.patch(f"{base}/{other['id']}", json={"value": 8, "period": "week"})
    assert changed.status_code == 200 and (changed.json()["value"], changed.json()["period"]) == (8, "week")

    listed = (await admin.get(base)).json()
    assert [(x["period"], x["value"]) for x in listed["items"]] == [("hour", 100), ("week", 8)]
    assert (await admin.get(base, params={"limit": 1, "offset": 1})).json()["items"][0]["period"] == "week"

    assert (await admin.delete(f"{base}/{other['id']}")).status_code == 204
    assert (await admin.delete(f"{base}/{other['id']}")).status_code == 404

    replaced = await admin.put(base, json={"limits": [
        {"api": "maps", "metric": "geocode", "period": "hour", "value": 1},
        {"api": "social", "metric": "hits", "period": "month", "value": 2}]})
    assert replaced.status_code == 200, replaced.text
    assert [(x["api"], x["id"] == limit["id"]) for x in replaced.json()] == [("maps", True), ("social", False)]
    bad = await admin.put(base, json={"limits": [{"api": "nope", "metric": "hits", "period": "day", "value": 1}]})
    assert bad.status_code == 422 and "limits.0.api" in field_errors(bad)

    audit = (await admin.get("/admin/api/audit", params={"target_id": str(plan.id)})).json()
    assert [e["action"] for e in audit["items"]] == [
        "plan.limits_replaced", "plan.limit_removed", "plan.limit_updated", "plan.limit_added", "plan.limit_added"]
    assert audit["items"][0]["after"]["limits"] == ["maps/geocode 1/hour", "social/hits 2/month"]
    assert (await admin.get(f"/admin/api/plans/{product.id}/limits")).status_code == 404


async def test_disabled_methods_sub_resource(admin: httpx.AsyncClient, factory) -> None:
    product, metrics = await maps_product(factory)
    plan = await factory.plan(product)
    base = f"/admin/api/plans/{plan.id}/disabled-methods"

    added = await admin.post(base, json={"api": "maps", "metric": "route"})
    assert added.status_code == 201
    assert added.json() == {"metric_id": str(metrics["route"].id), "api": "maps", "metric": "route"}
    again = await admin.post(base, json={"metric_id": str(metrics["route"].id)})
    assert again.status_code == 409 and "metric" in field_errors(again)
    assert [m["metric"] for m in (await admin.get(base)).json()["items"]] == ["route"]

    replaced = await admin.put(base, json={"disabled_methods": [{"api": "maps", "metric": "geocode"},
                                                                {"api": "social", "metric": "hits"}]})
    assert [(m["api"], m["metric"]) for m in replaced.json()] == [("maps", "geocode"), ("social", "hits")]
    twice = await admin.put(base, json={"disabled_methods": [{"api": "maps", "metric": "geocode"},
                                                             {"api": "maps", "metric": "geocode"}]})
    assert twice.status_code == 422 and "disabled_methods.1" in field_errors(twice)

    assert (await admin.delete(f"{base}/{metrics['geocode'].id}")).status_code == 204
    assert (await admin.delete(f"{base}/{metrics['geocode'].id}")).status_code == 404
    assert [m["metric"] for m in (await admin.get(f"/admin/api/plans/{plan.id}")).json()["disabled_methods"]] == [
        "hits"]
    audit = (await admin.get("/admin/api/audit", params={"target_id": str(plan.id)})).json()
    assert [e["action"] for e in audit["items"]] == [
        "plan.method_enabled", "plan.disabled_methods_replaced", "plan.method_disabled"]


async def test_price_tiers_are_validated(admin: httpx.AsyncClient, factory) -> None:
    product, _ = await maps_product(factory)
    plan = await factory.plan(product)
    base = f"/admin/api/plans/{plan.id}/price-tiers"
    tier = {"api": "maps", "metric": "geocode"}

    backwards = await admin.put(base, json={"price_tiers": [{**tier, "from_units": 10, "to_units": 10,
                                                             "unit_price": "1"}]})
    assert backwards.status_code == 422
    assert field_errors(backwards) == {"price_tiers.0.to_units": "must be greater than from_units"}
    overlapping = await admin.put(base, json={"price_tiers": [
        {**tier, "from_units": 0, "to_units": 100, "unit_price": "1"},
        {**tier, "from_units": 50, "unit_price": "0.5"}]})
    assert overlapping.status_code == 422
    assert field_errors(overlapping) == {"price_tiers.1.from_units": "overlaps the 'geocode' tier from 0 to 100"}
    negative = await admin.put(base, json={"price_tiers": [{**tier, "unit_price": "-1"}]})
    assert negative.status_code == 422 and "price_tiers.0.unit_price" in field_errors(negative)

    adjacent = await admin.put(base, json={"price_tiers": [
        {**tier, "from_units": 100, "unit_price": "0.5"},
        {**tier, "from_units": 0, "to_units": 100, "unit_price": "1"},
        {"api": "maps", "metric": "route", "from_units": 0, "unit_price": "2"}]})
    assert adjacent.status_code == 200, adjacent.text
    assert [(t["metric"], t["from_units"], t["to_units"]) for t in adjacent.json()] == [
        ("geocode", 0, 100), ("geocode", 100, None), ("route", 0, None)]

    clash = await admin.post(base, json={**tier, "from_units": 5000, "to_units": 6000, "unit_price": "0.1"})
    assert clash.status_code == 422 and field_errors(clash) == {
        "from_units": "overlaps the 'geocode' tier from 100 to unbounded"}
    other_metric = await admin.post(base, json={"api": "social", "metric": "hits", "unit_price": "0.01"})
    assert other_metric.status_code == 201 and other_metric.json()["unit_price"] == "0.010000"

    assert (await admin.delete(f"{base}/{other_metric.json()['id']}")).status_code == 204
    assert (await admin.delete(f"{base}/{other_metric.json()['id']}")).status_code == 404
    assert (await admin.get(base)).json()["total"] == 3


async def test_delete_refused_while_subscriptions_use_the_plan(admin: httpx.AsyncClient, factory) -> None:
    product, _ = await maps_product(factory)
    used = await factory.plan(product)
    await factory.subscription(await factory.partner(), used)
    refused = await admin.delete(f"/admin/api/plans/{used.id}")
    assert refused.status_code == 409 and "plan_id" in field_errors(refused)
    assert (await admin.get(f"/admin/api/plans/{used.id}")).status_code == 200


async def test_viewer_cannot_write(anon: httpx.AsyncClient, factory) -> None:
    product, _ = await maps_product(factory)
    plan = await factory.plan(product)
    viewer = {"Authorization": f"Bearer {await factory.admin_token(StaffRole.viewer)}"}
    assert (await anon.get(f"/admin/api/plans/{plan.id}", headers=viewer)).status_code == 200
    assert (await anon.get(f"/admin/api/products/{product.id}/plans", headers=viewer)).status_code == 200
    for method, path, body in [
        ("POST", f"/admin/api/products/{product.id}/plans", plan_body(slug="other")),
        ("PATCH", f"/admin/api/plans/{plan.id}", {"name": "X"}),
        ("DELETE", f"/admin/api/plans/{plan.id}", None),
        ("PUT", f"/admin/api/plans/{plan.id}/limits", {"limits": []}),
        ("POST", f"/admin/api/plans/{plan.id}/limits", {"api": "maps", "metric": "hits", "period": "day",
                                                        "value": 1}),
        ("PUT", f"/admin/api/plans/{plan.id}/disabled-methods", {"disabled_methods": []}),
        ("PUT", f"/admin/api/plans/{plan.id}/price-tiers", {"price_tiers": []}),
    ]:
        denied = await anon.request(method, path, json=body, headers=viewer)
        assert denied.status_code == 403, (method, path)
    assert (await anon.get(f"/admin/api/plans/{plan.id}", headers=viewer)).json()["name"] == plan.name


async def test_create_plan_service_for_declarative_apply(session, factory) -> None:
    """`accord apply` calls the service directly; it must validate and audit the same way."""
    product, _ = await maps_product(factory)
    plan = await service.create_plan(session, CLI_ACTOR, product.id, PlanCreate(
        name="Free", slug="free", limits=[{"api": "maps", "metric": "geocode", "period": "day", "value": 3}]))
    read = await service.plan_read(session, plan)
    assert read.is_default and [(x.metric, x.period, x.value) for x in read.limits] == [("geocode", Period.day, 3)]
    assert (await service.default_plan(session, product.id)).id == plan.id
    assert await session.scalar(select(Plan.slug).where(Plan.product_id == product.id)) == "free"
