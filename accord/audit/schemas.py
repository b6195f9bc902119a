"""API shapes for the audit log."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from accord.core.schemas import ReadModel


class AuditEntryRead(ReadModel):
    seq: int
    at: datetime
    actor_kind: str
    actor_id: str
    actor_label: str
    action: str
    target_type: str
    target_id: str
    partner_id: uuid.UUID | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
