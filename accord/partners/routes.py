"""Routes for partners and tiers: staff at `/admin/api/{tiers,partners}`, partners at `/api/{tiers,partners}`."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.deps import AdminDep, CatalogAdminDep, PartnerAdminDep, PartnerMemberDep, UserDep
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, paginate, read_page
from accord.customfields.models import FieldTarget
from accord.customfields.service import definitions_for, visible_values
from accord.partners import service
from accord.partners.models import Audience, Partner, PartnerStatus, PartnerType
from accord.partners.schemas import (
    CloseRequest,
    PartnerCreate,
    PartnerRead,
    PartnerSelfRead,
    PartnerSelfUpdate,
    PartnerSort,
    PartnerUpdate,
    SuspendRequest,
    TierChange,
    TierCreate,
    TierPublic,
    TierRead,
    TierReorder,
    TierUpdate,
)

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))


async def _read(session: AsyncSession, partner: Partner) -> PartnerRead:
    tiers = await service.tiers_by_id(session, [partner])
    return PartnerRead.of(partner, tiers.get(partner.tier_id))


# --- tiers (staff) -------------------------------------------------------------

@admin_router.get("/tiers", summary="List program tiers, lowest rank first")
async def list_tiers(session: SessionDep, _: AdminDep, page: PageDep) -> Page[TierRead]:
    return await read_page(session, service.list_tiers(), page, TierRead.model_validate)


@admin_router.post("/tiers", status_code=201, summary="Create a tier", responses=problem_responses(409, 422))
async def create_tier(session: SessionDep, actor: CatalogAdminDep, data: TierCreate) -> TierRead:
    return TierRead.model_validate(await service.create_tier(session, actor, data))


# Declared before `/tiers/{tier_id}` so `reorder` is never read as an id.
@admin_router.post("/tiers/reorder", summary="Reorder the tiers", responses=problem_responses(422),
                   description="Send every tier's id, lowest first. The tiers keep the rank values they had; "
                               "those values are handed out again in the new order, in one transaction.")
async def reorder_tiers(session: SessionDep, actor: CatalogAdminDep, data: TierReorder) -> list[TierRead]:
    return [TierRead.model_validate(t) for t in await service.reorder_tiers(session, actor, data.tier_ids)]


@admin_router.get("/tiers/{tier_id}", summary="Get a tier", responses=READ_PROBLEMS)
async def get_tier(session: SessionDep, _: AdminDep, tier_id: uuid.UUID) -> TierRead:
    return TierRead.model_validate(await service.get_tier(session, tier_id))


@admin_router.patch("/tiers/{tier_id}", summary="Update a tier", responses=WRITE_PROBLEMS)
async def update_tier(session: SessionDep, actor: CatalogAdminDep, tier_id: uuid.UUID, data: TierUpdate) -> TierRead:
    return TierRead.model_validate(await service.update_tier(session, actor, tier_id, data))


@admin_router.delete("/tiers/{tier_id}", status_code=204, summary="Delete a tier no partner or plan uses",
                     responses=problem_responses(404, 409))
async def delete_tier(session: SessionDep, actor: CatalogAdminDep, tier_id: uuid.UUID) -> Response:
    await service.delete_tier(session, actor, tier_id)
    return Response(status_code=204)


# --- partners (staff) ----------------------------------------------------------

@admin_router.get("/partners", summary="List partners")
async def list_partners(
    session: SessionDep, _: AdminDep, page: PageDep,
    type: PartnerType | None = None,
    tier: Annotated[str | None, Query(max_length=100, description="Tier slug or id")] = None,
    status: PartnerStatus | None = None,
    audience: Audience | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Search name, slug or contact email")] = None,
    created_after: Annotated[datetime | None, Query(description="Inclusive; UTC if no zone is given")] = None,
    created_before: Annotated[datetime | None, Query(description="Exclusive; UTC if no zone is given")] = None,
    sort: PartnerSort = PartnerSort.name,
) -> Page[PartnerRead]:
    stmt = service.list_partners(type=type, tier=tier, status=status, audience=audience, search=q,
                                 created_after=created_after, created_before=created_before, sort=sort)
    rows, total = await paginate(session, stmt, page)
    tiers = await service.tiers_by_id(session, rows)
    return Page.of([PartnerRead.of(r, tiers.get(r.tier_id)) for r in rows], total, page)


@admin_router.post("/partners", status_code=201, summary="Create a partner", responses=problem_responses(409, 422))
async def create_partner(session: SessionDep, actor: AdminDep, data: PartnerCreate) -> PartnerRead:
    return await _read(session, await service.create_partner(session, actor, data))


@admin_router.get("/partners/{partner_id}", summary="Get a partner", responses=READ_PROBLEMS)
async def get_partner(session: SessionDep, _: AdminDep, partner_id: uuid.UUID) -> PartnerRead:
    return await _read(session, await service.get_partner(session, partner_id))


@admin_router.patch("/partners/{partner_id}", summary="Update a partner", responses=WRITE_PROBLEMS,
                    description="Status and tier change through their own actions, not here.")
async def update_partner(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                         data: PartnerUpdate) -> PartnerRead:
    return await _read(session, await service.update_partner(session, actor, partner_id, data))


@admin_router.delete("/partners/{partner_id}", status_code=204, summary="Delete a partner with nothing attached",
                     responses=problem_responses(404, 409),
                     description="A partner with members, applications or subscriptions cannot be deleted "
                                 "(409); close it instead.")
async def delete_partner(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID) -> Response:
    await service.delete_partner(session, actor, partner_id)
    return Response(status_code=204)


@admin_router.post("/partners/{partner_id}/activate", summary="Approve a pending or resume a suspended partner",
                   responses=problem_responses(404, 409))
async def activate_partner(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID) -> PartnerRead:
    return await _read(session, await service.activate_partner(session, actor, partner_id))


@admin_router.post("/partners/{partner_id}/suspend", summary="Suspend an active partner", responses=WRITE_PROBLEMS)
async def suspend_partner(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                          data: SuspendRequest) -> PartnerRead:
    return await _read(session, await service.suspend_partner(session, actor, partner_id, data.reason))


@admin_router.post("/partners/{partner_id}/close", summary="Close a partner for good", responses=WRITE_PROBLEMS)
async def close_partner(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID,
                        data: CloseRequest | None = None) -> PartnerRead:
    reason = data.reason if data else ""
    return await _read(session, await service.close_partner(session, actor, partner_id, reason))


@admin_router.post("/partners/{partner_id}/tier", summary="Move a partner to another tier", responses=WRITE_PROBLEMS)
async def change_tier(session: SessionDep, actor: AdminDep, partner_id: uuid.UUID, data: TierChange) -> PartnerRead:
    return await _read(session, await service.change_tier(session, actor, partner_id, data.tier))


# --- the partner's own view --------------------------------------------------------

async def _self_read(session: AsyncSession, partner: Partner) -> PartnerSelfRead:
    tiers = await service.tiers_by_id(session, [partner])
    definitions = await definitions_for(session, FieldTarget.partner)
    return PartnerSelfRead.of(partner, tiers.get(partner.tier_id), visible_values(partner.custom_fields, definitions))


@partner_router.get("/tiers", summary="The program's tiers, lowest rank first")
async def list_public_tiers(session: SessionDep, _: UserDep, page: PageDep) -> Page[TierPublic]:
    return await read_page(session, service.list_tiers(), page, TierPublic.model_validate)


@partner_router.get("/partners/{partner_id}", summary="Your partner organisation", responses=READ_PROBLEMS)
async def get_own_partner(session: SessionDep, member: PartnerMemberDep) -> PartnerSelfRead:
    return await _self_read(session, member.partner)


@partner_router.patch("/partners/{partner_id}", summary="Update your partner organisation's details",
                      responses=WRITE_PROBLEMS,
                      description="Partner admins only. Name, contact details, website, country and visible "
                                  "custom fields; the rest is the program's to change.")
async def update_own_partner(session: SessionDep, member: PartnerAdminDep, data: PartnerSelfUpdate) -> PartnerSelfRead:
    partner = await service.update_own_partner(session, member.actor, member.partner, data)
    return await _self_read(session, partner)
