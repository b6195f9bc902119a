"""Admin route of the funnel report: `GET /admin/api/funnel`."""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from accord.auth.deps import AdminDep
from accord.core.deps import SessionDep
from accord.core.errors import problem_responses
from accord.funnel import service
from accord.funnel.schemas import FunnelReport
from accord.partners.models import PartnerType

admin_router = APIRouter(responses=problem_responses(401, 403))


@admin_router.get(
    "/funnel", summary="The partner funnel: counts, conversion and time per onboarding stage, stuck and inactive "
                       "partners", responses=problem_responses(422))
async def funnel(session: SessionDep, _: AdminDep,
                 partner_type: Annotated[PartnerType | None, Query(description="Only partners of this type")] = None,
                 tier_id: Annotated[uuid.UUID | None, Query(description="Only partners of this tier")] = None,
                 cohort: Annotated[str | None, Query(max_length=7, description="Only partners that signed up in this "
                                                                               "month (YYYY-MM, UTC)")] = None,
                 list_limit: Annotated[int, Query(ge=0, le=1000, description="How many stuck and inactive partners "
                                                                             "to list (the totals count them all)")]
                 = 50) -> FunnelReport:
    return await service.funnel(session, service.Filters(partner_type, tier_id, cohort), list_limit=list_limit)
