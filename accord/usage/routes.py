"""Admin routes for usage reports: `/admin/api/usage…` (read only; the gateway writes the counts)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from accord.apps.models import Environment
from accord.auth.deps import AdminDep
from accord.core.deps import SessionDep
from accord.core.errors import problem_responses
from accord.core.pagination import Page, PageDep
from accord.usage import service
from accord.usage.schemas import DenialReport, FirstCallRead, Granularity, UsageBucket, UsageDimension

admin_router = APIRouter(responses=problem_responses(401, 403))
REPORT_PROBLEMS = problem_responses(422)

From = Annotated[datetime | None, Query(alias="from", description="Inclusive; UTC if no zone is given")]
To = Annotated[datetime | None, Query(alias="to", description="Exclusive; UTC if no zone is given")]
GroupBy = Annotated[list[str], Query(
    max_length=10,
    description="Split the buckets by any of: " + ", ".join(d.value for d in UsageDimension)
                + ". Repeat the parameter or separate values with commas.")]


@admin_router.get(
    "/usage", summary="Traffic counted by the gateway, in time buckets", responses=REPORT_PROBLEMS,
    description="Requests per bucket (minute, hour, day or month, in UTC), optionally split by partner, "
                "application, API, metric or status class. With a `metric` filter or a `metric` grouping, "
                "each bucket counts the requests that matched the metric and the `units` they consumed. "
                "The gateway writes its counts about once a second.")
async def usage(session: SessionDep, _: AdminDep, page: PageDep,
                partner_id: uuid.UUID | None = None, application_id: uuid.UUID | None = None,
                api_id: uuid.UUID | None = None,
                metric: Annotated[uuid.UUID | None, Query(description="A metric id")] = None,
                since: From = None, until: To = None,
                granularity: Granularity = Granularity.day,
                group_by: GroupBy = []) -> Page[UsageBucket]:  # noqa: B006 - FastAPI copies defaults
    since, until = service.time_range(since, until)
    return await service.usage_buckets(session, page, granularity=granularity,
                                       group_by=service.dimensions(group_by), partner_id=partner_id,
                                       application_id=application_id, api_id=api_id, metric_id=metric,
                                       since=since, until=until)


@admin_router.get("/usage/denials", summary="Requests the gateway refused, by reason and by partner",
                  responses=REPORT_PROBLEMS)
async def denials(session: SessionDep, _: AdminDep, partner_id: uuid.UUID | None = None,
                  application_id: uuid.UUID | None = None, api_id: uuid.UUID | None = None,
                  since: From = None, until: To = None,
                  top: Annotated[int, Query(ge=1, le=1000, description="How many (partner, reason) pairs to "
                                                                         "list in `by_partner`")] = 100,
                  ) -> DenialReport:
    since, until = service.time_range(since, until)
    return await service.denial_report(session, partner_id=partner_id, application_id=application_id,
                                       api_id=api_id, since=since, until=until, top=top)


@admin_router.get("/usage/first-calls", summary="Applications' first admitted calls (the onboarding funnel)",
                  responses=REPORT_PROBLEMS)
async def first_calls(session: SessionDep, _: AdminDep, page: PageDep, partner_id: uuid.UUID | None = None,
                      environment: Environment | None = None, since: From = None,
                      until: To = None) -> Page[FirstCallRead]:
    since, until = service.time_range(since, until)
    return await service.first_calls(session, page, partner_id=partner_id, environment=environment,
                                     since=since, until=until)
