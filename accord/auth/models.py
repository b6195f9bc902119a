"""Admin API tokens: hashed bearer tokens carrying a staff role."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Entity
from accord.users.models import StaffRole


class AdminToken(Entity):
    __tablename__ = "admin_tokens"

    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[StaffRole] = mapped_column(default=StaffRole.admin)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
