"""Partner organisations and the program's ordered tiers."""
from __future__ import annotations

import enum
import uuid
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accord.catalog.models import Visibility
from accord.core.db import Entity


class PartnerType(enum.StrEnum):
    developer = "developer"
    agency = "agency"
    consulting = "consulting"
    technology = "technology"
    integration = "integration"
    franchise = "franchise"
    reseller = "reseller"
    affiliate = "affiliate"
    white_label = "white-label"
    academic = "academic"
    non_profit = "non-profit"
    government = "government"
    contractor = "contractor"
    internal = "internal"


class Audience(enum.StrEnum):
    """Which API visibility tiers a partner may see (not its program tier)."""

    internal = "internal"  # internal teams: internal, partner, public and open APIs
    partner = "partner"  # approved partners: partner, public and open APIs
    public = "public"  # self-signed-up developers: public and open APIs


_VISIBLE_TO: dict[Audience, frozenset[Visibility]] = {
    Audience.internal: frozenset({Visibility.internal, Visibility.partner, Visibility.public, Visibility.open}),
    Audience.partner: frozenset({Visibility.partner, Visibility.public, Visibility.open}),
    Audience.public: frozenset({Visibility.public, Visibility.open}),
}


def visible_tiers(audience: Audience | str) -> frozenset[Visibility]:
    """The API and product visibility tiers a partner of this audience may see and use."""
    return _VISIBLE_TO[Audience(audience)]


class PartnerStatus(enum.StrEnum):
    """Moved between only by the explicit actions in `accord.partners.service` (see its docstring)."""

    pending = "pending"
    active = "active"
    suspended = "suspended"
    closed = "closed"


class Tier(Entity):
    """A program tier (e.g. Registered < Silver < Gold < Platinum), ordered by rank."""

    __tablename__ = "tiers"

    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    rank: Mapped[int] = mapped_column(Integer, unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class Partner(Entity):
    __tablename__ = "partners"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    type: Mapped[PartnerType] = mapped_column(default=PartnerType.developer)
    audience: Mapped[Audience] = mapped_column(default=Audience.public)
    status: Mapped[PartnerStatus] = mapped_column(default=PartnerStatus.pending)
    tier_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"), index=True)
    website: Mapped[str] = mapped_column(String(500), default="")
    contact_name: Mapped[str] = mapped_column(String(200), default="")
    contact_email: Mapped[str] = mapped_column(String(320), default="")
    contact_phone: Mapped[str] = mapped_column(String(50), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    # Why the partner was last suspended or closed; staff-only, like `notes`.
    status_reason: Mapped[str] = mapped_column(Text, default="")
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
