"""API shapes of the funnel report."""
from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class Durations(BaseModel):
    """A distribution of durations, in seconds (percentiles interpolated like SQL `percentile_cont`)."""

    count: int = Field(description="How many durations were measured")
    median_seconds: float | None
    p90_seconds: float | None


class StageFigures(BaseModel):
    key: str
    name: str
    position: int
    kind: str
    current: int = Field(description="Partners at this stage now and progressing (not inactive or churned)")
    reached: int = Field(description="Partners that reached this stage or a later one")
    conversion: float | None = Field(description="reached / reached of the previous stage (null for the first "
                                                 "stage, or when the previous stage has no partner)")
    time_in_stage: Durations = Field(description="From entering this stage to entering the next one reached, for "
                                                 "partners that moved on")
    stuck_after_days: int | None
    stuck: int = Field(description="Partners in this stage for longer than stuck_after_days")


class FunnelFilters(BaseModel):
    partner_type: str | None
    tier_id: uuid.UUID | None
    cohort: str | None = Field(description="Sign-up month, YYYY-MM (UTC)")


class StuckPartner(BaseModel):
    partner_id: uuid.UUID
    slug: str
    name: str
    stage: str
    stage_entered_at: datetime
    days_in_stage: int
    stuck_after_days: int


class InactivePartner(BaseModel):
    partner_id: uuid.UUID
    slug: str
    name: str
    stage: str = Field(description="The furthest stage reached before going quiet")
    inactive_since: datetime
    last_call_at: datetime | None


class StuckList(BaseModel):
    total: int
    items: list[StuckPartner] = Field(description="The longest stuck first, up to `list_limit`")


class InactiveList(BaseModel):
    total: int
    items: list[InactivePartner] = Field(description="The longest inactive first, up to `list_limit`")


class FunnelReport(BaseModel):
    generated_at: datetime
    filters: FunnelFilters
    partners: int = Field(description="Partners in the report (after the filters)")
    stages: list[StageFigures]
    inactive: int
    churned: int
    time_to_first_sandbox_call: Durations = Field(description="From registration to each partner's first admitted "
                                                              "sandbox call")
    time_to_first_production_call: Durations = Field(description="From registration to each partner's first admitted "
                                                                 "production call")
    stuck_partners: StuckList
    inactive_partners: InactiveList
