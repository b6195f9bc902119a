"""Admin routes for the catalog: `/admin/api/apis/…`."""
from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from accord.auth.deps import AdminDep, CatalogAdminDep, OwnerDep
from accord.catalog import service
from accord.catalog.models import Visibility
from accord.catalog.schemas import (
    ApiCreate,
    ApiRead,
    ApiUpdate,
    GenerateResult,
    MappingRuleCreate,
    MappingRuleRead,
    MappingRuleUpdate,
    MetricCreate,
    MetricRead,
    MetricUpdate,
)
from accord.core.deps import SessionDep, SettingsDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, not_found, problem_responses
from accord.core.pagination import Page, PageDep, read_page

admin_router = APIRouter(responses=problem_responses(401, 403))


@admin_router.get("/apis", summary="List APIs")
async def list_apis(session: SessionDep, _: AdminDep, page: PageDep,
                    visibility: Visibility | None = None,
                    q: Annotated[str | None, Query(max_length=200, description="Search name or slug")] = None,
                    ) -> Page[ApiRead]:
    return await read_page(session, service.list_apis(visibility=visibility, search=q), page, ApiRead.of)


@admin_router.post("/apis", status_code=201, summary="Create an API", responses=WRITE_PROBLEMS)
async def create_api(session: SessionDep, actor: CatalogAdminDep, data: ApiCreate) -> ApiRead:
    return ApiRead.of(await service.create_api(session, actor, data))


@admin_router.get("/apis/{api_id}", summary="Get an API", responses=READ_PROBLEMS)
async def get_api(session: SessionDep, _: AdminDep, api_id: uuid.UUID) -> ApiRead:
    return ApiRead.of(await service.get_api(session, api_id))


@admin_router.patch("/apis/{api_id}", summary="Update an API", responses=WRITE_PROBLEMS)
async def update_api(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID, data: ApiUpdate) -> ApiRead:
    return ApiRead.of(await service.update_api(session, actor, api_id, data))


@admin_router.delete("/apis/{api_id}", status_code=204, summary="Delete an API", responses=WRITE_PROBLEMS)
async def delete_api(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID) -> Response:
    await service.delete_api(session, actor, api_id)
    return Response(status_code=204)


@admin_router.get("/apis/{api_id}/openapi", summary="The API's OpenAPI document", responses=READ_PROBLEMS)
async def get_openapi(session: SessionDep, _: AdminDep, api_id: uuid.UUID) -> dict[str, Any]:
    api = await service.get_api(session, api_id)
    if api.openapi is None:
        raise not_found("OpenAPI document")
    return api.openapi


@admin_router.get("/apis/{api_id}/upstream-secret", summary="The secret the gateway sends upstream for this API",
                  description="The gateway adds `X-Accord-Gateway-Secret: <secret>` to every request it forwards to "
                              "this API, so the upstream can refuse traffic that did not come through the gateway. "
                              "Owner or admin only; reading it is audited.", responses=READ_PROBLEMS)
async def get_upstream_secret(session: SessionDep, settings: SettingsDep, actor: OwnerDep,
                              api_id: uuid.UUID) -> dict[str, str]:
    from accord.audit import service as audit
    from accord.gateway.builder import upstream_secret

    api = await service.get_api(session, api_id)
    await audit.record(session, actor, "api.upstream_secret_read", target_type="apis", target_id=str(api.id))
    return {"header": "X-Accord-Gateway-Secret", "value": upstream_secret(settings.secret_key, str(api.id))}


@admin_router.post("/apis/{api_id}/generate", summary="Generate methods and mapping rules from the OpenAPI "
                   "operations", responses=WRITE_PROBLEMS)
async def generate(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID) -> GenerateResult:
    return await service.generate_from_openapi(session, actor, api_id)


@admin_router.get("/apis/{api_id}/metrics", summary="List metrics and methods", responses=READ_PROBLEMS)
async def list_metrics(session: SessionDep, _: AdminDep, api_id: uuid.UUID, page: PageDep) -> Page[MetricRead]:
    await service.get_api(session, api_id)
    return await read_page(session, service.list_metrics(api_id), page, MetricRead.model_validate)


@admin_router.post("/apis/{api_id}/metrics", status_code=201, summary="Create a metric or method",
                   responses=WRITE_PROBLEMS)
async def create_metric(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID,
                        data: MetricCreate) -> MetricRead:
    return MetricRead.model_validate(await service.create_metric(session, actor, api_id, data))


@admin_router.patch("/apis/{api_id}/metrics/{metric_id}", summary="Update a metric", responses=WRITE_PROBLEMS)
async def update_metric(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID, metric_id: uuid.UUID,
                        data: MetricUpdate) -> MetricRead:
    return MetricRead.model_validate(await service.update_metric(session, actor, api_id, metric_id, data))


@admin_router.delete("/apis/{api_id}/metrics/{metric_id}", status_code=204, summary="Delete a metric",
                     responses=WRITE_PROBLEMS)
async def delete_metric(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID,
                        metric_id: uuid.UUID) -> Response:
    await service.delete_metric(session, actor, api_id, metric_id)
    return Response(status_code=204)


@admin_router.get("/apis/{api_id}/mapping-rules", summary="List mapping rules", responses=READ_PROBLEMS)
async def list_rules(session: SessionDep, _: AdminDep, api_id: uuid.UUID, page: PageDep) -> Page[MappingRuleRead]:
    await service.get_api(session, api_id)
    return await read_page(session, service.list_rules(api_id), page, MappingRuleRead.model_validate)


@admin_router.post("/apis/{api_id}/mapping-rules", status_code=201, summary="Create a mapping rule",
                   responses=WRITE_PROBLEMS)
async def create_rule(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID,
                      data: MappingRuleCreate) -> MappingRuleRead:
    return MappingRuleRead.model_validate(await service.create_rule(session, actor, api_id, data))


@admin_router.patch("/apis/{api_id}/mapping-rules/{rule_id}", summary="Update a mapping rule", responses=WRITE_PROBLEMS)
async def update_rule(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID, rule_id: uuid.UUID,
                      data: MappingRuleUpdate) -> MappingRuleRead:
    return MappingRuleRead.model_validate(await service.update_rule(session, actor, api_id, rule_id, data))


@admin_router.delete("/apis/{api_id}/mapping-rules/{rule_id}", status_code=204, summary="Delete a mapping rule",
                     responses=WRITE_PROBLEMS)
async def delete_rule(session: SessionDep, actor: CatalogAdminDep, api_id: uuid.UUID, rule_id: uuid.UUID) -> Response:
    await service.delete_rule(session, actor, api_id, rule_id)
    return Response(status_code=204)
