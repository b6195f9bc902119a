"""Admin routes for custom field definitions: `/admin/api/custom-fields`."""
from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from accord.auth.deps import AdminDep, CatalogAdminDep
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, read_page
from accord.customfields import service
from accord.customfields.models import FieldTarget
from accord.customfields.schemas import FieldDefinitionCreate, FieldDefinitionRead, FieldDefinitionUpdate

admin_router = APIRouter(responses=problem_responses(401, 403))


@admin_router.get("/custom-fields", summary="List custom field definitions")
async def list_fields(session: SessionDep, _: AdminDep, page: PageDep,
                      target: FieldTarget | None = None) -> Page[FieldDefinitionRead]:
    return await read_page(session, service.list_definitions(target), page, FieldDefinitionRead.model_validate)


@admin_router.post("/custom-fields", status_code=201, summary="Define a custom field",
                   responses=problem_responses(409, 422))
async def create_field(session: SessionDep, actor: CatalogAdminDep,
                       data: FieldDefinitionCreate) -> FieldDefinitionRead:
    return FieldDefinitionRead.model_validate(await service.create_definition(session, actor, data))


@admin_router.get("/custom-fields/{field_id}", summary="Get a custom field definition",
                  responses=READ_PROBLEMS)
async def get_field(session: SessionDep, _: AdminDep, field_id: uuid.UUID) -> FieldDefinitionRead:
    return FieldDefinitionRead.model_validate(await service.get_definition(session, field_id))


@admin_router.patch("/custom-fields/{field_id}", summary="Update a custom field definition",
                    responses=problem_responses(404, 422))
async def update_field(session: SessionDep, actor: CatalogAdminDep, field_id: uuid.UUID,
                       data: FieldDefinitionUpdate) -> FieldDefinitionRead:
    return FieldDefinitionRead.model_validate(await service.update_definition(session, actor, field_id, data))


@admin_router.delete("/custom-fields/{field_id}", status_code=204, summary="Delete a custom field definition",
                     responses=READ_PROBLEMS)
async def delete_field(session: SessionDep, actor: CatalogAdminDep, field_id: uuid.UUID) -> Response:
    await service.delete_definition(session, actor, field_id)
    return Response(status_code=204)
