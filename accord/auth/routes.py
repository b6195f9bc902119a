"""Admin routes for admin API tokens: `/admin/api/tokens`."""
from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy import select

from accord.auth import service
from accord.auth.deps import OwnerDep
from accord.auth.models import AdminToken
from accord.auth.schemas import AdminTokenCreate, AdminTokenCreated, AdminTokenRead
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, read_page

admin_router = APIRouter(responses=problem_responses(401, 403))


@admin_router.get("/tokens", summary="List admin tokens")
async def list_tokens(session: SessionDep, _: OwnerDep, page: PageDep) -> Page[AdminTokenRead]:
    newest_first = select(AdminToken).order_by(AdminToken.created_at.desc())
    return await read_page(session, newest_first, page, AdminTokenRead.model_validate)


@admin_router.post("/tokens", status_code=201, summary="Create an admin token (the secret is shown once)",
                   responses=problem_responses(422))
async def create_token(session: SessionDep, settings: SettingsDep, actor: OwnerDep,
                       data: AdminTokenCreate) -> AdminTokenCreated:
    token, secret = await service.create_admin_token(session, settings.secret_key, actor, name=data.name,
                                                     role=data.role, expires_at=data.expires_at)
    await session.flush()
    return AdminTokenCreated(**AdminTokenRead.model_validate(token).model_dump(), token=secret)


@admin_router.post("/tokens/{token_id}/revoke", summary="Revoke an admin token now", responses=READ_PROBLEMS)
async def revoke_token(session: SessionDep, actor: OwnerDep, token_id: uuid.UUID) -> AdminTokenRead:
    return AdminTokenRead.model_validate(await service.revoke_admin_token(session, actor, token_id))
