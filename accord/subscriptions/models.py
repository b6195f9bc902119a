"""A partner's subscription to a plan of a product, with its history."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Entity


class SubscriptionState(enum.StrEnum):
    pending = "pending"  # waiting for approval
    active = "active"
    suspended = "suspended"
    cancelled = "cancelled"
    rejected = "rejected"


class Subscription(Entity):
    __tablename__ = "subscriptions"

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"), index=True)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"), index=True)
    state: Mapped[SubscriptionState] = mapped_column(default=SubscriptionState.pending)
    trial_ends_at: Mapped[datetime | None] = mapped_column()
    activated_at: Mapped[datetime | None] = mapped_column()
    cancelled_at: Mapped[datetime | None] = mapped_column()


class SubscriptionChange(Entity):
    """One entry per state or plan change; the subscription's history."""

    __tablename__ = "subscription_changes"

    subscription_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True)
    from_plan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    to_plan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    from_state: Mapped[SubscriptionState | None] = mapped_column()
    to_state: Mapped[SubscriptionState] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
