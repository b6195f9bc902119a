"""Building the API answers: a partner's onboarding, its checklist lines, requests with their SLA."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.config import Settings
from accord.onboarding import access, checklists
from accord.onboarding import service as onboarding
from accord.onboarding import stages as path
from accord.onboarding.models import (
    PartnerOnboarding,
    ProductionAccessRequest,
    StageTransition,
)
from accord.onboarding.schemas import (
    AccessRequestAdminRead,
    AccessRequestRead,
    AdminOnboardingRead,
    ChecklistLineAdminRead,
    ChecklistLineRead,
    OnboardingSummary,
    PartnerOnboardingRead,
    StepRead,
    TransitionAdminRead,
    TransitionRead,
)
from accord.onboarding.steps import next_steps
from accord.partners.models import Partner


def request_read(settings: Settings, request: ProductionAccessRequest, *, admin: bool = False,
                 partner_name: str = "") -> AccessRequestRead:
    values = {**{c.key: getattr(request, c.key) for c in ProductionAccessRequest.__table__.columns},
              **access.sla(settings, request)}
    if admin:
        return AccessRequestAdminRead(**values, partner_name=partner_name)
    values.pop("decided_by")
    return AccessRequestRead(**values)


def line_read(line: checklists.Line, *, admin: bool) -> ChecklistLineRead:
    item, entry = line.item, line.entry
    values: dict[str, Any] = {"item_id": item.id, "label": item.label, "description": item.description,
                              "evidence_kind": item.evidence_kind}
    if entry is not None:
        values.update(text=entry.text, link=entry.link, file_name=entry.file_name, file_size=entry.file_size,
                      file_type=entry.file_type, submitted_at=entry.submitted_at, checked_at=entry.checked_at)
        if admin:
            values.update(submitted_by=entry.submitted_by, checked_by=entry.checked_by)
    return (ChecklistLineAdminRead if admin else ChecklistLineRead)(**values)


async def _summary(session: AsyncSession, partner: Partner) -> tuple[PartnerOnboarding, dict[str, Any]]:
    row = await onboarding.stage_of(session, partner.id)
    ordered = await path.stages(session)
    names = {s.key: s.name for s in ordered}
    summary = OnboardingSummary(partner_id=partner.id, stage_key=row.stage_key,
                                stage_name=names.get(row.stage_key, row.stage_key),
                                stage_entered_at=row.stage_entered_at, status=row.status,
                                status_since=row.status_since, last_call_at=row.last_call_at,
                                stuck_since=row.stuck_since)
    return row, summary.model_dump()


async def timeline(session: AsyncSession, partner: Partner) -> list[StageTransition]:
    return list(await session.scalars(select(StageTransition).where(StageTransition.partner_id == partner.id)
                                      .order_by(StageTransition.at, StageTransition.recorded_at)))


async def partner_view(session: AsyncSession, settings: Settings, partner: Partner) -> PartnerOnboardingRead:
    row, summary = await _summary(session, partner)
    lines = await checklists.checklist(session, partner)
    steps = await next_steps(session, await path.stages(session), row, lines)
    requests = await session.scalars(select(ProductionAccessRequest)
                                     .where(ProductionAccessRequest.partner_id == partner.id)
                                     .order_by(ProductionAccessRequest.created_at.desc()).limit(20))
    return PartnerOnboardingRead(
        **summary, timeline=[TransitionRead.model_validate(t) for t in await timeline(session, partner)],
        next_steps=[StepRead.model_validate(s) for s in steps],
        checklist=[line_read(line, admin=False) for line in lines],
        requests=[request_read(settings, r) for r in requests])


async def admin_view(session: AsyncSession, settings: Settings, partner: Partner) -> AdminOnboardingRead:
    row, summary = await _summary(session, partner)
    lines = await checklists.checklist(session, partner)
    steps = await next_steps(session, await path.stages(session), row, lines)
    requests = await session.scalars(select(ProductionAccessRequest).where(
        ProductionAccessRequest.partner_id == partner.id, ProductionAccessRequest.state.in_(access.OPEN))
        .order_by(ProductionAccessRequest.submitted_at))
    return AdminOnboardingRead(
        **summary, timeline=[TransitionAdminRead.model_validate(t) for t in await timeline(session, partner)],
        next_steps=[StepRead.model_validate(s) for s in steps],
        checklist=[line_read(line, admin=True) for line in lines],
        open_requests=[request_read(settings, r, admin=True, partner_name=partner.name) for r in requests])
