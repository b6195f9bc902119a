"""API shapes for subscriptions and their history."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from accord.core.schemas import ReadModel, ShortText, WriteModel
from accord.subscriptions.models import SubscriptionState


class SubscriptionCreate(WriteModel):
    """Staff subscribing a partner (hidden plans allowed)."""

    partner_id: uuid.UUID
    plan_id: uuid.UUID


class PartnerSubscriptionCreate(WriteModel):
    """A partner subscribing itself to a published plan."""

    plan_id: uuid.UUID


class ChangePlan(WriteModel):
    plan_id: uuid.UUID = Field(description="A plan of the same product")
    reason: ShortText = Field("", description="Why; kept in the subscription's history")


class Reason(WriteModel):
    reason: ShortText = Field("", description="Why; kept in the subscription's history")


class SubscriptionRead(ReadModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    product_id: uuid.UUID
    plan_id: uuid.UUID
    state: SubscriptionState
    trial_ends_at: datetime | None
    activated_at: datetime | None
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SubscriptionChangeRead(ReadModel):
    """One step of the history as a partner sees it (who did it is staff-only)."""

    id: uuid.UUID
    from_state: SubscriptionState | None
    to_state: SubscriptionState
    from_plan_id: uuid.UUID | None
    to_plan_id: uuid.UUID | None
    reason: str
    created_at: datetime


class SubscriptionChangeAdminRead(SubscriptionChangeRead):
    actor: str = Field(description="Who made the change")


class SubscriptionDetail(SubscriptionRead):
    history: list[SubscriptionChangeRead] = Field(description="Oldest first")

    @classmethod
    def of(cls, subscription: Any, history: list[Any]) -> "SubscriptionDetail":
        return cls(**SubscriptionRead.model_validate(subscription).model_dump(),
                   history=[SubscriptionChangeRead.model_validate(h) for h in history])


class SubscriptionAdminDetail(SubscriptionRead):
    history: list[SubscriptionChangeAdminRead] = Field(description="Oldest first")

    @classmethod
    def of(cls, subscription: Any, history: list[Any]) -> "SubscriptionAdminDetail":
        return cls(**SubscriptionRead.model_validate(subscription).model_dump(),
                   history=[SubscriptionChangeAdminRead.model_validate(h) for h in history])
