"""The email outbox: every message is a row, queued in the transaction that caused it.

`accord.notifications.dispatcher` sends due rows over SMTP, retrying with exponential
backoff; a worker claims a row with a lease (`claimed_by`, `claimed_until`) so several
workers never send the same message at once.
"""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.clock import utcnow
from accord.core.db import Entity


class EmailStatus(enum.StrEnum):
    queued = "queued"  # waiting for its next attempt (or being sent now)
    sent = "sent"  # the SMTP server accepted it (or embedded mode logged it)
    failed = "failed"  # refused for good, or every attempt failed; not retried again


class EmailMessage(Entity):
    __tablename__ = "email_messages"
    # The dispatcher's claim query: queued messages that are due, soonest first.
    __table_args__ = (Index("ix_email_messages_due", "status", "next_attempt_at"),)

    to: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str] = mapped_column(String(100), index=True)
    # The event that caused it; None for mail queued directly (invitations, password resets).
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"), index=True)
    status: Mapped[EmailStatus] = mapped_column(default=EmailStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A worker's lease: while `claimed_until` is in the future no other worker takes the message.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column()
