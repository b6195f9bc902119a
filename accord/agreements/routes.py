"""Agreement routes: `/admin/api/agreements/…` and `/api/partners/{partner_id}/agreements/…`.

Staff with the owner or admin role write agreements, versions and requirements (they are
part of the program, like products); partner managers also record acceptances and ask
for re-acceptance. Partner members read the agreements binding their partner; partner
admins accept them.
"""
from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements import service
from accord.agreements.models import AcceptanceSource, Agreement, AgreementRequirement, AgreementVersion
from accord.agreements.schemas import (
    AcceptanceRead,
    AcceptanceWithVersion,
    AgreementCreate,
    AgreementDetail,
    AgreementRead,
    AgreementReport,
    AgreementUpdate,
    PartnerAccept,
    PartnerAgreementRead,
    ReacceptanceRequest,
    ReportRow,
    RequirementCreate,
    RequirementRead,
    StaffAcceptanceCreate,
    StatusRead,
    VersionCreate,
    VersionRead,
    VersionSummary,
    VersionUpdate,
)
from accord.agreements.status import STATES, AgreementStatus
from accord.auth.deps import AdminDep, CatalogAdminDep, PartnerAdminDep, PartnerMemberDep
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, invalid, not_found, problem_responses, reject_nulls
from accord.core.pagination import Page, PageDep, PageParams, read_page
from accord.partners.models import Partner, PartnerType

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))
ONE = "/agreements/{agreement_id}"
PARTNER = "/partners/{partner_id}/agreements"
StateFilter = Annotated[str | None, Query(pattern="^(" + "|".join(STATES) + ")$", description=" | ".join(STATES))]


def _status_fields(status: AgreementStatus) -> dict[str, Any]:
    return {"agreement_id": status.agreement_id, "slug": status.slug, "title": status.title, "state": status.state,
            "version_number": status.version_number, "accepted_version_number": status.accepted_version_number,
            "accepted_at": status.accepted_at, "due_at": status.due_at, "reasons": list(status.reasons)}


def _acceptance(row: Any) -> AcceptanceWithVersion:
    acceptance, number, slug, title = row
    return AcceptanceWithVersion(**AcceptanceRead.model_validate(acceptance).model_dump(), version_number=number,
                                 agreement_slug=slug, agreement_title=title)


async def _acceptance_page(session: AsyncSession, stmt: Any, page: PageParams) -> Page[AcceptanceWithVersion]:
    """A page of `list_acceptances` rows (each an acceptance with its version number and agreement)."""
    await session.flush()
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.execute(stmt.limit(page.limit).offset(page.offset))).all()
    return Page.of([_acceptance(row) for row in rows], int(total or 0), page)


async def _detail(session: AsyncSession, agreement: Agreement) -> AgreementDetail:
    await session.flush()
    requirements = (await session.scalars(service.list_requirements(agreement.id))).all()
    return AgreementDetail(**AgreementRead.model_validate(agreement).model_dump(),
                           versions=[VersionSummary.model_validate(v)
                                     for v in await service.versions(session, agreement.id)],
                           requirements=[RequirementRead.model_validate(r) for r in requirements])


async def _version(session: AsyncSession, agreement_id: uuid.UUID,
                   version_id: uuid.UUID) -> tuple[Agreement, AgreementVersion]:
    agreement = await service.get_agreement(session, agreement_id)
    return agreement, await service.get_version(session, agreement, version_id)


# --- admin: agreements ------------------------------------------------------

@admin_router.get("/agreements", summary="List agreements")
async def list_agreements(session: SessionDep, _: AdminDep, page: PageDep) -> Page[AgreementRead]:
    return await read_page(session, service.list_agreements(), page, AgreementRead.model_validate)


@admin_router.post("/agreements", status_code=201, summary="Create an agreement (then write its first version)",
                   responses=WRITE_PROBLEMS)
async def create_agreement(session: SessionDep, actor: CatalogAdminDep, data: AgreementCreate) -> AgreementDetail:
    agreement = await service.create_agreement(session, actor, **data.model_dump())
    return await _detail(session, agreement)


@admin_router.get(ONE, summary="Get an agreement with its versions and requirements", responses=READ_PROBLEMS)
async def get_agreement(session: SessionDep, _: AdminDep, agreement_id: uuid.UUID) -> AgreementDetail:
    return await _detail(session, await service.get_agreement(session, agreement_id))


@admin_router.patch(ONE, summary="Change an agreement's slug, title or description", responses=WRITE_PROBLEMS)
async def update_agreement(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID,
                           data: AgreementUpdate) -> AgreementDetail:
    changes = data.model_dump(exclude_unset=True)
    reject_nulls(changes)
    agreement = await service.get_agreement(session, agreement_id)
    return await _detail(session, await service.update_agreement(session, actor, agreement, changes))


@admin_router.delete(ONE, status_code=204, summary="Delete an agreement that was never published",
                     responses=problem_responses(404, 409))
async def delete_agreement(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID) -> Response:
    await service.delete_agreement(session, actor, await service.get_agreement(session, agreement_id))
    return Response(status_code=204)


# --- admin: versions --------------------------------------------------------

@admin_router.get(ONE + "/versions", summary="List an agreement's versions, newest first", responses=READ_PROBLEMS)
async def list_versions(session: SessionDep, _: AdminDep, agreement_id: uuid.UUID) -> list[VersionSummary]:
    agreement = await service.get_agreement(session, agreement_id)
    return [VersionSummary.model_validate(v) for v in await service.versions(session, agreement.id)]


@admin_router.post(ONE + "/versions", status_code=201, summary="Write a new draft version",
                   description="One draft at a time; it is numbered after the last version.",
                   responses=WRITE_PROBLEMS)
async def create_version(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID,
                         data: VersionCreate) -> VersionRead:
    agreement = await service.get_agreement(session, agreement_id)
    version = await service.create_version(session, actor, agreement, **data.model_dump())
    await session.flush()
    return VersionRead.model_validate(version)


@admin_router.get(ONE + "/versions/{version_id}", summary="Get a version with its text", responses=READ_PROBLEMS)
async def get_version(session: SessionDep, _: AdminDep, agreement_id: uuid.UUID,
                      version_id: uuid.UUID) -> VersionRead:
    return VersionRead.model_validate((await _version(session, agreement_id, version_id))[1])


@admin_router.patch(ONE + "/versions/{version_id}", summary="Edit a draft version (published ones never change)",
                    responses=WRITE_PROBLEMS)
async def update_version(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID,
                         version_id: uuid.UUID, data: VersionUpdate) -> VersionRead:
    changes = data.model_dump(exclude_unset=True)
    reject_nulls(changes, nullable={"effective_at"})
    _, version = await _version(session, agreement_id, version_id)
    version = await service.update_version(session, actor, version, changes)
    await session.flush()
    return VersionRead.model_validate(version)


@admin_router.delete(ONE + "/versions/{version_id}", status_code=204, summary="Delete a draft version",
                     responses=problem_responses(404, 409))
async def delete_version(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID,
                         version_id: uuid.UUID) -> Response:
    _, version = await _version(session, agreement_id, version_id)
    await service.delete_version(session, actor, version)
    return Response(status_code=204)


@admin_router.post(ONE + "/versions/{version_id}/publish", summary="Publish a draft version",
                   description="Freezes the text. When material, bound partners are emailed and have `grace_days` "
                               "to accept it before production traffic that needs it is refused.",
                   responses=WRITE_PROBLEMS)
async def publish_version(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID,
                          version_id: uuid.UUID) -> VersionRead:
    _, version = await _version(session, agreement_id, version_id)
    version = await service.publish_version(session, actor, version)
    await session.flush()
    return VersionRead.model_validate(version)


# --- admin: requirements ----------------------------------------------------

@admin_router.get(ONE + "/requirements", summary="List who an agreement binds", responses=READ_PROBLEMS)
async def list_requirements(session: SessionDep, _: AdminDep, agreement_id: uuid.UUID) -> list[RequirementRead]:
    agreement = await service.get_agreement(session, agreement_id)
    return [RequirementRead.model_validate(r)
            for r in (await session.scalars(service.list_requirements(agreement.id))).all()]


@admin_router.post(ONE + "/requirements", status_code=201, summary="Require the agreement for a stage, product, "
                   "tier, partner type or everybody", responses=WRITE_PROBLEMS)
async def create_requirement(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID,
                             data: RequirementCreate) -> RequirementRead:
    agreement = await service.get_agreement(session, agreement_id)
    requirement = await service.create_requirement(session, actor, agreement, **data.model_dump())
    await session.flush()
    return RequirementRead.model_validate(requirement)


@admin_router.get(ONE + "/requirements/{requirement_id}", summary="Get a requirement", responses=READ_PROBLEMS)
async def get_requirement(session: SessionDep, _: AdminDep, agreement_id: uuid.UUID,
                          requirement_id: uuid.UUID) -> RequirementRead:
    agreement = await service.get_agreement(session, agreement_id)
    return RequirementRead.model_validate(await service.get_requirement(session, agreement, requirement_id))


@admin_router.delete(ONE + "/requirements/{requirement_id}", status_code=204, summary="Remove a requirement",
                     responses=READ_PROBLEMS)
async def delete_requirement(session: SessionDep, actor: CatalogAdminDep, agreement_id: uuid.UUID,
                             requirement_id: uuid.UUID) -> Response:
    agreement = await service.get_agreement(session, agreement_id)
    requirement: AgreementRequirement = await service.get_requirement(session, agreement, requirement_id)
    await service.delete_requirement(session, actor, requirement)
    return Response(status_code=204)


# --- admin: acceptances, report, re-acceptance --------------------------------

@admin_router.get(ONE + "/acceptances", summary="Acceptances of an agreement, newest first", responses=READ_PROBLEMS)
async def list_acceptances(session: SessionDep, _: AdminDep, page: PageDep, agreement_id: uuid.UUID,
                           partner_id: uuid.UUID | None = None,
                           version_id: uuid.UUID | None = None) -> Page[AcceptanceWithVersion]:
    agreement = await service.get_agreement(session, agreement_id)
    stmt = service.list_acceptances(agreement_id=agreement.id, partner_id=partner_id, version_id=version_id)
    return await _acceptance_page(session, stmt, page)


@admin_router.post(ONE + "/acceptances", status_code=201, summary="Record an acceptance on a partner's behalf",
                   description="For an agreement signed outside Accord (e.g. a signed PDF); `source` is `staff`. "
                               "A version the partner already accepted returns its existing record.",
                   responses=WRITE_PROBLEMS)
async def record_acceptance(session: SessionDep, actor: AdminDep, agreement_id: uuid.UUID,
                            data: StaffAcceptanceCreate, response: Response) -> AcceptanceWithVersion:
    agreement = await service.get_agreement(session, agreement_id)
    partner = await session.get(Partner, data.partner_id)
    if partner is None:
        raise invalid("partner_id", "no such partner")
    if data.version_id is None:
        version = await service.latest_published(session, agreement.id)
        if version is None:
            raise invalid("version_id", "the agreement has no published version")
    else:
        version = await session.get(AgreementVersion, data.version_id)
        if version is None or version.agreement_id != agreement.id:
            raise invalid("version_id", "no such version of this agreement")
    acceptance, created = await service.record_acceptance(
        session, actor, partner, version, source=AcceptanceSource.staff, accepted_at=data.accepted_at,
        accepted_by=actor.label, note=data.note)
    if not created:
        response.status_code = 200
    await session.flush()
    return _acceptance((acceptance, version.number, agreement.slug, agreement.title))


@admin_router.get(ONE + "/report", summary="Who has signed which version, and who has not",
                  description="Every partner bound by the agreement: its state, the version it accepted and when, "
                              "and its deadline. Missing and overdue first.", responses=READ_PROBLEMS)
async def agreement_report(session: SessionDep, _: AdminDep, page: PageDep, agreement_id: uuid.UUID,
                           state: StateFilter = None, partner_type: PartnerType | None = None,
                           tier_id: uuid.UUID | None = None) -> AgreementReport:
    agreement = await service.get_agreement(session, agreement_id)
    rows, counts = await service.report(session, agreement, state=state,
                                        partner_type=partner_type.value if partner_type else None, tier_id=tier_id)
    items = [ReportRow(**_status_fields(status), partner_id=partner.id, partner_name=partner.name,
                       partner_slug=partner.slug, partner_type=str(partner.type), tier_id=partner.tier_id)
             for status, partner in rows[page.offset:page.offset + page.limit]]
    return AgreementReport(items=items, total=len(rows), limit=page.limit, offset=page.offset, counts=counts)


@admin_router.post(ONE + "/reacceptance", summary="Ask a partner to accept the current version",
                   description="Emails the partner's admins and emits `agreement.reacceptance_requested`. Refused "
                               "(409) when the partner already accepted it.", responses=WRITE_PROBLEMS)
async def request_reacceptance(session: SessionDep, actor: AdminDep, agreement_id: uuid.UUID,
                               data: ReacceptanceRequest) -> StatusRead:
    await service.get_agreement(session, agreement_id)
    status = await service.request_reacceptance(session, actor, data.partner_id, agreement_id)
    return StatusRead(**_status_fields(status))


@admin_router.get("/agreement-statuses", summary="Agreement states of partners, across agreements",
                  description="One row per partner and agreement binding it; filter by partner, agreement, state.")
async def list_statuses(session: SessionDep, _: AdminDep, page: PageDep, partner_id: uuid.UUID | None = None,
                        agreement_id: uuid.UUID | None = None, state: StateFilter = None) -> Page[ReportRow]:
    found = await service.statuses(session, partner_ids=[partner_id] if partner_id else None,
                                   agreement_ids=[agreement_id] if agreement_id else None)
    found = [s for s in found if state is None or s.state == state]
    chosen = found[page.offset:page.offset + page.limit]
    partners = {p.id: p for p in (await session.scalars(
        select(Partner).where(Partner.id.in_({s.partner_id for s in chosen})))).all()} if chosen else {}
    items = [ReportRow(**_status_fields(s), partner_id=s.partner_id, partner_name=partners[s.partner_id].name,
                       partner_slug=partners[s.partner_id].slug, partner_type=str(partners[s.partner_id].type),
                       tier_id=partners[s.partner_id].tier_id) for s in chosen if s.partner_id in partners]
    return Page.of(items, len(found), page)


# --- partner ----------------------------------------------------------------

async def _partner_view(session: AsyncSession, status: AgreementStatus) -> PartnerAgreementRead:
    agreement = await session.get(Agreement, status.agreement_id)
    current = await service.latest_published(session, status.agreement_id)
    return PartnerAgreementRead(**_status_fields(status), description=agreement.description if agreement else "",
                                current_version=VersionRead.model_validate(current))


async def _binding(session: AsyncSession, partner_id: uuid.UUID, agreement_id: uuid.UUID) -> AgreementStatus:
    """The partner's status for an agreement that binds it; any other agreement is "not found"."""
    status = await service.status_for(session, partner_id, agreement_id)
    if status is None:
        raise not_found("agreement")
    return status


@partner_router.get(PARTNER, summary="The agreements binding the partner, with what to accept and by when",
                    responses=READ_PROBLEMS)
async def partner_agreements(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                             state: StateFilter = None) -> Page[PartnerAgreementRead]:
    found = [s for s in await service.statuses(session, partner_ids=[member.partner.id])
             if state is None or s.state == state]
    items = [await _partner_view(session, s) for s in found[page.offset:page.offset + page.limit]]
    return Page.of(items, len(found), page)


@partner_router.get(PARTNER + "/acceptances", summary="The partner's acceptance history, newest first",
                    responses=READ_PROBLEMS)
async def partner_acceptances(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                              agreement_id: uuid.UUID | None = None) -> Page[AcceptanceWithVersion]:
    stmt = service.list_acceptances(partner_id=member.partner.id, agreement_id=agreement_id)
    return await _acceptance_page(session, stmt, page)


@partner_router.get(PARTNER + "/{agreement_id}", summary="One agreement binding the partner, with its current text",
                    responses=READ_PROBLEMS)
async def partner_agreement(session: SessionDep, member: PartnerMemberDep,
                            agreement_id: uuid.UUID) -> PartnerAgreementRead:
    return await _partner_view(session, await _binding(session, member.partner.id, agreement_id))


@partner_router.post(PARTNER + "/{agreement_id}/accept", summary="Accept the agreement's current version",
                     description="Records who accepted, when, from which IP address and with which user agent. "
                                 "Accepting a version already accepted changes nothing and answers 200.",
                     responses=WRITE_PROBLEMS)
async def partner_accept(session: SessionDep, member: PartnerAdminDep, agreement_id: uuid.UUID, request: Request,
                         response: Response, data: PartnerAccept | None = None) -> PartnerAgreementRead:
    await _binding(session, member.partner.id, agreement_id)
    agreement = await service.get_agreement(session, agreement_id)
    _, created = await service.accept_current(
        session, member.actor, member.partner, agreement, version_id=data.version_id if data else None,
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"))
    response.status_code = 201 if created else 200
    return await _partner_view(session, await _binding(session, member.partner.id, agreement_id))
