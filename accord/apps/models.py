"""Applications per environment, the subscriptions they use, and their credentials."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Base, Entity


class Environment(enum.StrEnum):
    sandbox = "sandbox"
    production = "production"


class ApplicationState(enum.StrEnum):
    pending = "pending"
    live = "live"
    suspended = "suspended"


class CredentialKind(enum.StrEnum):
    api_key = "api-key"  # a single bearer secret
    app_key = "app-key"  # a secret presented together with the application's public app id


class Application(Entity):
    __tablename__ = "applications"

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    environment: Mapped[Environment] = mapped_column()
    state: Mapped[ApplicationState] = mapped_column(default=ApplicationState.live)
    # Public identifier used with app keys (app id + app key authentication).
    app_id: Mapped[str] = mapped_column(String(64), unique=True)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApplicationSubscription(Base):
    __tablename__ = "application_subscriptions"

    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True
    )


class Credential(Entity):
    """A secret stored as keyed hash + last four characters; the secret itself is shown once."""

    __tablename__ = "credentials"

    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"), index=True)
    kind: Mapped[CredentialKind] = mapped_column(default=CredentialKind.api_key)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    rotated_from_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("credentials.id", ondelete="SET NULL"))
    imported: Mapped[bool] = mapped_column(default=False)
    # When `credential.expiring_soon` was emitted for the current expiry (reset when the expiry changes).
    expiry_notified_at: Mapped[datetime | None] = mapped_column()
