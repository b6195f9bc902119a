"""Admin routes for plans: `/admin/api/products/{id}/plans` and `/admin/api/plans/{id}/…`."""
from __future__ import annotations

import uuid
from typing import TypeVar

from fastapi import APIRouter, Response
from sqlalchemy.ext.asyncio import AsyncSession

from accord.auth.deps import AdminDep, CatalogAdminDep
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, PageParams, paginate
from accord.plans import service
from accord.plans.schemas import (
    DisabledMethodRead,
    DisabledMethodsSet,
    LimitCreate,
    LimitRead,
    LimitsSet,
    LimitUpdate,
    PlanCreate,
    PlanRead,
    PlanUpdate,
    PriceTierCreate,
    PriceTierRead,
    PriceTiersSet,
)
from accord.products import service as products
from accord.products.schemas import MetricSelector

admin_router = APIRouter(responses=problem_responses(401, 403))
T = TypeVar("T")


def _page(items: list[T], page: PageParams) -> Page[T]:
    # A plan's lists are small and already sorted by the read shape; slice them in memory.
    return Page.of(items[page.offset:page.offset + page.limit], len(items), page)


async def _read(session: AsyncSession, plan_id: uuid.UUID) -> PlanRead:
    return await service.plan_read(session, await service.get_plan(session, plan_id))


# --- plans --------------------------------------------------------------------

@admin_router.get("/products/{product_id}/plans", summary="List a product's plans", responses=READ_PROBLEMS)
async def list_plans(session: SessionDep, _: AdminDep, product_id: uuid.UUID, page: PageDep,
                     published: bool | None = None) -> Page[PlanRead]:
    await products.get_product(session, product_id)
    rows, total = await paginate(session, service.list_plans(product_id, published=published), page)
    return Page.of(await service.plan_reads(session, rows), total, page)


@admin_router.post("/products/{product_id}/plans", status_code=201,
                   summary="Create a plan, with its limits, disabled methods and price tiers", responses=WRITE_PROBLEMS)
async def create_plan(session: SessionDep, actor: CatalogAdminDep, product_id: uuid.UUID,
                      data: PlanCreate) -> PlanRead:
    return await service.plan_read(session, await service.create_plan(session, actor, product_id, data))


@admin_router.get("/plans/{plan_id}", summary="Get a plan", responses=READ_PROBLEMS)
async def get_plan(session: SessionDep, _: AdminDep, plan_id: uuid.UUID) -> PlanRead:
    return await _read(session, plan_id)


@admin_router.patch("/plans/{plan_id}", summary="Update a plan; given lists replace the plan's",
                    responses=WRITE_PROBLEMS)
async def update_plan(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID, data: PlanUpdate) -> PlanRead:
    return await service.plan_read(session, await service.update_plan(session, actor, plan_id, data))


@admin_router.delete("/plans/{plan_id}", status_code=204, summary="Delete a plan", responses=WRITE_PROBLEMS)
async def delete_plan(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID) -> Response:
    await service.delete_plan(session, actor, plan_id)
    return Response(status_code=204)


# --- limits ---------------------------------------------------------------------

@admin_router.get("/plans/{plan_id}/limits", summary="List a plan's limits", responses=READ_PROBLEMS)
async def list_limits(session: SessionDep, _: AdminDep, plan_id: uuid.UUID, page: PageDep) -> Page[LimitRead]:
    return _page((await _read(session, plan_id)).limits, page)


@admin_router.put("/plans/{plan_id}/limits", summary="Replace a plan's limits", responses=WRITE_PROBLEMS)
async def replace_limits(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                         data: LimitsSet) -> list[LimitRead]:
    plan = await service.replace_limits(session, actor, plan_id, data.limits)
    return (await service.plan_read(session, plan)).limits


@admin_router.post("/plans/{plan_id}/limits", status_code=201, summary="Add a limit", responses=WRITE_PROBLEMS)
async def add_limit(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID, data: LimitCreate) -> LimitRead:
    row = await service.add_limit(session, actor, plan_id, data)
    return next(x for x in (await _read(session, plan_id)).limits if x.id == row.id)


@admin_router.patch("/plans/{plan_id}/limits/{limit_id}", summary="Change a limit's period or value",
                    responses=WRITE_PROBLEMS)
async def update_limit(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID, limit_id: uuid.UUID,
                       data: LimitUpdate) -> LimitRead:
    row = await service.update_limit(session, actor, plan_id, limit_id, data)
    return next(x for x in (await _read(session, plan_id)).limits if x.id == row.id)


@admin_router.delete("/plans/{plan_id}/limits/{limit_id}", status_code=204, summary="Remove a limit",
                     responses=WRITE_PROBLEMS)
async def remove_limit(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                       limit_id: uuid.UUID) -> Response:
    await service.remove_limit(session, actor, plan_id, limit_id)
    return Response(status_code=204)


# --- disabled methods -------------------------------------------------------------

@admin_router.get("/plans/{plan_id}/disabled-methods", summary="List the methods a plan disables",
                  responses=READ_PROBLEMS)
async def list_disabled(session: SessionDep, _: AdminDep, plan_id: uuid.UUID,
                        page: PageDep) -> Page[DisabledMethodRead]:
    return _page((await _read(session, plan_id)).disabled_methods, page)


@admin_router.put("/plans/{plan_id}/disabled-methods", summary="Replace the methods a plan disables",
                  responses=WRITE_PROBLEMS)
async def replace_disabled(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                           data: DisabledMethodsSet) -> list[DisabledMethodRead]:
    plan = await service.replace_disabled_methods(session, actor, plan_id, data.disabled_methods)
    return (await service.plan_read(session, plan)).disabled_methods


@admin_router.post("/plans/{plan_id}/disabled-methods", status_code=201, summary="Disable a method in a plan",
                   responses=WRITE_PROBLEMS)
async def disable_method(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                         data: MetricSelector) -> DisabledMethodRead:
    metric = await service.disable_method(session, actor, plan_id, data)
    return next(x for x in (await _read(session, plan_id)).disabled_methods if x.metric_id == metric.id)


@admin_router.delete("/plans/{plan_id}/disabled-methods/{metric_id}", status_code=204,
                     summary="Enable a disabled method again", responses=WRITE_PROBLEMS)
async def enable_method(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                        metric_id: uuid.UUID) -> Response:
    await service.enable_method(session, actor, plan_id, metric_id)
    return Response(status_code=204)


# --- price tiers ------------------------------------------------------------------

@admin_router.get("/plans/{plan_id}/price-tiers", summary="List a plan's per-unit price tiers", responses=READ_PROBLEMS)
async def list_price_tiers(session: SessionDep, _: AdminDep, plan_id: uuid.UUID,
                           page: PageDep) -> Page[PriceTierRead]:
    return _page((await _read(session, plan_id)).price_tiers, page)


@admin_router.put("/plans/{plan_id}/price-tiers", summary="Replace a plan's price tiers", responses=WRITE_PROBLEMS)
async def replace_price_tiers(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                              data: PriceTiersSet) -> list[PriceTierRead]:
    plan = await service.replace_price_tiers(session, actor, plan_id, data.price_tiers)
    return (await service.plan_read(session, plan)).price_tiers


@admin_router.post("/plans/{plan_id}/price-tiers", status_code=201, summary="Add a price tier",
                   responses=WRITE_PROBLEMS)
async def add_price_tier(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                         data: PriceTierCreate) -> PriceTierRead:
    row = await service.add_price_tier(session, actor, plan_id, data)
    return next(x for x in (await _read(session, plan_id)).price_tiers if x.id == row.id)


@admin_router.delete("/plans/{plan_id}/price-tiers/{tier_id}", status_code=204, summary="Remove a price tier",
                     responses=WRITE_PROBLEMS)
async def remove_price_tier(session: SessionDep, actor: CatalogAdminDep, plan_id: uuid.UUID,
                            tier_id: uuid.UUID) -> Response:
    await service.remove_price_tier(session, actor, plan_id, tier_id)
    return Response(status_code=204)
