"""People: staff and partner members are both users; sessions are bearer tokens."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.db import Entity


class StaffRole(enum.StrEnum):
    """Program-team roles, most to least powerful."""

    owner = "owner"
    admin = "admin"
    partner_manager = "partner-manager"
    viewer = "viewer"


class User(Entity):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    staff_role: Mapped[StaffRole | None] = mapped_column()
    is_active: Mapped[bool] = mapped_column(default=True)
    email_verified_at: Mapped[datetime | None] = mapped_column()
    last_login_at: Mapped[datetime | None] = mapped_column()
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)


class UserSession(Entity):
    """A login: the bearer token a user presents to the partner API (hash only)."""

    __tablename__ = "user_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class TokenPurpose(enum.StrEnum):
    verify_email = "verify-email"
    reset_password = "reset-password"


class UserToken(Entity):
    """A single-use, expiring token mailed to a user (email verification, password reset); hash only."""

    __tablename__ = "user_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[TokenPurpose] = mapped_column()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    # Set when the token is used, or when a newer token of the same purpose replaces it.
    used_at: Mapped[datetime | None] = mapped_column()


class LoginFailure(Entity):
    """A failed sign-in, kept for the throttling window (accord.users.throttle).

    The account is a keyed hash of the email as it was typed (normalised), so an address
    that is no account, or a mistyped one, is not stored readable."""

    __tablename__ = "login_failures"

    account_key: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64), index=True)
    failed_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (Index("ix_login_failures_account_address", "account_key", "address"),)
