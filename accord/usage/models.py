"""Traffic counted by the gateway: per-minute usage counters and each application's first admitted call.

Written only by `accord.gateway.recorder` (batched upserts), read by the usage admin API.
The id columns carry no foreign keys on purpose: usage is history. An application,
API or metric deleted between a request and the recorder's next flush must not make
that flush fail (it would be retried forever), and deleting one must not erase what
it consumed.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Float, Identity, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Base


class UsageCount(Base):
    """Requests of one minute, aggregated per dimension.

    Every request is counted once in a *request row* (`metric_id` NULL) and once more
    in a *metric row* for each metric its mapping rules matched, where `units` adds up
    the rules' deltas. Totals of requests therefore read request rows only; totals of
    a metric read that metric's rows (never the two together, which would double count).
    """

    __tablename__ = "usage_counts"
    __table_args__ = (Index("ix_usage_counts_partner_minute", "partner_id", "minute"),
                      Index("ix_usage_counts_application_minute", "application_id", "minute"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True)
    # A digest of every dimension below: the conflict target of the recorder's upsert.
    # (A unique constraint over the columns themselves would not work: NULLs never conflict.)
    bucket_key: Mapped[str] = mapped_column(String(32), unique=True)
    minute: Mapped[datetime] = mapped_column(index=True)  # UTC, truncated to the minute
    partner_id: Mapped[uuid.UUID | None] = mapped_column()
    application_id: Mapped[uuid.UUID | None] = mapped_column()  # NULL: refused before an application was known
    api_id: Mapped[uuid.UUID | None] = mapped_column()
    metric_id: Mapped[uuid.UUID | None] = mapped_column()  # NULL: the request row
    environment: Mapped[str | None] = mapped_column(String(32))
    status_class: Mapped[str] = mapped_column(String(3))  # 2xx 3xx 4xx 5xx
    denial: Mapped[str] = mapped_column(String(64), default="")  # the gateway's denial reason; "" when admitted
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    units: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms_max: Mapped[float] = mapped_column(Float, default=0.0)


class FirstCall(Base):
    """The first admitted (2xx/3xx) call of an application: the end of the onboarding funnel."""

    __tablename__ = "first_calls"

    application_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    api_id: Mapped[uuid.UUID | None] = mapped_column()
    environment: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(index=True)
