"""Property-based fuzzing of the admin and partner APIs with schemathesis.

Every operation in the OpenAPI document gets generated requests (a bounded
number each) against a real `accord serve` process on SQLite and on
PostgreSQL. The checks: never a 5xx, and every error is problem+json.
"""
from __future__ import annotations

import asyncio

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from accord.core.db import create_engine, session_factory
from accord.teams.models import MemberRole
from tests.conftest import TEST_SECRET
from tests.factories import Factory
from tests.servers import accord_serve

EXAMPLES_PER_OPERATION = 12


async def _seed(database_url: str) -> dict[str, str]:
    """An owner token, a partner with a partner-admin member, and an API in a product."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            factory = Factory(session, TEST_SECRET)
            admin = await factory.admin_token()
            partner = await factory.partner()
            _, member = await factory.member(partner, MemberRole.partner_admin)
            api = await factory.api()
            await factory.plan(await factory.product(api))
            await session.commit()
            return {"admin": admin, "member": member, "partner_id": str(partner.id), "api_id": str(api.id)}
    finally:
        await engine.dispose()


@pytest.fixture
def live_server(fresh_database_url: str):
    seeded = asyncio.run(_seed(fresh_database_url))
    with accord_serve(fresh_database_url, TEST_SECRET) as base:
        yield base, seeded


def test_no_server_errors_and_problem_json_everywhere(live_server) -> None:
    base, seeded = live_server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20

    for operation in operations:
        is_admin = operation.path.startswith("/admin/")
        headers = {"Authorization": f"Bearer {seeded['admin'] if is_admin else seeded['member']}"}

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def exercise(case: schemathesis.Case) -> None:
            # Half the time aim at real rows so requests get past the 404s.
            params = case.path_parameters or {}
            if "partner_id" in params and hash(str(case.body)) % 2 == 0:
                params["partner_id"] = seeded["partner_id"]
            if "api_id" in params and hash(str(case.query)) % 2 == 0:
                params["api_id"] = seeded["api_id"]
            response = case.call(base_url=base, headers=headers, timeout=30)
            where = f"{case.method} {case.formatted_path} -> {response.status_code}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.text[:300]}")
                return
            content_type = (response.headers.get("content-type") or [""])[0]
            if response.status_code >= 400 and not content_type.startswith("application/problem+json"):
                failures.append(f"{where}: not problem+json ({content_type})")

        exercise()

    assert not failures, "\n".join(sorted(set(failures))[:40])


def test_openapi_document_describes_every_route_and_error(live_server) -> None:
    base, _ = live_server
    doc = httpx.get(f"{base}/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "Problem" in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            if path.startswith("/admin/api") or path.startswith("/api/partners"):
                codes = set(operation["responses"])
                assert {"401", "422"} <= codes, f"{method.upper()} {path} does not document its errors: {codes}"
