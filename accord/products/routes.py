"""Routes for products: admin `/admin/api/products/…` and the partner catalog `/api/partners/{id}/products`."""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from accord.auth.deps import AdminDep, CatalogAdminDep, PartnerMemberDep
from accord.catalog.models import Visibility
from accord.core.deps import SessionDep
from accord.core.errors import READ_PROBLEMS, WRITE_PROBLEMS, problem_responses
from accord.core.pagination import Page, PageDep, paginate
from accord.plans import service as plans
from accord.plans.schemas import PartnerProductRead
from accord.products import service
from accord.products.schemas import (
    ProductApiAdd,
    ProductApisSet,
    ProductCreate,
    ProductMethodsSet,
    ProductRead,
    ProductUpdate,
)

admin_router = APIRouter(responses=problem_responses(401, 403))
partner_router = APIRouter(responses=problem_responses(401, 403))
Search = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$", description="Search name or slug")]


# --- admin ------------------------------------------------------------------

@admin_router.get("/products", summary="List products")
async def list_products(session: SessionDep, _: AdminDep, page: PageDep, visibility: Visibility | None = None,
                        q: Search = None) -> Page[ProductRead]:
    rows, total = await paginate(session, service.list_products(visibility=visibility, search=q), page)
    return Page.of(await service.product_reads(session, rows), total, page)


@admin_router.post("/products", status_code=201, summary="Create a product", responses=WRITE_PROBLEMS)
async def create_product(session: SessionDep, actor: CatalogAdminDep, data: ProductCreate) -> ProductRead:
    return await service.product_read(session, await service.create_product(session, actor, data))


@admin_router.get("/products/{product_id}", summary="Get a product", responses=READ_PROBLEMS)
async def get_product(session: SessionDep, _: AdminDep, product_id: uuid.UUID) -> ProductRead:
    return await service.product_read(session, await service.get_product(session, product_id))


@admin_router.patch("/products/{product_id}", summary="Update a product", responses=WRITE_PROBLEMS)
async def update_product(session: SessionDep, actor: CatalogAdminDep, product_id: uuid.UUID,
                         data: ProductUpdate) -> ProductRead:
    return await service.product_read(session, await service.update_product(session, actor, product_id, data))


@admin_router.delete("/products/{product_id}", status_code=204, summary="Delete a product and its plans",
                     responses=WRITE_PROBLEMS)
async def delete_product(session: SessionDep, actor: CatalogAdminDep, product_id: uuid.UUID) -> Response:
    await service.delete_product(session, actor, product_id)
    return Response(status_code=204)


@admin_router.put("/products/{product_id}/apis", summary="Set the product's APIs", responses=WRITE_PROBLEMS)
async def set_apis(session: SessionDep, actor: CatalogAdminDep, product_id: uuid.UUID,
                   data: ProductApisSet) -> ProductRead:
    return await service.product_read(session, await service.set_apis(session, actor, product_id, data.apis))


@admin_router.post("/products/{product_id}/apis", summary="Add an API to the product", responses=WRITE_PROBLEMS)
async def add_api(session: SessionDep, actor: CatalogAdminDep, product_id: uuid.UUID,
                  data: ProductApiAdd) -> ProductRead:
    return await service.product_read(session, await service.add_api(session, actor, product_id, data.api))


@admin_router.delete("/products/{product_id}/apis/{api}", summary="Remove an API (id or slug) from the product",
                     responses=WRITE_PROBLEMS)
async def remove_api(session: SessionDep, actor: CatalogAdminDep, product_id: uuid.UUID, api: str) -> ProductRead:
    return await service.product_read(session, await service.remove_api(session, actor, product_id, api))


@admin_router.put("/products/{product_id}/methods", summary="Set the product's selected methods",
                  responses=WRITE_PROBLEMS)
async def set_methods(session: SessionDep, actor: CatalogAdminDep, product_id: uuid.UUID,
                      data: ProductMethodsSet) -> ProductRead:
    return await service.product_read(session, await service.set_methods(session, actor, product_id, data.methods))


# --- partners -----------------------------------------------------------------

@partner_router.get("/partners/{partner_id}/products", summary="Products the partner may subscribe to",
                    responses=READ_PROBLEMS)
async def partner_products(session: SessionDep, member: PartnerMemberDep, page: PageDep,
                           q: Search = None) -> Page[PartnerProductRead]:
    rows, total = await paginate(session, plans.visible_products(member.partner, search=q), page)
    return Page.of(await plans.partner_product_reads(session, member.partner, rows), total, page)


@partner_router.get("/partners/{partner_id}/products/{product_id}", summary="One product the partner may see",
                    responses=READ_PROBLEMS)
async def partner_product(session: SessionDep, member: PartnerMemberDep,
                          product_id: uuid.UUID) -> PartnerProductRead:
    product = await plans.visible_product(session, member.partner, product_id)
    return (await plans.partner_product_reads(session, member.partner, [product]))[0]
