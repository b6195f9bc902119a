"""Agreements, their versions, the requirements that bind partners, and the acceptance record.

Acceptances are evidence: once written they are never updated or deleted by the
application (the ORM refuses it, see `_refuse_changes`), and nothing they point to
can be deleted under them (foreign keys RESTRICT).
"""
from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from accord.core.clock import utcnow
from accord.core.db import Base, Entity


class RequirementScope(enum.StrEnum):
    all = "all"  # every partner
    stage = "stage"  # needed to reach an onboarding stage
    product = "product"  # partners subscribed (active or pending) to the product
    tier = "tier"  # partners in the tier
    partner_type = "partner_type"  # partners of the type


class AcceptanceSource(enum.StrEnum):
    partner = "partner"  # a partner member accepted it through the partner API
    staff = "staff"  # staff recorded it on the partner's behalf (e.g. a signed PDF)
    imported = "import"  # brought over from another system with its original date


class NoticeKind(enum.StrEnum):
    due_soon = "due_soon"
    overdue = "overdue"


class Agreement(Entity):
    __tablename__ = "agreements"

    slug: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")


class AgreementVersion(Entity):
    """One text of an agreement. A draft (`published_at` NULL) may change; a published version never does."""

    __tablename__ = "agreement_versions"
    __table_args__ = (UniqueConstraint("agreement_id", "number"),)

    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id", ondelete="RESTRICT"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 … per agreement
    body: Mapped[str] = mapped_column(Text, default="")  # Markdown
    changes_summary: Mapped[str] = mapped_column(Text, default="")
    effective_at: Mapped[datetime | None] = mapped_column()  # set to the publication time when left empty
    # A material change must be accepted again (within grace_days); a non-material one need not be.
    material: Mapped[bool] = mapped_column(default=True)
    grace_days: Mapped[int] = mapped_column(Integer, default=30)
    published_at: Mapped[datetime | None] = mapped_column(index=True)


class AgreementRequirement(Entity):
    """Who is bound by an agreement: everybody, a stage of the path, a product, a tier or a partner type."""

    __tablename__ = "agreement_requirements"

    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"), index=True)
    scope: Mapped[RequirementScope] = mapped_column()
    stage_key: Mapped[str | None] = mapped_column(String(100))
    product_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    tier_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tiers.id", ondelete="CASCADE"), index=True)
    partner_type: Mapped[str | None] = mapped_column(String(32))


class AgreementAcceptance(Base):
    """A partner's acceptance of one version: immutable evidence.

    `accepted_at` is when it was accepted (for staff-recorded and imported ones, the
    original date); `recorded_at` is when Accord wrote it. `user_id` is the member who
    accepted (NULL when staff recorded or imported it); it has no foreign key on purpose,
    so the record outlives the user account, and `accepted_by` keeps who it was.
    """

    __tablename__ = "agreement_acceptances"
    __table_args__ = (Index("ix_agreement_acceptances_partner_agreement", "partner_id", "agreement_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id", ondelete="RESTRICT"))
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreement_versions.id", ondelete="RESTRICT"),
                                                  index=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    user_id: Mapped[uuid.UUID | None] = mapped_column()
    accepted_by: Mapped[str] = mapped_column(String(320), default="")  # the member's email or the staff actor
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[AcceptanceSource] = mapped_column(default=AcceptanceSource.partner)
    note: Mapped[str] = mapped_column(Text, default="")  # e.g. where the signed copy is kept


class AgreementNotice(Base):
    """That a partner was told a version is due soon or overdue: each is emitted once per partner × version."""

    __tablename__ = "agreement_notices"
    __table_args__ = (UniqueConstraint("partner_id", "version_id", "kind"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreement_versions.id", ondelete="CASCADE"),
                                                  index=True)
    kind: Mapped[NoticeKind] = mapped_column()
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ImmutableAcceptance(RuntimeError):
    pass


@event.listens_for(AgreementAcceptance, "before_update")
@event.listens_for(AgreementAcceptance, "before_delete")
def _refuse_changes(_mapper: Any, _connection: Any, target: AgreementAcceptance) -> None:
    raise ImmutableAcceptance(f"agreement acceptance {target.id} is immutable evidence; it cannot be changed")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state: ORMExecuteState) -> None:
    # `session.execute(update(AgreementAcceptance)…)` skips the mapper events above.
    if (state.is_update or state.is_delete) and state.bind_mapper is not None \
            and state.bind_mapper.class_ is AgreementAcceptance:
        raise ImmutableAcceptance("agreement acceptances are immutable evidence; they cannot be changed")
