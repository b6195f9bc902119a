"""API shapes for admin tokens."""
from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from accord.core.schemas import Name, ReadModel, WriteModel
from accord.users.models import StaffRole


class AdminTokenCreate(WriteModel):
    name: Name
    role: StaffRole = StaffRole.admin
    expires_at: datetime | None = Field(None, description="When the token stops working; none = never")


class AdminTokenRead(ReadModel):
    id: uuid.UUID
    name: str
    role: StaffRole
    last4: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class AdminTokenCreated(AdminTokenRead):
    token: str = Field(description="The secret; shown only in this answer")
