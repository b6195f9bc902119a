"""The products admin API over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import httpx

from accord.catalog.models import Visibility
from accord.plans.models import Period
from accord.users.models import StaffRole


def field_errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


async def test_create_get_list_update_delete_product(admin: httpx.AsyncClient, factory) -> None:
    social = await factory.api(slug="social")
    maps = await factory.api(slug="maps")
    await factory.metric(maps, "geocode")
    await factory.metric(maps, "route")

    created = await admin.post("/admin/api/products", json={
        "name": "Starter", "slug": "starter", "description": "Social and geocoding", "notes": "internal remark",
        "visibility": "public", "apis": [str(social.id), "maps"],
        "methods": [{"api": "maps", "metric": "geocode"}]})
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["visibility"] == "public" and product["notes"] == "internal remark"
    assert [(a["slug"], a["id"], a["whole"]) for a in product["apis"]] == [
        ("maps", str(maps.id), False), ("social", str(social.id), True)]
    assert [(m["api"], m["metric"]) for m in product["methods"]] == [("maps", "geocode")]

    fetched = (await admin.get(f"/admin/api/products/{product['id']}")).json()
    assert fetched == product

    patched = await admin.patch(f"/admin/api/products/{product['id']}", json={"name": "Starter kit",
                                                                             "visibility": "partner"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Starter kit" and patched.json()["visibility"] == "partner"
    assert patched.json()["apis"] == product["apis"]

    audit = (await admin.get("/admin/api/audit", params={"target_id": product["id"]})).json()
    assert [e["action"] for e in audit["items"]] == ["product.updated", "product.created"]
    assert audit["items"][1]["after"]["apis"] == ["maps", "social"]
    assert audit["items"][1]["after"]["methods"] == ["maps/geocode"]
    assert audit["items"][0]["before"]["visibility"] == "public"
    assert audit["items"][0]["after"]["visibility"] == "partner"

    assert (await admin.delete(f"/admin/api/products/{product['id']}")).status_code == 204
    missing = await admin.get(f"/admin/api/products/{product['id']}")
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/not-found"
    audit = (await admin.get("/admin/api/audit", params={"target_id": product["id"]})).json()
    assert audit["items"][0]["action"] == "product.deleted"
    assert audit["items"][0]["before"]["slug"] == "starter"


async def test_list_filters_by_visibility_and_search(admin: httpx.AsyncClient, factory) -> None:
    await factory.product(name="Social Basic", slug="social-basic", visibility=Visibility.public)
    await factory.product(name="Social Pro", slug="social-pro", visibility=Visibility.partner)
    await factory.product(name="Maps", slug="maps", visibility=Visibility.public)

    everything = (await admin.get("/admin/api/products")).json()
    assert [p["slug"] for p in everything["items"]] == ["maps", "social-basic", "social-pro"]
    public = (await admin.get("/admin/api/products", params={"visibility": "public"})).json()
    assert [p["slug"] for p in public["items"]] == ["maps", "social-basic"]
    social = (await admin.get("/admin/api/products", params={"q": "SOCIAL"})).json()
    assert social["total"] == 2 and [p["slug"] for p in social["items"]] == ["social-basic", "social-pro"]
    both = (await admin.get("/admin/api/products", params={"q": "social", "visibility": "partner"})).json()
    assert [p["slug"] for p in both["items"]] == ["social-pro"]
    paged = (await admin.get("/admin/api/products", params={"limit": 1, "offset": 1})).json()
    assert paged["total"] == 3 and [p["slug"] for p in paged["items"]] == ["social-basic"]
    bad = await admin.get("/admin/api/products", params={"visibility": "secret"})
    assert bad.status_code == 422 and "query.visibility" in field_errors(bad)


async def test_validation_errors_name_the_field(admin: httpx.AsyncClient, factory) -> None:
    social = await factory.api(slug="social")
    other = await factory.api(slug="other")
    await factory.metric(other, "search")

    shape = await admin.post("/admin/api/products", json={"name": "", "slug": "Not A Slug", "visibility": "secret",
                                                          "colour": "red"})
    assert shape.status_code == 422
    assert shape.headers["content-type"] == "application/problem+json"
    assert set(field_errors(shape)) == {"name", "slug", "visibility", "colour"}

    # PostgreSQL cannot store NUL; it is a validation error on both databases, never a 500.
    nul = await admin.post("/admin/api/products", json={"name": "a\x00b", "slug": "p", "apis": ["so\x00cial"]})
    assert nul.status_code == 422 and set(field_errors(nul)) == {"name", "apis"}
    assert "(at 0)" in field_errors(nul)["apis"]
    nul_search = await admin.get("/admin/api/products", params={"q": "a\x00"})
    assert nul_search.status_code == 422 and "query.q" in field_errors(nul_search)

    unknown = await admin.post("/admin/api/products", json={"name": "P", "slug": "p",
                                                            "apis": ["social", "nope", str(social.id)]})
    assert unknown.status_code == 422
    assert field_errors(unknown) == {"apis.1": "no API with id or slug 'nope'",
                                     "apis.2": "API 'social' is listed twice"}

    outside = await admin.post("/admin/api/products", json={
        "name": "P", "slug": "p", "apis": ["social"],
        "methods": [{"api": "other", "metric": "search"}, {"api": "social", "metric": "hits"},
                    {"api": "social", "metric": "nope"}, {"api": "social"}]})
    assert outside.status_code == 422
    errors = field_errors(outside)
    assert errors["methods.0.api"] == "the API 'other' is not in this product; add it first"
    assert "root metric" in errors["methods.1.metric"]
    assert errors["methods.2.metric"] == "no metric 'nope' in API 'social'"
    assert "methods.3.metric" in errors

    # Nothing of the refused requests was written.
    assert (await admin.get("/admin/api/products")).json()["total"] == 0

    assert (await admin.post("/admin/api/products", json={"name": "P", "slug": "p"})).status_code == 201
    dup = await admin.post("/admin/api/products", json={"name": "Q", "slug": "p"})
    assert dup.status_code == 409
    assert dup.json()["errors"] == [{"field": "slug", "reason": "a product with slug 'p' already exists"}]

    product = (await admin.get("/admin/api/products")).json()["items"][0]
    nulled = await admin.patch(f"/admin/api/products/{product['id']}", json={"name": None})
    assert nulled.status_code == 422 and field_errors(nulled) == {"name": "may not be null"}


async def test_set_add_and_remove_apis(admin: httpx.AsyncClient, factory) -> None:
    social = await factory.api(slug="social")
    maps = await factory.api(slug="maps")
    await factory.metric(maps, "geocode")
    weather = await factory.api(slug="weather")
    product = (await admin.post("/admin/api/products", json={
        "name": "P", "slug": "p", "apis": ["maps"], "methods": [{"api": "maps", "metric": "geocode"}]})).json()
    base = f"/admin/api/products/{product['id']}"

    put = await admin.put(f"{base}/apis", json={"apis": ["social", str(maps.id)]})
    assert put.status_code == 200, put.text
    assert [a["slug"] for a in put.json()["apis"]] == ["maps", "social"]
    assert [m["metric"] for m in put.json()["methods"]] == ["geocode"]  # maps stayed, so did its methods

    added = await admin.post(f"{base}/apis", json={"api": str(weather.id)})
    assert added.status_code == 200 and [a["slug"] for a in added.json()["apis"]] == ["maps", "social", "weather"]
    again = await admin.post(f"{base}/apis", json={"api": "weather"})
    assert again.status_code == 409 and field_errors(again) == {"api": "API 'weather' is already in the product"}
    unknown = await admin.post(f"{base}/apis", json={"api": "nope"})
    assert unknown.status_code == 422 and "api" in field_errors(unknown)

    removed = await admin.delete(f"{base}/apis/maps")
    assert removed.status_code == 200
    assert [a["slug"] for a in removed.json()["apis"]] == ["social", "weather"]
    assert removed.json()["methods"] == []  # maps' selected methods left with it
    assert (await admin.delete(f"{base}/apis/maps")).status_code == 404
    assert (await admin.delete(f"{base}/apis/{social.id}")).status_code == 200

    emptied = await admin.put(f"{base}/apis", json={"apis": []})
    assert emptied.status_code == 200 and emptied.json()["apis"] == []

    audit = (await admin.get("/admin/api/audit", params={"target_id": product["id"]})).json()
    assert [e["action"] for e in audit["items"]] == [
        "product.apis_set", "product.api_removed", "product.api_removed", "product.api_added",
        "product.apis_set", "product.created"]
    assert audit["items"][3]["before"]["apis"] == ["maps", "social"]
    assert audit["items"][3]["after"]["apis"] == ["maps", "social", "weather"]

    assert (await admin.put(f"/admin/api/products/{social.id}/apis", json={"apis": []})).status_code == 404


async def test_selected_methods(admin: httpx.AsyncClient, factory) -> None:
    maps = await factory.api(slug="maps")
    geocode = await factory.metric(maps, "geocode")
    await factory.metric(maps, "route")
    product = (await admin.post("/admin/api/products", json={"name": "P", "slug": "p", "apis": ["maps"]})).json()
    base = f"/admin/api/products/{product['id']}"
    assert product["apis"][0]["whole"] is True

    selected = await admin.put(f"{base}/methods", json={"methods": [{"metric_id": str(geocode.id)},
                                                                    {"api": "maps", "metric": "route"}]})
    assert selected.status_code == 200, selected.text
    body = selected.json()
    assert body["apis"][0]["whole"] is False
    assert [(m["api"], m["metric"], m["api_id"]) for m in body["methods"]] == [
        ("maps", "geocode", str(maps.id)), ("maps", "route", str(maps.id))]

    twice = await admin.put(f"{base}/methods", json={"methods": [{"metric_id": str(geocode.id)},
                                                                 {"api": "maps", "metric": "geocode"}]})
    assert twice.status_code == 422 and field_errors(twice) == {"methods.1": "method 'geocode' is listed twice"}
    both = await admin.put(f"{base}/methods", json={"methods": [{"metric_id": str(geocode.id), "api": "maps"}]})
    assert both.status_code == 422 and "methods.0.metric_id" in field_errors(both)

    whole = await admin.put(f"{base}/methods", json={"methods": []})
    assert whole.status_code == 200 and whole.json()["methods"] == [] and whole.json()["apis"][0]["whole"] is True


async def test_shrinking_a_product_under_a_plan_is_a_conflict(admin: httpx.AsyncClient, factory) -> None:
    maps = await factory.api(slug="maps")
    geocode = await factory.metric(maps, "geocode")
    route = await factory.metric(maps, "route")
    social = await factory.api(slug="social")
    product = await factory.product(maps, social)
    await factory.plan(product, slug="basic", limits=[(route, Period.day, 100)])
    base = f"/admin/api/products/{product.id}"

    removed = await admin.delete(f"{base}/apis/maps")
    assert removed.status_code == 409
    assert field_errors(removed) == {"api": "plan 'basic' limits maps/route, which this change removes from the "
                                            "product; change the plan first"}
    narrowed = await admin.put(f"{base}/methods", json={"methods": [{"metric_id": str(geocode.id)}]})
    assert narrowed.status_code == 409 and "methods" in field_errors(narrowed)
    replaced = await admin.put(f"{base}/apis", json={"apis": ["social"]})
    assert replaced.status_code == 409 and "apis" in field_errors(replaced)

    # Selecting the limited method keeps the plan valid; removing the unused API is fine.
    assert (await admin.put(f"{base}/methods", json={"methods": [{"metric_id": str(route.id)}]})).status_code == 200
    assert (await admin.delete(f"{base}/apis/social")).status_code == 200
    assert [a["slug"] for a in (await admin.get(base)).json()["apis"]] == ["maps"]


async def test_delete_refused_while_subscriptions_reference_it(admin: httpx.AsyncClient, factory) -> None:
    product = await factory.product(await factory.api())
    plan = await factory.plan(product)
    await factory.subscription(await factory.partner(), plan)
    refused = await admin.delete(f"/admin/api/products/{product.id}")
    assert refused.status_code == 409 and "product_id" in field_errors(refused)
    assert (await admin.get(f"/admin/api/products/{product.id}")).status_code == 200

    unused = await factory.product(await factory.api())
    unused_plan = await factory.plan(unused)
    assert (await admin.delete(f"/admin/api/products/{unused.id}")).status_code == 204
    assert (await admin.get(f"/admin/api/plans/{unused_plan.id}")).status_code == 404


async def test_viewers_and_partner_managers_cannot_write(anon: httpx.AsyncClient, factory) -> None:
    product = await factory.product(await factory.api(slug="social"))
    viewer = {"Authorization": f"Bearer {await factory.admin_token(StaffRole.viewer)}"}
    assert (await anon.get("/admin/api/products", headers=viewer)).status_code == 200
    assert (await anon.get(f"/admin/api/products/{product.id}", headers=viewer)).status_code == 200
    for method, path, body in [
        ("POST", "/admin/api/products", {"name": "P", "slug": "p"}),
        ("PATCH", f"/admin/api/products/{product.id}", {"name": "X"}),
        ("PUT", f"/admin/api/products/{product.id}/apis", {"apis": []}),
        ("PUT", f"/admin/api/products/{product.id}/methods", {"methods": []}),
        ("DELETE", f"/admin/api/products/{product.id}", None),
    ]:
        denied = await anon.request(method, path, json=body, headers=viewer)
        assert denied.status_code == 403, (method, path)
        assert denied.json()["type"] == "/problems/forbidden"

    manager = {"Authorization": f"Bearer {await factory.admin_token(StaffRole.partner_manager)}"}
    assert (await anon.post("/admin/api/products", json={"name": "P", "slug": "p"},
                            headers=manager)).status_code == 403
    assert (await anon.get("/admin/api/products", headers={})).status_code == 401
    assert (await anon.get(f"/admin/api/products/{product.id}", headers=viewer)).json()["name"] == product.name
