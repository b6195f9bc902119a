"""Plans on a product: limits, disabled methods, publication, approval and pricing."""
from __future__ import annotations

import enum
import uuid
from decimal import Decimal

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Base, Entity


class Period(enum.StrEnum):
    """Limit windows, calendar-aligned in UTC (weeks start on Monday)."""

    second = "second"
    minute = "minute"
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"
    year = "year"
    eternity = "eternity"


class Plan(Entity):
    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("product_id", "slug"),)

    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    # Staff-only remarks; never part of a partner-facing shape.
    notes: Mapped[str] = mapped_column(Text, default="")
    published: Mapped[bool] = mapped_column(default=True)
    approval_required: Mapped[bool] = mapped_column(default=False)
    is_default: Mapped[bool] = mapped_column(default=False)
    trial_days: Mapped[int] = mapped_column(Integer, default=0)
    # None allows every HTTP method; otherwise only these verbs (e.g. ["GET"] for a read-only trial).
    allowed_http_methods: Mapped[list[str] | None] = mapped_column(JSON)
    # The lowest program tier (by rank) that may subscribe; None = any tier.
    min_tier_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tiers.id", ondelete="SET NULL"))
    setup_fee: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    monthly_fee: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    currency: Mapped[str] = mapped_column(String(3), default="USD")


class PlanLimit(Entity):
    __tablename__ = "plan_limits"
    __table_args__ = (UniqueConstraint("plan_id", "metric_id", "period"),)

    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    metric_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"))
    period: Mapped[Period] = mapped_column()
    value: Mapped[int] = mapped_column(BigInteger)


class PlanDisabledMetric(Base):
    """A method switched off in this plan: calls mapped to it are refused."""

    __tablename__ = "plan_disabled_metrics"

    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    metric_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"), primary_key=True)


class PlanPriceTier(Entity):
    """Per-unit pricing of a metric between `from_units` and `to_units` (None = no upper bound)."""

    __tablename__ = "plan_price_tiers"

    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    metric_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("metrics.id", ondelete="CASCADE"))
    from_units: Mapped[int] = mapped_column(BigInteger, default=0)
    to_units: Mapped[int | None] = mapped_column(BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 6))
