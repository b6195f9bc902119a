"""A partner's team: memberships with roles, and invitations to join."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from accord.core.clock import utcnow
from accord.core.db import Entity


class MemberRole(enum.StrEnum):
    partner_admin = "partner-admin"  # manages the team, apps and subscriptions
    developer = "developer"  # manages apps and credentials
    viewer = "viewer"  # reads only


class Membership(Entity):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("partner_id", "user_id"),)

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[MemberRole] = mapped_column(default=MemberRole.developer)


class InvitationStatus(enum.StrEnum):
    """Computed from the invitation's timestamps, never stored."""

    pending = "pending"
    accepted = "accepted"
    revoked = "revoked"
    expired = "expired"


class Invitation(Entity):
    """Single-use, expiring invitation; only the token's hash is kept."""

    __tablename__ = "invitations"

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[MemberRole] = mapped_column(default=MemberRole.developer)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    accepted_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    invited_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    @property
    def status(self) -> InvitationStatus:
        # Accepted and revoked are final; only a still-open invitation can run out.
        if self.accepted_at is not None:
            return InvitationStatus.accepted
        if self.revoked_at is not None:
            return InvitationStatus.revoked
        if self.expires_at <= utcnow():
            return InvitationStatus.expired
        return InvitationStatus.pending
