"""The usage admin API over real HTTP, on SQLite and PostgreSQL, with usage rows written by the test."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Environment
from accord.usage.models import FirstCall, UsageCount
from accord.users.models import StaffRole
from tests.factories import Factory

P1, P2 = uuid.uuid4(), uuid.uuid4()
A1, A2 = uuid.uuid4(), uuid.uuid4()
API = uuid.uuid4()
HITS, SEARCH = uuid.uuid4(), uuid.uuid4()
MARCH = {"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"}
SPRING = {"from": "2025-03-01T00:00:00Z", "to": "2025-05-01T00:00:00Z"}


def utc(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def field_errors(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"]: e["reason"] for e in response.json()["errors"]}


async def add_usage(session: AsyncSession, minute: str, *, partner: uuid.UUID | None = P1,
                    app: uuid.UUID | None = A1, metric: uuid.UUID | None = None, status: str = "2xx",
                    denial: str = "", count: int, units: int = 0, ms_sum: float = 0.0, ms_max: float = 0.0) -> None:
    session.add(UsageCount(bucket_key=uuid.uuid4().hex, minute=utc(minute), partner_id=partner, application_id=app,
                           api_id=API, metric_id=metric, environment="production", status_class=status,
                           denial=denial, count=count, units=units, latency_ms_sum=ms_sum, latency_ms_max=ms_max))
    await session.flush()


@pytest.fixture
async def traffic(session: AsyncSession, backend: str) -> None:
    """Request rows (metric NULL) and metric rows, as the recorder writes them."""
    if backend == "postgres":
        # Far from UTC: day and month buckets must not follow the session's time zone.
        await session.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))
    # Partner 1: admitted, failed upstream, and refused over its limit.
    await add_usage(session, "2025-03-01T10:05", count=10, ms_sum=100, ms_max=30)
    await add_usage(session, "2025-03-01T10:05", metric=HITS, count=10, units=10, ms_sum=100, ms_max=30)
    await add_usage(session, "2025-03-01T10:05", metric=SEARCH, count=4, units=8, ms_sum=40, ms_max=30)
    await add_usage(session, "2025-03-01T10:40", status="5xx", count=2, ms_sum=40, ms_max=25)
    await add_usage(session, "2025-03-01T10:40", status="5xx", metric=HITS, count=2, units=2, ms_sum=40, ms_max=25)
    await add_usage(session, "2025-03-01T11:10", count=5, ms_sum=50, ms_max=12)
    await add_usage(session, "2025-03-01T11:10", metric=HITS, count=5, units=5, ms_sum=50, ms_max=12)
    await add_usage(session, "2025-03-01T11:10", status="4xx", denial="limit-reached", count=3, ms_sum=3, ms_max=1)
    await add_usage(session, "2025-03-01T11:10", status="4xx", denial="limit-reached", metric=HITS, count=3,
                    units=3, ms_sum=3, ms_max=1)
    # Unknown credentials: no partner, no application.
    await add_usage(session, "2025-03-01T10:05", partner=None, app=None, status="4xx",
                    denial="credential-unknown", count=6, ms_sum=12, ms_max=2)
    # Partner 2, the next day and the next month. 23:59 stays on its UTC day even far east of UTC.
    await add_usage(session, "2025-03-02T23:59", partner=P2, app=A2, count=7, ms_sum=70, ms_max=10)
    await add_usage(session, "2025-03-02T23:59", partner=P2, app=A2, metric=HITS, count=7, units=7, ms_sum=70,
                    ms_max=10)
    await add_usage(session, "2025-04-01T00:00", partner=P2, app=A2, count=1, ms_sum=5, ms_max=5)
    await add_usage(session, "2025-04-01T00:00", partner=P2, app=A2, metric=HITS, count=1, units=1, ms_sum=5,
                    ms_max=5)


async def usage(admin: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await admin.get("/admin/api/usage", params={"limit": 200, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def brief(items: list[dict[str, Any]], *fields: str) -> list[tuple]:
    return [(item["start"].replace("+00:00", "Z"), *(item[f] for f in fields)) for item in items]


async def test_requests_per_granularity(admin: httpx.AsyncClient, traffic: None) -> None:
    assert brief(await usage(admin, granularity="minute", **MARCH), "count", "denied") == [
        ("2025-03-01T10:05:00Z", 16, 6), ("2025-03-01T10:40:00Z", 2, 0), ("2025-03-01T11:10:00Z", 8, 3)]
    hourly = await usage(admin, granularity="hour", **MARCH)
    assert brief(hourly, "count", "denied", "units") == [
        ("2025-03-01T10:00:00Z", 18, 6, None), ("2025-03-01T11:00:00Z", 8, 3, None)]
    assert hourly[0]["latency_ms_avg"] == round((100 + 40 + 12) / 18, 3)
    assert hourly[0]["latency_ms_max"] == 30
    assert hourly[0]["partner_id"] is None and hourly[0]["metric_id"] is None  # not grouped
    assert brief(await usage(admin, granularity="day", **SPRING), "count") == [
        ("2025-03-01T00:00:00Z", 26), ("2025-03-02T00:00:00Z", 7), ("2025-04-01T00:00:00Z", 1)]
    assert brief(await usage(admin, granularity="month", **SPRING), "count", "denied") == [
        ("2025-03-01T00:00:00Z", 33, 9), ("2025-04-01T00:00:00Z", 1, 0)]
    # Day is the default granularity.
    assert brief(await usage(admin, **MARCH), "count") == [("2025-03-01T00:00:00Z", 26)]


async def test_time_range_is_inclusive_exclusive_and_naive_times_are_utc(admin: httpx.AsyncClient,
                                                                         traffic: None) -> None:
    assert brief(await usage(admin, granularity="minute", **{"from": "2025-03-01T10:40:00",
                                                               "to": "2025-03-01T11:10:00"}), "count") == [
        ("2025-03-01T10:40:00Z", 2)]
    assert brief(await usage(admin, granularity="minute", **{"from": "2025-03-01T13:10:00+02:00",
                                                               "to": "2025-03-01T13:11:00+02:00"}), "count") == [
        ("2025-03-01T11:10:00Z", 8)]


async def test_group_by_partner_application_and_status_class(admin: httpx.AsyncClient, traffic: None) -> None:
    by_partner = await usage(admin, granularity="month", group_by="partner", **SPRING)
    assert {(b["start"][:7], b["partner_id"], b["count"], b["denied"]) for b in by_partner} == {
        ("2025-03", str(P1), 20, 3), ("2025-03", None, 6, 6), ("2025-03", str(P2), 7, 0), ("2025-04", str(P2), 1, 0)}
    assert all(b["application_id"] is None for b in by_partner)

    # Comma-separated and repeated forms are the same.
    comma = await usage(admin, granularity="month", group_by="partner,application", **SPRING)
    repeated = await usage(admin, granularity="month", group_by=["application", "partner"], **SPRING)
    assert comma == repeated
    assert {(b["partner_id"], b["application_id"], b["count"]) for b in comma if b["start"][:7] == "2025-03"} == {
        (str(P1), str(A1), 20), (None, None, 6), (str(P2), str(A2), 7)}

    statuses = await usage(admin, granularity="day", group_by="status_class", partner_id=str(P1), **MARCH)
    assert {b["status_class"]: b["count"] for b in statuses} == {"2xx": 15, "4xx": 3, "5xx": 2}


async def test_metric_filter_and_grouping_give_units(admin: httpx.AsyncClient, traffic: None) -> None:
    hits = await usage(admin, granularity="day", metric=str(HITS), **SPRING)
    # Units only of admitted requests: the three refused over the limit consumed nothing.
    assert brief(hits, "count", "denied", "units") == [
        ("2025-03-01T00:00:00Z", 20, 3, 17), ("2025-03-02T00:00:00Z", 7, 0, 7), ("2025-04-01T00:00:00Z", 1, 0, 1)]

    per_metric = await usage(admin, granularity="month", group_by="metric", partner_id=str(P1), **SPRING)
    assert {(b["metric_id"], b["count"], b["units"]) for b in per_metric} == {(str(HITS), 20, 17),
                                                                             (str(SEARCH), 4, 8)}
    only_a2 = await usage(admin, granularity="month", group_by="metric", application_id=str(A2),
                          api_id=str(API), **SPRING)
    assert brief(only_a2, "metric_id", "units") == [("2025-03-01T00:00:00Z", str(HITS), 7),
                                                    ("2025-04-01T00:00:00Z", str(HITS), 1)]
    assert await usage(admin, api_id=str(uuid.uuid4()), **SPRING) == []


async def test_usage_is_paginated(admin: httpx.AsyncClient, traffic: None) -> None:
    answer = await admin.get("/admin/api/usage", params={"granularity": "minute", "limit": 2, "offset": 1, **MARCH})
    page = answer.json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 1
    assert brief(page["items"], "count") == [("2025-03-01T10:40:00Z", 2), ("2025-03-01T11:10:00Z", 8)]


async def test_denials_by_reason_and_by_partner(admin: httpx.AsyncClient, traffic: None) -> None:
    answer = await admin.get("/admin/api/usage/denials", params=SPRING)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "total": 9,
        "by_reason": [{"reason": "credential-unknown", "count": 6}, {"reason": "limit-reached", "count": 3}],
        "by_partner": [{"partner_id": None, "reason": "credential-unknown", "count": 6},
                       {"partner_id": str(P1), "reason": "limit-reached", "count": 3}],
    }
    mine = (await admin.get("/admin/api/usage/denials", params={"partner_id": str(P1), **SPRING})).json()
    assert mine["total"] == 3 and mine["by_reason"] == [{"reason": "limit-reached", "count": 3}]
    top = (await admin.get("/admin/api/usage/denials", params={"top": 1, **SPRING})).json()
    assert top["by_partner"] == [{"partner_id": None, "reason": "credential-unknown", "count": 6}]
    later = (await admin.get("/admin/api/usage/denials", params={"from": "2025-03-01T11:00:00Z"})).json()
    assert later["by_reason"] == [{"reason": "limit-reached", "count": 3}]


async def test_first_calls_with_filters(admin: httpx.AsyncClient, factory: Factory, session: AsyncSession) -> None:
    partner, other = await factory.partner(), await factory.partner()
    sandbox_app = await factory.application(partner, Environment.sandbox, name="Try-out")
    live_app = await factory.application(partner, Environment.production, name="Live")
    other_app = await factory.application(other, Environment.sandbox)
    deleted_app = uuid.uuid4()
    for app_id, partner_id, environment, when in [
            (sandbox_app.id, partner.id, "sandbox", "2025-03-01T09:00"),
            (live_app.id, partner.id, "production", "2025-03-05T09:00"),
            (other_app.id, other.id, "sandbox", "2025-03-03T09:00"),
            (deleted_app, partner.id, "sandbox", "2025-03-02T09:00")]:
        session.add(FirstCall(application_id=app_id, partner_id=partner_id, api_id=API, environment=environment,
                              at=utc(when)))
    await session.flush()

    answer = await admin.get("/admin/api/usage/first-calls", params={"partner_id": str(partner.id)})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["total"] == 3
    assert [(i["application_name"], i["environment"], i["at"][:10]) for i in page["items"]] == [
        ("Live", "production", "2025-03-05"), (None, "sandbox", "2025-03-02"), ("Try-out", "sandbox", "2025-03-01")]
    assert page["items"][0]["application_id"] == str(live_app.id) and page["items"][0]["api_id"] == str(API)

    sandbox = (await admin.get("/admin/api/usage/first-calls",
                               params={"partner_id": str(partner.id), "environment": "sandbox",
                                       "from": "2025-03-01T12:00:00Z"})).json()
    assert [i["application_id"] for i in sandbox["items"]] == [str(deleted_app)]


async def test_validation_errors_name_the_field(admin: httpx.AsyncClient) -> None:
    reversed_range = await admin.get("/admin/api/usage", params={"from": "2025-03-02T00:00:00Z",
                                                                 "to": "2025-03-01T00:00:00Z"})
    assert reversed_range.status_code == 422
    assert field_errors(reversed_range) == {"query.from": "must not be after `to`"}
    for path in ("/admin/api/usage/denials", "/admin/api/usage/first-calls"):
        answer = await admin.get(path, params={"from": "2025-03-02T00:00:00Z", "to": "2025-03-01T00:00:00Z"})
        assert answer.status_code == 422 and "query.from" in field_errors(answer)

    bad = await admin.get("/admin/api/usage", params={"granularity": "week", "to": "yesterday",
                                                      "metric": "hits"})
    assert bad.status_code == 422
    assert set(field_errors(bad)) == {"query.granularity", "query.to", "query.metric"}

    unknown = await admin.get("/admin/api/usage", params={"group_by": "partner,planet"})
    assert unknown.status_code == 422
    assert "planet" in field_errors(unknown)["query.group_by"]

    # Valid in its own zone, but before year 1 in UTC.
    too_early = await admin.get("/admin/api/usage", params={"from": "0001-01-01T00:00:00+05:00"})
    assert too_early.status_code == 422 and "query.from" in field_errors(too_early)

    environment = await admin.get("/admin/api/usage/first-calls", params={"environment": "staging"})
    assert environment.status_code == 422 and "query.environment" in field_errors(environment)
    top = await admin.get("/admin/api/usage/denials", params={"top": 0})
    assert top.status_code == 422 and "query.top" in field_errors(top)


async def test_staff_only(anon: httpx.AsyncClient, base_url: str, factory: Factory) -> None:
    for path in ("/admin/api/usage", "/admin/api/usage/denials", "/admin/api/usage/first-calls"):
        assert (await anon.get(path)).status_code == 401
    viewer = await factory.admin_token(StaffRole.viewer)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {viewer}"}) as client:
        assert (await client.get("/admin/api/usage")).status_code == 200
