"""Announcements and each user's choice to get them by email."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.clock import utcnow
from accord.core.db import Base, Entity


class AnnouncementStatus(enum.StrEnum):
    """draft → published → archived; only drafts can be deleted."""

    draft = "draft"
    published = "published"
    archived = "archived"


class Announcement(Entity):
    """News for partners. `updated_at` also moves when a published announcement is edited.

    The audience filter is three lists; an empty list does not narrow (every tier, every
    type, every audience). A partner is addressed when it passes all three.
    """

    __tablename__ = "announcements"

    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")  # Markdown, stored and served as given
    tier_ids: Mapped[list[Any]] = mapped_column(default=list)  # tier ids as strings
    partner_types: Mapped[list[Any]] = mapped_column(default=list)  # PartnerType values
    audiences: Mapped[list[Any]] = mapped_column(default=list)  # Audience values
    status: Mapped[AnnouncementStatus] = mapped_column(default=AnnouncementStatus.draft, index=True)
    published_at: Mapped[datetime | None] = mapped_column(index=True)
    archived_at: Mapped[datetime | None] = mapped_column()
    author: Mapped[str] = mapped_column(String(320), default="")  # the label of the actor who created it


class AnnouncementEmailOptIn(Base):
    """A user's choice to receive announcements by email. No row means not opted in."""

    __tablename__ = "announcement_email_opt_ins"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    opted_in: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
