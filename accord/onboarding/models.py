"""The onboarding path: its stages, where each partner is on it, and how it got there.

Stages are reached from facts (an acceptance, an application, a first call, a
request and its decision, traffic over time), never by hand, except manual stages,
which staff mark. Every move is a `StageTransition` stamped with the time of the
fact that caused it. `PartnerOnboarding` is the current position of each partner,
one row each, kept for fast funnel queries.
"""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, deferred, mapped_column

from accord.core.clock import utcnow
from accord.core.db import Base, Entity


class StageKind(enum.StrEnum):
    builtin = "builtin"  # reached from facts; fixed order
    manual = "manual"  # reached when staff mark it


class OnboardingStatus(enum.StrEnum):
    progressing = "progressing"
    inactive = "inactive"
    churned = "churned"


class OnboardingStage(Base):
    __tablename__ = "onboarding_stages"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[StageKind] = mapped_column(default=StageKind.builtin)
    # A partner longer than this in the stage is stuck (once per stage entry: partner.stuck and a nudge).
    stuck_after_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PartnerOnboarding(Base):
    __tablename__ = "partner_onboarding"
    __table_args__ = (Index("ix_partner_onboarding_stage_status", "stage_key", "status"),)

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True)
    stage_key: Mapped[str] = mapped_column(String(64))  # the furthest stage reached
    stage_entered_at: Mapped[datetime] = mapped_column()
    status: Mapped[OnboardingStatus] = mapped_column(default=OnboardingStatus.progressing)
    status_since: Mapped[datetime] = mapped_column()
    last_call_at: Mapped[datetime | None] = mapped_column()  # the latest admitted call (minute resolution)
    stuck_since: Mapped[datetime | None] = mapped_column()  # set when partner.stuck was emitted for this stage
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StageTransition(Base):
    __tablename__ = "stage_transitions"
    __table_args__ = (Index("ix_stage_transitions_partner_at", "partner_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    from_stage: Mapped[str | None] = mapped_column(String(64))
    to_stage: Mapped[str] = mapped_column(String(64), index=True)  # a stage key, "inactive" or "churned"
    at: Mapped[datetime] = mapped_column()  # when the fact happened
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    cause: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(200), default="system")


class StageMark(Base):
    """Staff marked a manual stage as passed for a partner."""

    __tablename__ = "onboarding_stage_marks"

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True)
    stage_key: Mapped[str] = mapped_column(ForeignKey("onboarding_stages.key", ondelete="CASCADE"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    marked_by: Mapped[str] = mapped_column(String(200), default="")
    note: Mapped[str] = mapped_column(Text, default="")


class AccessRequestState(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    changes_requested = "changes_requested"
    withdrawn = "withdrawn"


class ProductionAccessRequest(Entity):
    __tablename__ = "production_access_requests"
    __table_args__ = (Index("ix_production_access_requests_state_created", "state", "created_at"),)

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    application_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("applications.id", ondelete="SET NULL"))
    product_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    use_case: Mapped[str] = mapped_column(Text)
    expected_volume: Mapped[str] = mapped_column(String(200), default="")
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[AccessRequestState] = mapped_column(default=AccessRequestState.pending)
    plan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("subscriptions.id", ondelete="SET NULL"))
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(200), default="")  # staff-only
    decided_at: Mapped[datetime | None] = mapped_column()
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)  # (re)submitted: when the SLA clock started


class EvidenceKind(enum.StrEnum):
    text = "text"
    link = "link"
    file = "file"


class ChecklistItem(Entity):
    """One thing partners of a tier or type (or every partner: both NULL) must show evidence of."""

    __tablename__ = "checklist_items"

    label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    tier_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tiers.id", ondelete="CASCADE"), index=True)
    partner_type: Mapped[str | None] = mapped_column(String(32))
    evidence_kind: Mapped[EvidenceKind] = mapped_column(default=EvidenceKind.text)
    position: Mapped[int] = mapped_column(Integer, default=0)


class ChecklistEntry(Entity):
    """A partner's evidence for one item, and the staff check of it."""

    __tablename__ = "checklist_entries"
    __table_args__ = (UniqueConstraint("item_id", "partner_id"),)

    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("checklist_items.id", ondelete="CASCADE"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str] = mapped_column(String(2000), default="")
    file_name: Mapped[str] = mapped_column(String(255), default="")
    file_type: Mapped[str] = mapped_column(String(200), default="")
    file_size: Mapped[int] = mapped_column(Integer, default=0)
    file_data: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))  # read only for downloads
    submitted_at: Mapped[datetime | None] = mapped_column()
    submitted_by: Mapped[str] = mapped_column(String(200), default="")
    checked_at: Mapped[datetime | None] = mapped_column()
    checked_by: Mapped[str] = mapped_column(String(200), default="")


class OnboardingWatermark(Base):
    """How far the sweeper has read a change feed (the event outbox, usage minutes)."""

    __tablename__ = "onboarding_watermarks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
