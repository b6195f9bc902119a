"""The funnel report over real HTTP, on a small hand-built program where every figure is known.

Five partners (now = 2026-03-20 12:00 UTC; the default stages, thresholds 7/7/7/14/–/14/–/–):
- A technology, gold, signed up 01-05: the whole path to `active`;
- B technology, no tier, 02-01: stopped at `sandbox_access` on 02-05 (stuck: 7 days);
- C agency, 02-10: still `registered` (stuck);
- D technology, gold, 01-20: reached `live` 02-01 (skipping the production request stages),
  inactive since 03-05;
- E agency, 03-18: never placed by the onboarding refresh (no row: counts as registered).
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Environment
from accord.core.clock import clock
from accord.onboarding.models import OnboardingStatus, PartnerOnboarding, StageTransition
from accord.partners.models import Partner, PartnerType
from accord.usage.models import FirstCall
from tests.factories import Factory

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
DAY = 86400.0
PATH = ["registered", "terms_accepted", "sandbox_access", "first_sandbox_call", "production_requested",
        "production_approved", "live", "active"]


def d(month: int, day: int) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.resume()


async def _walk(session: AsyncSession, partner: Partner, steps: list[tuple[str, datetime]], *,
                status: OnboardingStatus = OnboardingStatus.progressing, status_since: datetime | None = None,
                last_call_at: datetime | None = None) -> None:
    previous = None
    for stage, at in steps:
        session.add(StageTransition(partner_id=partner.id, from_stage=previous, to_stage=stage, at=at,
                                    recorded_at=at, cause="test"))
        previous = stage
    stage, entered = steps[-1]
    if status != OnboardingStatus.progressing:
        session.add(StageTransition(partner_id=partner.id, from_stage=stage, to_stage=status.value,
                                    at=status_since, recorded_at=status_since, cause="test"))
    session.add(PartnerOnboarding(partner_id=partner.id, stage_key=stage, stage_entered_at=entered, status=status,
                                  status_since=status_since or entered, last_call_at=last_call_at))
    await session.flush()


async def _first_call(factory: Factory, partner: Partner, environment: Environment, at: datetime) -> None:
    app = await factory.application(partner, environment)
    await factory._add(FirstCall(application_id=app.id, partner_id=partner.id, environment=environment.value, at=at))


@pytest.fixture
async def program(session: AsyncSession, factory: Factory, frozen: None) -> dict[str, Partner]:
    gold = await factory.tier("Gold")
    a = await factory.partner(slug="a", type=PartnerType.technology, tier_id=gold.id, created_at=d(1, 5))
    b = await factory.partner(slug="b", type=PartnerType.technology, created_at=d(2, 1))
    c = await factory.partner(slug="c", type=PartnerType.agency, created_at=d(2, 10))
    dd = await factory.partner(slug="d", type=PartnerType.technology, tier_id=gold.id, created_at=d(1, 20))
    e = await factory.partner(slug="e", type=PartnerType.agency, created_at=d(3, 18))
    await _walk(session, a, list(zip(PATH, [d(1, 5), d(1, 6), d(1, 8), d(1, 9), d(1, 13), d(1, 14), d(1, 15),
                                            d(1, 22)])))
    await _walk(session, b, [("registered", d(2, 1)), ("terms_accepted", d(2, 4)), ("sandbox_access", d(2, 5))])
    await _walk(session, c, [("registered", d(2, 10))])
    await _walk(session, dd, [("registered", d(1, 20)), ("terms_accepted", d(1, 21)), ("sandbox_access", d(1, 23)),
                              ("first_sandbox_call", d(1, 25)), ("live", d(2, 1))],
                status=OnboardingStatus.inactive, status_since=d(3, 5), last_call_at=d(3, 4))
    await _first_call(factory, a, Environment.sandbox, d(1, 9))
    await _first_call(factory, a, Environment.production, d(1, 15))
    await _first_call(factory, dd, Environment.sandbox, d(1, 25))
    await _first_call(factory, dd, Environment.sandbox, d(1, 28))  # a second app: the partner's first call counts
    await _first_call(factory, dd, Environment.production, d(2, 1))
    return {"a": a, "b": b, "c": c, "d": dd, "e": e, "gold": gold}


def _stages(body: dict) -> dict[str, dict]:
    return {stage["key"]: stage for stage in body["stages"]}


async def test_every_figure_of_a_known_program(admin: httpx.AsyncClient, program: dict) -> None:
    response = await admin.get("/admin/api/funnel")
    assert response.status_code == 200, response.text
    body = response.json()
    stages = _stages(body)
    assert [s["key"] for s in body["stages"]] == PATH
    assert body["partners"] == 5 and body["inactive"] == 1 and body["churned"] == 0
    assert {k: s["current"] for k, s in stages.items()} == dict(zip(PATH, [2, 0, 1, 0, 0, 0, 0, 1]))
    assert {k: s["reached"] for k, s in stages.items()} == dict(zip(PATH, [5, 3, 3, 2, 2, 2, 2, 1]))
    assert [s["conversion"] for s in body["stages"]] == [None, 0.6, 1.0, 0.6667, 1.0, 1.0, 1.0, 0.5]

    def times(key: str) -> tuple[int, float | None, float | None]:
        t = stages[key]["time_in_stage"]
        return t["count"], t["median_seconds"], t["p90_seconds"] and pytest.approx(t["p90_seconds"])

    # registered: A 1 d, B 3 d, D 1 d (C never left it): [1, 1, 3] → median 1, p90 1 + 0.8 × 2.
    assert times("registered") == (3, 1 * DAY, 2.6 * DAY)
    assert times("terms_accepted") == (3, 2 * DAY, 2 * DAY)
    assert times("sandbox_access") == (2, 1.5 * DAY, 1.9 * DAY)
    # D went from its first sandbox call straight to live (7 d); A to its production request (4 d).
    assert times("first_sandbox_call") == (2, 5.5 * DAY, 6.7 * DAY)
    assert times("production_requested") == (1, 1 * DAY, 1 * DAY)
    assert times("live") == (1, 7 * DAY, 7 * DAY)  # D's move to inactive is not a stage
    assert times("active") == (0, None, None)

    assert body["time_to_first_sandbox_call"] == {"count": 2, "median_seconds": 4.5 * DAY,
                                                  "p90_seconds": pytest.approx(4.9 * DAY)}
    assert body["time_to_first_production_call"] == {"count": 2, "median_seconds": 11 * DAY,
                                                     "p90_seconds": pytest.approx(11.8 * DAY)}

    assert {k: s["stuck"] for k, s in stages.items() if s["stuck"]} == {"registered": 1, "sandbox_access": 1}
    stuck = body["stuck_partners"]
    assert stuck["total"] == 2
    assert [(p["slug"], p["stage"], p["days_in_stage"], p["stuck_after_days"]) for p in stuck["items"]] == \
        [("b", "sandbox_access", 43, 7), ("c", "registered", 38, 7)]
    inactive = body["inactive_partners"]
    assert inactive["total"] == 1
    assert [(p["slug"], p["stage"], p["inactive_since"][:10], p["last_call_at"][:10]) for p in inactive["items"]] \
        == [("d", "live", "2026-03-05", "2026-03-04")]


async def test_a_stage_threshold_changes_who_is_stuck(admin: httpx.AsyncClient, session: AsyncSession,
                                                      program: dict) -> None:
    from accord.onboarding.models import OnboardingStage
    from accord.onboarding.stages import ensure_stages

    await ensure_stages(session)
    stage = await session.get(OnboardingStage, "registered")
    stage.stuck_after_days = 40  # C has been registered for 38 days
    await session.flush()
    body = (await admin.get("/admin/api/funnel")).json()
    assert [p["slug"] for p in body["stuck_partners"]["items"]] == ["b"]
    assert _stages(body)["registered"]["stuck"] == 0


async def test_filters_by_type_tier_and_cohort(admin: httpx.AsyncClient, program: dict) -> None:
    agency = (await admin.get("/admin/api/funnel", params={"partner_type": "agency"})).json()
    assert agency["partners"] == 2 and agency["filters"]["partner_type"] == "agency"
    assert [s["reached"] for s in agency["stages"]][:2] == [2, 0]
    assert [s["conversion"] for s in agency["stages"]][:2] == [None, 0.0]
    assert [p["slug"] for p in agency["stuck_partners"]["items"]] == ["c"]
    assert agency["time_to_first_sandbox_call"]["count"] == 0

    gold = (await admin.get("/admin/api/funnel", params={"tier_id": str(program["gold"].id)})).json()
    assert gold["partners"] == 2 and gold["inactive"] == 1
    assert _stages(gold)["active"]["current"] == 1 and _stages(gold)["live"]["reached"] == 2
    assert gold["time_to_first_production_call"]["median_seconds"] == 11 * DAY

    february = (await admin.get("/admin/api/funnel", params={"cohort": "2026-02"})).json()
    assert february["partners"] == 2
    assert {p["slug"] for p in february["stuck_partners"]["items"]} == {"b", "c"}
    assert _stages(february)["registered"]["time_in_stage"]["median_seconds"] == 3 * DAY

    empty = (await admin.get("/admin/api/funnel", params={"cohort": "2025-12"})).json()
    assert empty["partners"] == 0 and all(s["reached"] == 0 for s in empty["stages"])


async def test_lists_are_capped_but_counted(admin: httpx.AsyncClient, program: dict) -> None:
    body = (await admin.get("/admin/api/funnel", params={"list_limit": 1})).json()
    assert body["stuck_partners"]["total"] == 2 and [p["slug"] for p in body["stuck_partners"]["items"]] == ["b"]


@pytest.mark.parametrize("cohort", ["2026-13", "2026-3", "March", "0000-01"])
async def test_a_bad_cohort_names_the_field(admin: httpx.AsyncClient, cohort: str) -> None:
    response = await admin.get("/admin/api/funnel", params={"cohort": cohort})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "query.cohort"


async def test_the_funnel_needs_an_admin_token(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/admin/api/funnel")).status_code == 401


async def test_partners_never_placed_count_as_registered(admin: httpx.AsyncClient, factory: Factory,
                                                         frozen: None) -> None:
    await factory.partner(created_at=NOW - timedelta(days=1))
    body = (await admin.get("/admin/api/funnel")).json()
    assert body["partners"] == 1
    assert _stages(body)["registered"]["current"] == 1 and _stages(body)["terms_accepted"]["reached"] == 0
