"""Onboarding routes: stages, partners' positions, checklists and production access requests.

Admin: `/admin/api/onboarding/…`, `/admin/api/partners/{partner_id}/onboarding…`,
`/admin/api/checklist-items…`, `/admin/api/production-access-requests…`.
Partner: `/api/partners/{partner_id}/onboarding`, `…/checklist…`, `…/production-access-requests…`.
Sub-resources are looked up in dependencies, scoped to the partner, so another
partner's id answers 404 before the body is even read.
"""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.deps import AdminDep, CatalogAdminDep, PartnerAdminDep, PartnerMemberDep
from accord.core.clock import utcnow
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, ProblemError, invalid, not_found, problem_responses
from accord.core.pagination import Page, PageDep, paginate, read_page
from accord.onboarding import access, checklists, views
from accord.onboarding import service as onboarding
from accord.onboarding import stages as path
from accord.onboarding.models import (
    AccessRequestState,
    ChecklistItem,
    OnboardingStatus,
    PartnerOnboarding,
    ProductionAccessRequest,
    StageKind,
    StageMark,
)
from accord.onboarding.schemas import (
    AccessRequestAdminRead,
    AccessRequestCreate,
    AccessRequestRead,
    AccessRequestUpdate,
    AdminOnboardingRead,
    Approve,
    ChecklistItemCreate,
    ChecklistItemRead,
    ChecklistItemUpdate,
    ChecklistLineAdminRead,
    ChecklistLineRead,
    Decision,
    EvidenceSubmit,
    OnboardingAdminRow,
    PartnerOnboardingRead,
    StageCreate,
    StageMarkCreate,
    StageRead,
    StageUpdate,
    TransitionAdminRead,
)
from accord.partners.models import Partner

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))
FILE_RESPONSE = {200: {"content": {"application/octet-stream": {}}, "description": "The evidence file"}}


async def _partner(session: AsyncSession, partner_id: uuid.UUID) -> Partner:
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise not_found("partner")
    return partner


def _download(entry) -> Response:
    # Always an attachment, never rendered: the bytes are the partner's, the origin is ours.
    name = quote(entry.file_name or "evidence")
    return Response(entry.file_data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}",
                             "X-Content-Type-Options": "nosniff"})


# --- stages ---------------------------------------------------------------------

@admin_router.get("/onboarding/stages", summary="The stages of the onboarding path, in order")
async def list_stages(session: SessionDep, _: AdminDep) -> list[StageRead]:
    return [StageRead.model_validate(s) for s in await path.stages(session)]


@admin_router.post("/onboarding/stages", status_code=201, summary="Insert a manual stage (staff mark it per "
                   "partner)", responses=WRITE_PROBLEMS)
async def create_stage(session: SessionDep, actor: CatalogAdminDep, data: StageCreate) -> StageRead:
    stage = await path.create_manual_stage(session, actor, **data.model_dump())
    return StageRead.model_validate(stage)


@admin_router.patch("/onboarding/stages/{key}", summary="Rename a stage, set when partners count as stuck in it, "
                    "or move a manual stage", responses=WRITE_PROBLEMS)
async def update_stage(session: SessionDep, actor: CatalogAdminDep, key: str, data: StageUpdate) -> StageRead:
    return StageRead.model_validate(await path.update_stage(session, actor, key, data.model_dump(exclude_unset=True)))


@admin_router.delete("/onboarding/stages/{key}", status_code=204, summary="Remove a manual stage no partner is at",
                     responses=WRITE_PROBLEMS)
async def delete_stage(session: SessionDep, actor: CatalogAdminDep, key: str) -> Response:
    await path.delete_stage(session, actor, key)
    return Response(status_code=204)


# --- partners' positions (admin) ---------------------------------------------------------

@admin_router.get("/onboarding/partners", summary="Partners by onboarding stage, status, or stuck")
async def list_positions(session: SessionDep, _: AdminDep, page: PageDep,
                         stage: str | None = None, status: OnboardingStatus | None = None,
                         stuck: bool | None = None) -> Page[OnboardingAdminRow]:
    names = {s.key: s.name for s in await path.stages(session)}
    stmt = (select(PartnerOnboarding, Partner.name).join(Partner, Partner.id == PartnerOnboarding.partner_id)
            .order_by(PartnerOnboarding.stage_entered_at, PartnerOnboarding.partner_id))
    if stage:
        stmt = stmt.where(PartnerOnboarding.stage_key == stage)
    if status is not None:
        stmt = stmt.where(PartnerOnboarding.status == status)
    if stuck is not None:
        stmt = stmt.where(PartnerOnboarding.stuck_since.is_not(None) if stuck
                          else PartnerOnboarding.stuck_since.is_(None))
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.execute(stmt.limit(page.limit).offset(page.offset))).all()
    items = [OnboardingAdminRow(partner_id=r.partner_id, partner_name=name, stage_key=r.stage_key,
                                stage_name=names.get(r.stage_key, r.stage_key), stage_entered_at=r.stage_entered_at,
                                status=r.status, status_since=r.status_since, last_call_at=r.last_call_at,
                                stuck_since=r.stuck_since) for r, name in rows]
    return Page.of(items, int(total or 0), page)


@admin_router.get("/partners/{partner_id}/onboarding", summary="A partner's onboarding: stage, timeline, next "
                  "steps, checklist, open requests", responses=READ_PROBLEMS)
async def admin_onboarding(session: SessionDep, settings: SettingsDep, _: AdminDep,
                           partner_id: uuid.UUID) -> AdminOnboardingRead:
    return await views.admin_view(session, settings, await _partner(session, partner_id))


@admin_router.post("/partners/{partner_id}/onboarding/refresh", summary="Recompute a partner's stage from its "
                   "facts now (the sweeper does it within a second)", responses=READ_PROBLEMS)
async def admin_refresh(session: SessionDep, settings: SettingsDep, _: AdminDep,
                        partner_id: uuid.UUID) -> list[TransitionAdminRead]:
    await _partner(session, partner_id)
    return [TransitionAdminRead.model_validate(t)
            for t in await onboarding.refresh(session, [partner_id], settings=settings)]


async def _manual_stage(session: AsyncSession, key: str):
    stage = await path.get_stage(session, key)
    if stage.kind != StageKind.manual:
        raise invalid("key", "built-in stages come from facts; only manual stages are marked")
    return stage


@admin_router.post("/partners/{partner_id}/onboarding/stages/{key}/mark", summary="Mark a manual stage as "
                   "passed for the partner", responses=WRITE_PROBLEMS)
async def mark_stage(session: SessionDep, settings: SettingsDep, actor: AdminDep, partner_id: uuid.UUID, key: str,
                     data: StageMarkCreate | None = None) -> AdminOnboardingRead:
    partner = await _partner(session, partner_id)
    stage = await _manual_stage(session, key)
    data = data or StageMarkCreate()
    at = data.at or utcnow()
    if at > utcnow() + timedelta(minutes=1):
        raise invalid("at", "must not be in the future")
    if await session.get(StageMark, (partner.id, stage.key)) is not None:
        raise ProblemError("conflict", "the stage is already marked for this partner",
                           [{"field": "key", "reason": "already marked"}])
    mark = StageMark(partner_id=partner.id, stage_key=stage.key, at=at, marked_by=actor.label[:200], note=data.note)
    session.add(mark)
    await session.flush()
    await audit.record(session, actor, "onboarding.stage_marked", target_type="onboarding_stage_marks",
                       target_id=f"{partner.id}:{stage.key}", partner_id=partner.id, after=audit.snapshot(mark))
    await onboarding.refresh(session, [partner.id], settings=settings)
    return await views.admin_view(session, settings, partner)


@admin_router.delete("/partners/{partner_id}/onboarding/stages/{key}/mark", summary="Take back a mark the "
                     "partner has not moved past", responses=WRITE_PROBLEMS)
async def unmark_stage(session: SessionDep, settings: SettingsDep, actor: AdminDep, partner_id: uuid.UUID,
                       key: str) -> AdminOnboardingRead:
    partner = await _partner(session, partner_id)
    stage = await _manual_stage(session, key)
    mark = await session.get(StageMark, (partner.id, stage.key))
    if mark is None:
        raise not_found("mark")
    row = await onboarding.stage_of(session, partner.id)
    ordered = [s.key for s in await path.stages(session)]
    if ordered.index(row.stage_key) >= ordered.index(stage.key):
        raise ProblemError("invalid-state", "the partner has reached this stage; stages are never left",
                           [{"field": "key", "reason": "already reached"}])
    before = audit.snapshot(mark)
    await session.delete(mark)
    await audit.record(session, actor, "onboarding.stage_unmarked", target_type="onboarding_stage_marks",
                       target_id=f"{partner.id}:{stage.key}", partner_id=partner.id, before=before)
    return await views.admin_view(session, settings, partner)


# --- the partner's own view ----------------------------------------------------------

@partner_router.get("/partners/{partner_id}/onboarding", summary="Your onboarding: stage, timeline and what to "
                    "do next", responses=READ_PROBLEMS)
async def partner_onboarding(session: SessionDep, settings: SettingsDep,
                             member: PartnerMemberDep) -> PartnerOnboardingRead:
    return await views.partner_view(session, settings, member.partner)


# --- checklists: items (staff) --------------------------------------------------------

@admin_router.get("/checklist-items", summary="Checklist items")
async def list_items(session: SessionDep, _: AdminDep, page: PageDep, tier_id: uuid.UUID | None = None,
                     partner_type: str | None = None) -> Page[ChecklistItemRead]:
    return await read_page(session, checklists.list_items(tier_id=tier_id, partner_type=partner_type), page,
                           ChecklistItemRead.model_validate)


@admin_router.post("/checklist-items", status_code=201, summary="Add a checklist item (for a tier, a partner "
                   "type, both, or everyone)", responses=WRITE_PROBLEMS)
async def create_item(session: SessionDep, actor: AdminDep, data: ChecklistItemCreate) -> ChecklistItemRead:
    values = data.model_dump()
    values["partner_type"] = data.partner_type.value if data.partner_type else None
    return ChecklistItemRead.model_validate(await checklists.create_item(session, actor, values))


@admin_router.get("/checklist-items/{item_id}", summary="A checklist item", responses=READ_PROBLEMS)
async def get_item(session: SessionDep, _: AdminDep, item_id: uuid.UUID) -> ChecklistItemRead:
    return ChecklistItemRead.model_validate(await checklists.get_item(session, item_id))


@admin_router.patch("/checklist-items/{item_id}", summary="Change a checklist item", responses=WRITE_PROBLEMS)
async def update_item(session: SessionDep, actor: AdminDep, item_id: uuid.UUID,
                      data: ChecklistItemUpdate) -> ChecklistItemRead:
    item = await checklists.get_item(session, item_id)
    changes = data.model_dump(exclude_unset=True)
    for key in ("label", "description", "evidence_kind", "position"):
        if key in changes and changes[key] is None:
            raise invalid(key, "may not be null")
    if changes.get("partner_type") is not None:
        changes["partner_type"] = changes["partner_type"].value
    await checklists.update_item(session, actor, item, changes)
    await session.flush()
    return ChecklistItemRead.model_validate(item)


@admin_router.delete("/checklist-items/{item_id}", status_code=204, summary="Remove a checklist item and its "
                     "evidence", responses=READ_PROBLEMS)
async def delete_item(session: SessionDep, actor: AdminDep, item_id: uuid.UUID) -> Response:
    await checklists.delete_item(session, actor, await checklists.get_item(session, item_id))
    return Response(status_code=204)


# --- checklists: a partner's (staff) --------------------------------------------------

@admin_router.get("/partners/{partner_id}/checklist", summary="A partner's checklist with evidence and checks",
                  responses=READ_PROBLEMS)
async def admin_checklist(session: SessionDep, _: AdminDep, partner_id: uuid.UUID) -> list[ChecklistLineAdminRead]:
    partner = await _partner(session, partner_id)
    return [views.line_read(line, admin=True) for line in await checklists.checklist(session, partner)]


async def _admin_line(session: AsyncSession, partner: Partner, item: ChecklistItem) -> ChecklistLineAdminRead:
    lines = {line.item.id: line for line in await checklists.checklist(session, partner)}
    return views.line_read(lines[item.id], admin=True)


@admin_router.post("/partners/{partner_id}/checklist/{item_id}/check", summary="Check an item (who and when "
                   "are kept)", responses=WRITE_PROBLEMS)
async def check_item(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                     item_id: uuid.UUID) -> ChecklistLineAdminRead:
    partner = await _partner(session, partner_id)
    item = await checklists.item_for(session, partner, item_id)
    await checklists.set_checked(session, actor, partner, item, True)
    return await _admin_line(session, partner, item)


@admin_router.post("/partners/{partner_id}/checklist/{item_id}/uncheck", summary="Uncheck an item",
                   responses=WRITE_PROBLEMS)
async def uncheck_item(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                       item_id: uuid.UUID) -> ChecklistLineAdminRead:
    partner = await _partner(session, partner_id)
    item = await checklists.item_for(session, partner, item_id)
    await checklists.set_checked(session, actor, partner, item, False)
    return await _admin_line(session, partner, item)


@admin_router.get("/partners/{partner_id}/checklist/{item_id}/file", summary="Download a partner's evidence file",
                  responses={**READ_PROBLEMS, **FILE_RESPONSE}, response_class=Response)
async def admin_file(session: SessionDep, _: AdminDep, partner_id: uuid.UUID, item_id: uuid.UUID) -> Response:
    partner = await _partner(session, partner_id)
    item = await checklists.item_for(session, partner, item_id)
    return _download(await checklists.evidence_file(session, partner, item))


# --- checklists: the partner's side ---------------------------------------------------

async def _own_item(session: SessionDep, member: PartnerMemberDep, item_id: uuid.UUID) -> ChecklistItem:
    return await checklists.item_for(session, member.partner, item_id)


OwnItem = Annotated[ChecklistItem, Depends(_own_item)]


async def _line(session: AsyncSession, member, item: ChecklistItem) -> ChecklistLineRead:
    lines = {line.item.id: line for line in await checklists.checklist(session, member.partner)}
    return views.line_read(lines[item.id], admin=False)


@partner_router.get("/partners/{partner_id}/checklist", summary="Your checklist", responses=READ_PROBLEMS)
async def partner_checklist(session: SessionDep, member: PartnerMemberDep) -> list[ChecklistLineRead]:
    return [views.line_read(line, admin=False) for line in await checklists.checklist(session, member.partner)]


@partner_router.put("/partners/{partner_id}/checklist/{item_id}", summary="Send text or link evidence for an item",
                    responses=WRITE_PROBLEMS)
async def submit_evidence(session: SessionDep, member: PartnerMemberDep, item: OwnItem,
                          data: EvidenceSubmit) -> ChecklistLineRead:
    await checklists.submit(session, member.actor, member.partner, item, text=data.text, link=data.link)
    return await _line(session, member, item)


@partner_router.put("/partners/{partner_id}/checklist/{item_id}/file", summary="Upload a file as evidence "
                    "(at most 5 MB)", responses=WRITE_PROBLEMS)
async def upload_evidence(session: SessionDep, member: PartnerMemberDep, item: OwnItem,
                          file: Annotated[UploadFile, File(description="The evidence, at most 5 MB")]
                          ) -> ChecklistLineRead:
    data = await file.read(checklists.MAX_FILE_BYTES + 1)
    await checklists.submit(session, member.actor, member.partner, item, file_name=file.filename,
                            file_type=file.content_type or "", data=data)
    return await _line(session, member, item)


@partner_router.get("/partners/{partner_id}/checklist/{item_id}/file", summary="Download your evidence file",
                    responses={**READ_PROBLEMS, **FILE_RESPONSE}, response_class=Response)
async def partner_file(session: SessionDep, member: PartnerMemberDep, item: OwnItem) -> Response:
    return _download(await checklists.evidence_file(session, member.partner, item))


# --- production access requests (staff) --------------------------------------------------

@admin_router.get("/production-access-requests", summary="The production access queue (oldest first), with age "
                  "and SLA")
async def list_requests(session: SessionDep, settings: SettingsDep, _: AdminDep, page: PageDep,
                        state: AccessRequestState | None = None, partner_id: uuid.UUID | None = None,
                        min_age_hours: Annotated[float | None, Query(ge=0, le=1_000_000)] = None,
                        overdue: bool | None = None) -> Page[AccessRequestAdminRead]:
    stmt = access.list_requests(settings, partner_id=partner_id, state=state, min_age_hours=min_age_hours,
                                overdue=overdue)
    rows, total = await paginate(session, stmt, page)
    names = dict((await session.execute(select(Partner.id, Partner.name)
                                        .where(Partner.id.in_({r.partner_id for r in rows})))).all())
    return Page.of([views.request_read(settings, r, admin=True, partner_name=names.get(r.partner_id, ""))
                    for r in rows], total, page)


async def _admin_request(session: AsyncSession, request_id: uuid.UUID) -> ProductionAccessRequest:
    return await access.get_request(session, request_id)


async def _admin_read(session: AsyncSession, settings, request: ProductionAccessRequest) -> AccessRequestAdminRead:
    await session.flush()
    partner = await session.get(Partner, request.partner_id)
    return views.request_read(settings, request, admin=True, partner_name=partner.name if partner else "")


@admin_router.get("/production-access-requests/{request_id}", summary="A production access request",
                  responses=READ_PROBLEMS)
async def get_request(session: SessionDep, settings: SettingsDep, _: AdminDep,
                      request_id: uuid.UUID) -> AccessRequestAdminRead:
    return await _admin_read(session, settings, await _admin_request(session, request_id))


@admin_router.post("/production-access-requests/{request_id}/approve", summary="Approve with a plan: the partner's "
                   "subscription is made or reused and activated, the request's application approved",
                   responses=WRITE_PROBLEMS)
async def approve_request(session: SessionDep, settings: SettingsDep, actor: AdminDep, request_id: uuid.UUID,
                          data: Approve) -> AccessRequestAdminRead:
    request = await _admin_request(session, request_id)
    await access.approve(session, settings, actor, request, data.plan_id, data.reason)
    return await _admin_read(session, settings, request)


@admin_router.post("/production-access-requests/{request_id}/reject", summary="Reject with a reason",
                   responses=WRITE_PROBLEMS)
async def reject_request(session: SessionDep, settings: SettingsDep, actor: AdminDep, request_id: uuid.UUID,
                         data: Decision) -> AccessRequestAdminRead:
    request = await _admin_request(session, request_id)
    await access.reject(session, settings, actor, request, data.reason)
    return await _admin_read(session, settings, request)


@admin_router.post("/production-access-requests/{request_id}/request-changes", summary="Send back to the partner "
                   "with what to change", responses=WRITE_PROBLEMS)
async def request_changes(session: SessionDep, settings: SettingsDep, actor: AdminDep, request_id: uuid.UUID,
                          data: Decision) -> AccessRequestAdminRead:
    request = await _admin_request(session, request_id)
    await access.request_changes(session, settings, actor, request, data.reason)
    return await _admin_read(session, settings, request)


# --- production access requests (partner) ------------------------------------------------

async def _own_request(session: SessionDep, member: PartnerMemberDep,
                       request_id: uuid.UUID) -> ProductionAccessRequest:
    return await access.get_request(session, request_id, partner_id=member.partner.id)


OwnRequest = Annotated[ProductionAccessRequest, Depends(_own_request)]


async def _partner_read(session: AsyncSession, settings, request: ProductionAccessRequest) -> AccessRequestRead:
    await session.flush()
    return views.request_read(settings, request)


@partner_router.get("/partners/{partner_id}/production-access-requests", summary="Your production access requests",
                    responses=READ_PROBLEMS)
async def partner_requests(session: SessionDep, settings: SettingsDep, member: PartnerMemberDep, page: PageDep,
                           state: AccessRequestState | None = None) -> Page[AccessRequestRead]:
    stmt = access.list_requests(settings, partner_id=member.partner.id, state=state)
    return await read_page(session, stmt, page, lambda r: views.request_read(settings, r))


@partner_router.post("/partners/{partner_id}/production-access-requests", status_code=201,
                     summary="Request production access", responses=WRITE_PROBLEMS)
async def create_request(session: SessionDep, settings: SettingsDep, member: PartnerAdminDep,
                         data: AccessRequestCreate) -> AccessRequestRead:
    request = await access.create_request(session, settings, member.actor, member.partner, data.model_dump())
    return await _partner_read(session, settings, request)


@partner_router.get("/partners/{partner_id}/production-access-requests/{request_id}",
                    summary="One of your production access requests", responses=READ_PROBLEMS)
async def partner_request(session: SessionDep, settings: SettingsDep, request: OwnRequest) -> AccessRequestRead:
    return await _partner_read(session, settings, request)


@partner_router.patch("/partners/{partner_id}/production-access-requests/{request_id}",
                      summary="Change a pending request, or answer a request for changes (it goes back to the "
                      "queue)", responses=WRITE_PROBLEMS)
async def update_request(session: SessionDep, settings: SettingsDep, member: PartnerAdminDep, request: OwnRequest,
                         data: AccessRequestUpdate) -> AccessRequestRead:
    await access.update_request(session, member.actor, member.partner, request, data.model_dump(exclude_unset=True))
    return await _partner_read(session, settings, request)


@partner_router.post("/partners/{partner_id}/production-access-requests/{request_id}/withdraw",
                     summary="Withdraw a request", responses=WRITE_PROBLEMS)
async def withdraw_request(session: SessionDep, settings: SettingsDep, member: PartnerAdminDep,
                           request: OwnRequest) -> AccessRequestRead:
    await access.withdraw(session, member.actor, request)
    return await _partner_read(session, settings, request)
