"""API shapes for plans (limits, disabled methods, pricing) and for products as partners see them."""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from accord.catalog.models import Visibility
from accord.core.schemas import ReadModel, Slug, WriteModel
from accord.plans.models import Period
from accord.products.schemas import MetricSelector, Notes, ProductApiRead, ProductMethodRead, Text, Title

HTTP_VERBS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HttpVerb = Annotated[str, StringConstraints(pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
UnitPrice = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=6)]
Units = Annotated[int, Field(ge=0, le=2**63 - 1)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(description="ISO 4217 code",
                                                                         examples=["USD"])]
TrialDays = Annotated[int, Field(ge=0, le=3650)]
AllowedHttpMethods = Annotated[list[HttpVerb] | None, Field(
    min_length=1, max_length=len(HTTP_VERBS),
    description="Only these HTTP methods may be called (e.g. [\"GET\"] for a read-only trial); null allows all")]


def _unique_verbs(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if len(set(value)) != len(value):
        raise ValueError("lists an HTTP method twice")
    return sorted(value, key=HTTP_VERBS.index)


# --- limits, disabled methods, price tiers --------------------------------

class LimitCreate(MetricSelector):
    period: Period
    value: Units = Field(description="Calls allowed per period; 0 blocks the metric")


class LimitUpdate(WriteModel):
    period: Period | None = None
    value: Units | None = None


class LimitsSet(WriteModel):
    limits: Annotated[list[LimitCreate], Field(max_length=1000)]


class LimitRead(ReadModel):
    id: uuid.UUID
    metric_id: uuid.UUID
    api: str = Field(description="Slug of the metric's API")
    metric: str = Field(description="System name of the metric")
    period: Period
    value: int


class DisabledMethodsSet(WriteModel):
    disabled_methods: Annotated[list[MetricSelector], Field(max_length=1000)]


class DisabledMethodRead(ReadModel):
    metric_id: uuid.UUID
    api: str
    metric: str


class PriceTierCreate(MetricSelector):
    """Per-unit price for units counted in [from_units, to_units) within the billing period."""

    from_units: Units = 0
    to_units: Units | None = Field(None, description="Exclusive upper bound; null = no upper bound")
    unit_price: UnitPrice


class PriceTiersSet(WriteModel):
    price_tiers: Annotated[list[PriceTierCreate], Field(max_length=1000)]


class PriceTierRead(ReadModel):
    id: uuid.UUID
    metric_id: uuid.UUID
    api: str
    metric: str
    from_units: int
    to_units: int | None
    unit_price: Decimal


# --- plans ------------------------------------------------------------------

class PlanCreate(WriteModel):
    """A whole plan in one request: its limits, disabled methods and price tiers inline."""

    name: Title
    slug: Slug
    description: Text = ""
    notes: Notes = ""
    published: bool = Field(True, description="Hidden plans are never listed to partners")
    approval_required: bool = False
    is_default: bool = Field(False, description="The plan used at sign-up; setting it unsets the product's "
                                                "other default. A product's first plan is always its default")
    trial_days: TrialDays = 0
    allowed_http_methods: AllowedHttpMethods = None
    min_tier_id: uuid.UUID | None = Field(None, description="Lowest program tier allowed to subscribe; null = any")
    setup_fee: Money = Decimal("0")
    monthly_fee: Money = Decimal("0")
    currency: Currency = "USD"
    limits: Annotated[list[LimitCreate], Field(max_length=1000)] = []
    disabled_methods: Annotated[list[MetricSelector], Field(max_length=1000)] = []
    price_tiers: Annotated[list[PriceTierCreate], Field(max_length=1000)] = []

    _verbs = field_validator("allowed_http_methods")(_unique_verbs)


class PlanUpdate(WriteModel):
    """Fields left out are unchanged; `limits`, `disabled_methods` and `price_tiers` replace the lists."""

    name: Title | None = None
    slug: Slug | None = None
    description: Text | None = None
    notes: Notes | None = None
    published: bool | None = None
    approval_required: bool | None = None
    is_default: bool | None = Field(None, description="Only `true`: make another plan the default to unset it")
    trial_days: TrialDays | None = None
    allowed_http_methods: AllowedHttpMethods = None
    min_tier_id: uuid.UUID | None = None
    setup_fee: Money | None = None
    monthly_fee: Money | None = None
    currency: Currency | None = None
    limits: Annotated[list[LimitCreate], Field(max_length=1000)] | None = None
    disabled_methods: Annotated[list[MetricSelector], Field(max_length=1000)] | None = None
    price_tiers: Annotated[list[PriceTierCreate], Field(max_length=1000)] | None = None

    _verbs = field_validator("allowed_http_methods")(_unique_verbs)


class TierSummary(ReadModel):
    id: uuid.UUID
    slug: str
    name: str
    rank: int


class PlanRead(ReadModel):
    id: uuid.UUID
    product_id: uuid.UUID
    name: str
    slug: str
    description: str
    notes: str
    published: bool
    approval_required: bool
    is_default: bool
    trial_days: int
    allowed_http_methods: list[str] | None
    min_tier_id: uuid.UUID | None
    min_tier: TierSummary | None
    setup_fee: Decimal
    monthly_fee: Decimal
    currency: str
    limits: list[LimitRead]
    disabled_methods: list[DisabledMethodRead]
    price_tiers: list[PriceTierRead]
    created_at: datetime
    updated_at: datetime


# --- what partners see -----------------------------------------------------

class PartnerLimitRead(ReadModel):
    api: str
    metric: str
    period: Period
    value: int


class PartnerMethodRead(ReadModel):
    api: str
    metric: str


class PartnerPriceTierRead(ReadModel):
    api: str
    metric: str
    from_units: int
    to_units: int | None
    unit_price: Decimal


class PartnerTierRead(ReadModel):
    slug: str
    name: str
    rank: int


class PartnerPlanRead(ReadModel):
    """A published plan as a partner sees it: no staff notes."""

    id: uuid.UUID
    name: str
    slug: str
    description: str
    is_default: bool
    approval_required: bool
    trial_days: int
    allowed_http_methods: list[str] | None
    min_tier: PartnerTierRead | None
    eligible: bool = Field(description="Whether the partner's program tier meets the plan's minimum tier")
    setup_fee: Decimal
    monthly_fee: Decimal
    currency: str
    limits: list[PartnerLimitRead]
    disabled_methods: list[PartnerMethodRead]
    price_tiers: list[PartnerPriceTierRead]


class PartnerProductRead(ReadModel):
    """A product as a partner sees it: its APIs, selected methods and published plans only."""

    id: uuid.UUID
    name: str
    slug: str
    description: str
    visibility: Visibility
    apis: list[ProductApiRead]
    methods: list[ProductMethodRead]
    plans: list[PartnerPlanRead]
