"""The catalog admin API over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import httpx

from accord.users.models import StaffRole

PETSTORE = """
openapi: 3.0.3
info: {title: Pets, version: "1"}
paths:
  /pets:
    get:
      operationId: listPets
      summary: List pets
      responses: {"200": {description: ok}}
    post:
      operationId: createPet
      responses: {"201": {description: created}}
  /pets/{petId}:
    get:
      operationId: showPet
      parameters: [{name: petId, in: path, required: true, schema: {type: string}}]
      responses: {"200": {description: ok}}
"""


def _api(**kw):
    body = {"name": "Social", "slug": "social", "path_prefix": "/social",
            "upstreams": {"production": "http://127.0.0.1:9000", "sandbox": "http://127.0.0.1:9001/"}}
    body.update(kw)
    return body


async def test_create_get_list_update_delete_api(admin: httpx.AsyncClient) -> None:
    created = await admin.post("/admin/api/apis", json=_api())
    assert created.status_code == 201, created.text
    api = created.json()
    assert api["upstreams"] == {"production": "http://127.0.0.1:9000", "sandbox": "http://127.0.0.1:9001"}
    assert api["visibility"] == "partner" and api["lifecycle"] == "ga"

    metrics = (await admin.get(f"/admin/api/apis/{api['id']}/metrics")).json()
    assert [m["system_name"] for m in metrics["items"]] == ["hits"]

    listed = (await admin.get("/admin/api/apis", params={"q": "soc"})).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == api["id"]

    patched = await admin.patch(f"/admin/api/apis/{api['id']}", json={"lifecycle": "deprecated",
                                                                      "upstreams": {"sandbox": None}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["lifecycle"] == "deprecated"
    assert patched.json()["upstreams"] == {"production": "http://127.0.0.1:9000", "sandbox": None}

    audit = (await admin.get("/admin/api/audit", params={"target_id": api["id"]})).json()
    assert [e["action"] for e in audit["items"]] == ["api.updated", "api.created"]
    assert audit["items"][0]["before"]["lifecycle"] == "ga"
    assert audit["items"][0]["after"]["lifecycle"] == "deprecated"

    assert (await admin.delete(f"/admin/api/apis/{api['id']}")).status_code == 204
    missing = await admin.get(f"/admin/api/apis/{api['id']}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "/problems/not-found"


async def test_duplicate_slug_and_prefix_are_conflicts_naming_the_field(admin: httpx.AsyncClient) -> None:
    assert (await admin.post("/admin/api/apis", json=_api())).status_code == 201
    dup = await admin.post("/admin/api/apis", json=_api(path_prefix="/other"))
    assert dup.status_code == 409
    assert dup.json()["errors"] == [{"field": "slug", "reason": "an API with slug 'social' already exists"}]
    dup_prefix = await admin.post("/admin/api/apis", json=_api(slug="other"))
    assert dup_prefix.status_code == 409 and dup_prefix.json()["errors"][0]["field"] == "path_prefix"


async def test_apis_on_one_prefix_are_told_apart_by_host_name(admin: httpx.AsyncClient) -> None:
    """A prefix is unique per host name ("" = any host); host names are DNS names, kept in lower case."""
    assert (await admin.post("/admin/api/apis", json=_api())).status_code == 201
    on_host = await admin.post("/admin/api/apis", json=_api(slug="maps", hostname="Maps.Example.com"))
    assert on_host.status_code == 201, on_host.text
    assert on_host.json()["hostname"] == "maps.example.com"
    again = await admin.post("/admin/api/apis", json=_api(slug="maps-2", hostname="maps.example.com"))
    assert again.status_code == 409
    assert again.json()["errors"] == [{"field": "path_prefix",
                                       "reason": "another API already serves '/social' on maps.example.com"}]
    for hostname in ("maps.example.com:8080", "sandbox.maps.example.com"):
        bad = await admin.post("/admin/api/apis", json=_api(slug="maps-3", hostname=hostname))
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "hostname"
    # Moving the host-less API onto the same host (or back) is checked the same way.
    moved = await admin.patch(f"/admin/api/apis/{on_host.json()['id']}", json={"hostname": ""})
    assert moved.status_code == 409 and moved.json()["errors"][0]["field"] == "path_prefix"
    renamed = await admin.patch(f"/admin/api/apis/{on_host.json()['id']}", json={"hostname": "geo.example.com"})
    assert renamed.status_code == 200 and renamed.json()["hostname"] == "geo.example.com"


async def test_validation_errors_name_each_field(admin: httpx.AsyncClient) -> None:
    bad = await admin.post("/admin/api/apis", json=_api(slug="Not A Slug", upstreams={"production": "ftp://x"},
                                                        visibility="secret"))
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"slug", "upstreams.production", "visibility"}
    not_json = await admin.post("/admin/api/apis", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422


async def test_openapi_document_is_validated_and_generates_methods(admin: httpx.AsyncClient) -> None:
    broken = await admin.post("/admin/api/apis", json=_api(openapi="openapi: 3.0.3\npaths: {}\n"))
    assert broken.status_code == 422 and broken.json()["errors"][0]["field"] == "openapi"

    api = (await admin.post("/admin/api/apis", json=_api(openapi=PETSTORE))).json()
    assert api["has_openapi"] is True
    doc = (await admin.get(f"/admin/api/apis/{api['id']}/openapi")).json()
    assert doc["info"]["title"] == "Pets"

    result = (await admin.post(f"/admin/api/apis/{api['id']}/generate")).json()
    assert sorted(result["metrics_created"]) == ["createpet", "listpets", "showpet"]
    assert sorted(result["rules_created"]) == ["GET /pets$", "GET /pets/{petId}$", "POST /pets$"]
    again = (await admin.post(f"/admin/api/apis/{api['id']}/generate")).json()
    assert again == {"metrics_created": [], "rules_created": []}

    metrics = (await admin.get(f"/admin/api/apis/{api['id']}/metrics")).json()["items"]
    hits = next(m for m in metrics if m["system_name"] == "hits")
    assert all(m["parent_id"] == hits["id"] for m in metrics if m["system_name"] != "hits")


async def test_metrics_and_mapping_rules(admin: httpx.AsyncClient) -> None:
    api = (await admin.post("/admin/api/apis", json=_api())).json()
    base = f"/admin/api/apis/{api['id']}"
    reads = await admin.post(f"{base}/metrics", json={"system_name": "reads", "friendly_name": "Reads"})
    assert reads.status_code == 201
    child = await admin.post(f"{base}/metrics", json={"system_name": "search", "friendly_name": "Search",
                                                      "parent": "reads"})
    assert child.json()["parent_id"] == reads.json()["id"]
    orphan = await admin.post(f"{base}/metrics", json={"system_name": "x", "friendly_name": "X", "parent": "nope"})
    assert orphan.status_code == 422 and orphan.json()["errors"][0]["field"] == "parent"

    rule = await admin.post(f"{base}/mapping-rules", json={"http_method": "GET", "pattern": "/users/{id}$?fields={f}",
                                                           "metric": "reads", "delta": 2, "last": True})
    assert rule.status_code == 201, rule.text
    assert rule.json()["delta"] == 2 and rule.json()["last"] is True
    bad = await admin.post(f"{base}/mapping-rules", json={"http_method": "GET", "pattern": "users/{id",
                                                          "metric": "reads"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "pattern"
    dup = await admin.post(f"{base}/mapping-rules", json={"http_method": "GET", "pattern": "/users/{id}$?fields={f}",
                                                          "metric": "hits"})
    assert dup.status_code == 409

    hits = next(m for m in (await admin.get(f"{base}/metrics")).json()["items"] if m["system_name"] == "hits")
    assert (await admin.delete(f"{base}/metrics/{hits['id']}")).status_code == 409
    assert (await admin.delete(f"{base}/mapping-rules/{rule.json()['id']}")).status_code == 204


async def test_roles_and_tokens(anon: httpx.AsyncClient, factory) -> None:
    none = await anon.get("/admin/api/apis")
    assert none.status_code == 401 and none.json()["type"] == "/problems/unauthenticated"
    wrong = await anon.get("/admin/api/apis", headers={"Authorization": "Bearer acc_admin_nope"})
    assert wrong.status_code == 401

    viewer = {"Authorization": f"Bearer {await factory.admin_token(StaffRole.viewer)}"}
    assert (await anon.get("/admin/api/apis", headers=viewer)).status_code == 200
    assert (await anon.post("/admin/api/apis", json=_api(), headers=viewer)).status_code == 403

    manager = {"Authorization": f"Bearer {await factory.admin_token(StaffRole.partner_manager)}"}
    denied = await anon.post("/admin/api/apis", json=_api(), headers=manager)
    assert denied.status_code == 403 and denied.json()["type"] == "/problems/forbidden"


async def test_upstream_secret_is_for_owners_and_matches_the_gateway(admin: httpx.AsyncClient, anon, factory) -> None:
    from accord.gateway.builder import upstream_secret
    from tests.conftest import TEST_SECRET

    api = (await admin.post("/admin/api/apis", json=_api())).json()
    secret = await admin.get(f"/admin/api/apis/{api['id']}/upstream-secret")
    assert secret.json() == {"header": "X-Accord-Gateway-Secret", "value": upstream_secret(TEST_SECRET, api["id"])}
    viewer = {"Authorization": f"Bearer {await factory.admin_token(StaffRole.viewer)}"}
    assert (await anon.get(f"/admin/api/apis/{api['id']}/upstream-secret", headers=viewer)).status_code == 403
