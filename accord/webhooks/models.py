"""Webhook endpoints, their signing secrets, and every delivery and attempt made to them.

An endpoint belongs to the provider (`partner_id` is None: it may receive every event)
or to one partner (it receives only events whose `partner_id` is that partner). The
dispatcher (`accord.webhooks.dispatcher`) turns each event into one delivery per
matching endpoint and makes attempts until one succeeds or three days have passed.
"""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.clock import utcnow
from accord.core.db import Base, Entity


class WebhookEndpoint(Entity):
    __tablename__ = "webhook_endpoints"

    # None: the provider's own endpoint. Otherwise the partner that registered it.
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(Text, default="")
    # The event types it receives; an empty list means every type.
    event_types: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_at: Mapped[datetime | None] = mapped_column()
    disabled_reason: Mapped[str] = mapped_column(String(500), default="")


class WebhookSecret(Base):
    """A signing secret, encrypted at rest (see `accord.webhooks.sealing`).

    Kept apart from the endpoint so that audit snapshots and event payloads of the
    endpoint can never carry it. An endpoint has one current secret (`expires_at` is
    None) and, during a rotation's overlap, the previous ones until their `expires_at`.
    """

    __tablename__ = "webhook_secrets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    sealed: Mapped[str] = mapped_column(String(500))
    last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # waiting for its next attempt (or being attempted now)
    succeeded = "succeeded"  # an attempt got a 2xx answer
    failed = "failed"  # every attempt for three days failed; not retried again


class DeliveryKind(enum.StrEnum):
    event = "event"  # made by the dispatcher when the event happened
    redelivery = "redelivery"  # asked for by hand for one event
    replay = "replay"  # asked for by hand for a time range


class WebhookDelivery(Entity):
    """One event to be delivered to one endpoint; retried until it succeeds or gives up."""

    __tablename__ = "webhook_deliveries"
    # The dispatcher's claim query: due, unfinished deliveries, soonest first.
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
                                                   index=True)
    event_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                           ForeignKey("events.seq", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)  # the webhook-id header
    event_type: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[DeliveryKind] = mapped_column(default=DeliveryKind.event)
    status: Mapped[DeliveryStatus] = mapped_column(default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)  # None once finished
    # A worker's lease: while `claimed_until` is in the future no other worker takes the delivery;
    # a worker killed mid-attempt leaves a lease that simply runs out.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column()
    last_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    finished_at: Mapped[datetime | None] = mapped_column()


class WebhookAttempt(Base):
    """One HTTP request made for a delivery, as it went."""

    __tablename__ = "webhook_attempts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                                                   index=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
                                                   index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1 for a delivery's first attempt
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    succeeded: Mapped[bool] = mapped_column(default=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    response_excerpt: Mapped[str] = mapped_column(Text, default="")  # the first KB of the answer
    error: Mapped[str] = mapped_column(Text, default="")  # why it failed, when there was no 2xx
    worker: Mapped[str] = mapped_column(String(200), default="")
