"""API shapes for the event catalog and the event log."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from accord.core.schemas import ReadModel


class EventTypeRead(ReadModel):
    name: str
    description: str
    subject: str | None
    emails: list[str]
    payload_schema: dict[str, Any]


class EventRead(ReadModel):
    id: str
    seq: int
    type: str
    partner_id: uuid.UUID | None
    subject_type: str
    subject_id: str
    created_at: datetime
    data: dict[str, Any]
