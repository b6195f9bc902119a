"""Errors are problem+json naming the field, including input no database can store."""
from __future__ import annotations

import httpx


async def test_nul_in_body_query_and_path_is_a_validation_error(admin: httpx.AsyncClient) -> None:
    body = await admin.post("/admin/api/apis", json={"name": "a\x00b", "slug": "ok", "path_prefix": "/ok"})
    assert body.status_code == 422
    assert body.json()["errors"] == [{"field": "name", "reason": "Value error, must not contain the NUL character"}]
    query = await admin.get("/admin/api/apis", params={"q": "x\x00"})
    assert query.status_code == 422 and query.json()["errors"][0]["field"] == "query.q"
    assert query.headers["content-type"] == "application/problem+json"


async def test_unknown_route_and_method_are_problems(admin: httpx.AsyncClient) -> None:
    missing = await admin.get("/admin/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/not-found"
    wrong_method = await admin.put("/admin/api/apis")
    assert wrong_method.status_code == 405 and wrong_method.json()["type"] == "/problems/method-not-allowed"


async def test_unknown_fields_are_refused_by_name(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/admin/api/apis", json={"name": "A", "slug": "a", "path_prefix": "/a", "colour": 1})
    assert response.status_code == 422
    assert {"field": "colour", "reason": "Extra inputs are not permitted"} in response.json()["errors"]


async def test_problem_catalog_is_served(anon: httpx.AsyncClient) -> None:
    catalog = (await anon.get("/problems")).json()
    assert {p["type"] for p in catalog} >= {"/problems/not-found", "/problems/validation-error"}
    one = await anon.get("/problems/conflict")
    assert one.json()["status"] == 409


async def test_a_body_that_is_not_json_names_the_body(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/admin/api/apis", content=b'{"name": "A",', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "body" and error["reason"].startswith("request body is not valid JSON (at character ")
