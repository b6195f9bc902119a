"""API shapes for the email outbox (`/admin/api/emails`)."""
from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from accord.core.schemas import ReadModel
from accord.notifications.models import EmailStatus


class EmailRead(ReadModel):
    id: uuid.UUID
    to: str
    subject: str
    template: str
    event_id: str | None = Field(description="The event that caused it; null for mail sent directly "
                                             "(invitations, email verification, password reset)")
    status: EmailStatus
    attempts: int
    next_attempt_at: datetime = Field(description="When a queued message is tried next")
    last_error: str
    sent_at: datetime | None
    created_at: datetime


class EmailDetail(EmailRead):
    text_body: str
    html_body: str | None
    redacted: bool = Field(description="True when single-use tokens in the bodies are hidden: only the owner "
                                       "and admin roles see them")
