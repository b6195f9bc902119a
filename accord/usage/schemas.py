"""API shapes for the usage reports."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime

from pydantic import Field

from accord.core.schemas import ReadModel


class Granularity(enum.StrEnum):
    minute = "minute"
    hour = "hour"
    day = "day"
    month = "month"


class UsageDimension(enum.StrEnum):
    """What `group_by` can split the buckets by."""

    partner = "partner"
    application = "application"
    api = "api"
    metric = "metric"
    status_class = "status_class"


class UsageBucket(ReadModel):
    start: datetime = Field(description="Start of the bucket (UTC), truncated to the granularity")
    partner_id: uuid.UUID | None = Field(None, description="Set when grouped by partner")
    application_id: uuid.UUID | None = Field(
        None, description="Set when grouped by application; null there for requests refused before an "
                          "application was known (unknown or missing credential)")
    api_id: uuid.UUID | None = Field(None, description="Set when grouped by API")
    metric_id: uuid.UUID | None = Field(None, description="Set when grouped by metric")
    status_class: str | None = Field(None, description="Set when grouped by status_class: 2xx, 3xx, 4xx or 5xx")
    count: int = Field(description="Requests (per metric: requests that matched the metric), denied ones included")
    denied: int = Field(description="Of `count`, the requests the gateway refused")
    units: int | None = Field(
        description="Per metric (a `metric` filter or grouping): the units admitted requests consumed "
                    "(the sum of the matched rules' deltas); null otherwise")
    latency_ms_avg: float = Field(description="Mean time the gateway took to answer, in milliseconds")
    latency_ms_max: float


class DenialCount(ReadModel):
    reason: str = Field(description="The denial's problem type slug, e.g. `limit-reached`")
    count: int


class PartnerDenialCount(ReadModel):
    partner_id: uuid.UUID | None = Field(description="Null for requests refused before a partner was known")
    reason: str
    count: int


class DenialReport(ReadModel):
    total: int
    by_reason: list[DenialCount] = Field(description="Most frequent first")
    by_partner: list[PartnerDenialCount] = Field(description="Most frequent first")


class FirstCallRead(ReadModel):
    application_id: uuid.UUID
    application_name: str | None = Field(description="Null if the application has since been deleted")
    partner_id: uuid.UUID | None
    api_id: uuid.UUID | None
    environment: str | None
    at: datetime = Field(description="When the application's first admitted (2xx/3xx) call was made")
