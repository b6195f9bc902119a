"""The transactional outbox: every event is a row written in the same transaction as its change."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.clock import utcnow
from accord.core.db import Base


class Event(Base):
    __tablename__ = "events"

    # The sequence number receivers order by; assigned by the database, gap-free only per commit order.
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)  # "evt_…": the webhook-id of every delivery
    type: Mapped[str] = mapped_column(String(100), index=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    subject_type: Mapped[str] = mapped_column(String(64), default="")
    subject_id: Mapped[str] = mapped_column(String(64), default="")
    data: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Set by the webhook dispatcher once deliveries to the matching endpoints have been created.
    fanned_out_at: Mapped[datetime | None] = mapped_column(index=True)
    # Set by the notification dispatcher once the emails this event causes have been queued.
    notified_at: Mapped[datetime | None] = mapped_column(index=True)
