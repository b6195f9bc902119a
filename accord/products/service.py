"""Products (access groups): which APIs, or which methods of them, a subscription gives access to.

A product holds whole APIs; an API with selected methods (ProductMethod rows) exposes only
its root metric (`hits`, the total of its calls), those methods and the methods under them.
Plans of the product may only limit, disable or price metrics the product exposes, so any
change that would shrink the product under an existing plan is refused (409) until the plan
is changed. Never commits; the caller does.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.catalog.models import Api, Metric, Visibility
from accord.core.clock import utcnow
from accord.core.errors import ProblemError, conflict, invalid, not_found, reject_nulls
from accord.plans.models import Plan, PlanDisabledMetric, PlanLimit, PlanPriceTier
from accord.products.models import Product, ProductApi, ProductMethod
from accord.products.schemas import (
    MetricSelector,
    ProductApiRead,
    ProductCreate,
    ProductMethodRead,
    ProductRead,
    ProductUpdate,
)
from accord.subscriptions.models import Subscription

class FieldErrors:
    """Collects every `{field, reason}` of a request so they are reported together."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, reason: str) -> None:
        self.items.append({"field": field, "reason": reason})

    def raise_if_any(self) -> None:
        if self.items:
            detail = "; ".join(f"{e['field']}: {e['reason']}" for e in self.items[:5])
            raise ProblemError("validation-error", detail, self.items)


def _prefix(field: str) -> str:
    return f"{field}." if field else ""


# --- reading --------------------------------------------------------------

def list_products(*, visibility: Visibility | None = None, search: str | None = None,
                  tiers: Iterable[Visibility] | None = None) -> Select:
    stmt = select(Product).order_by(Product.slug)
    if visibility:
        stmt = stmt.where(Product.visibility == visibility)
    if tiers is not None:
        stmt = stmt.where(Product.visibility.in_(list(tiers)))
    if search:
        needle = search.lower()
        stmt = stmt.where(or_(func.lower(Product.name).contains(needle), Product.slug.contains(needle)))
    return stmt


async def get_product(session: AsyncSession, product_id: uuid.UUID) -> Product:
    product = await session.get(Product, product_id)
    if product is None:
        raise not_found("product")
    return product


async def api_ids_of(session: AsyncSession, product_id: uuid.UUID) -> set[uuid.UUID]:
    return set(await session.scalars(select(ProductApi.api_id).where(ProductApi.product_id == product_id)))


async def selected_method_ids(session: AsyncSession, product_id: uuid.UUID) -> set[uuid.UUID]:
    return set(await session.scalars(select(ProductMethod.metric_id).where(ProductMethod.product_id == product_id)))


async def _exposure(session: AsyncSession, api_ids: Iterable[uuid.UUID],
                    selected_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Metric]:
    """Metrics exposed by these APIs when these methods are selected (see the module docstring)."""
    api_ids = set(api_ids)
    selected = set(selected_ids)
    if not api_ids:
        return {}
    metrics = list(await session.scalars(select(Metric).where(Metric.api_id.in_(api_ids))))
    apis_with_selection = {m.api_id for m in metrics if m.id in selected}
    children: dict[uuid.UUID, list[Metric]] = defaultdict(list)
    for metric in metrics:
        if metric.parent_id is not None:
            children[metric.parent_id].append(metric)
    exposed: dict[uuid.UUID, Metric] = {}
    for metric in metrics:
        if metric.api_id not in apis_with_selection or metric.parent_id is None:
            exposed[metric.id] = metric
    # A selected method brings the methods under it: their calls count against it.
    stack = [m for m in metrics if m.id in selected]
    seen: set[uuid.UUID] = set()
    while stack:
        metric = stack.pop()
        if metric.id not in seen:
            seen.add(metric.id)
            exposed[metric.id] = metric
            stack.extend(children[metric.id])
    return exposed


async def exposed_metrics(session: AsyncSession, product_id: uuid.UUID) -> dict[uuid.UUID, Metric]:
    """Every metric the product gives access to, by id (the gateway and plans check against this)."""
    return await _exposure(session, await api_ids_of(session, product_id),
                           await selected_method_ids(session, product_id))


async def product_reads(session: AsyncSession, products: Sequence[Product]) -> list[ProductRead]:
    """Response shapes for several products, with their APIs and selected methods, in three queries."""
    ids = [p.id for p in products]
    apis: dict[uuid.UUID, list[Api]] = defaultdict(list)
    methods: dict[uuid.UUID, list[tuple[Metric, Api]]] = defaultdict(list)
    if ids:
        for product_id, api in await session.execute(
                select(ProductApi.product_id, Api).join(Api, Api.id == ProductApi.api_id)
                .where(ProductApi.product_id.in_(ids))):
            apis[product_id].append(api)
        for product_id, metric, api in await session.execute(
                select(ProductMethod.product_id, Metric, Api).join(Metric, Metric.id == ProductMethod.metric_id)
                .join(Api, Api.id == Metric.api_id).where(ProductMethod.product_id.in_(ids))):
            methods[product_id].append((metric, api))
    out = []
    for product in products:
        selected_apis = {api.id for _, api in methods[product.id]}
        out.append(ProductRead(
            id=product.id, name=product.name, slug=product.slug, description=product.description,
            notes=product.notes, visibility=product.visibility,
            apis=[ProductApiRead(id=a.id, slug=a.slug, name=a.name, whole=a.id not in selected_apis)
                  for a in sorted(apis[product.id], key=lambda a: a.slug)],
            methods=[ProductMethodRead(metric_id=m.id, api_id=a.id, api=a.slug, metric=m.system_name,
                                       friendly_name=m.friendly_name)
                     for m, a in sorted(methods[product.id], key=lambda ma: (ma[1].slug, ma[0].system_name))],
            created_at=product.created_at, updated_at=product.updated_at,
        ))
    return out


async def product_read(session: AsyncSession, product: Product) -> ProductRead:
    return (await product_reads(session, [product]))[0]


async def _audit_view(session: AsyncSession, product: Product) -> dict[str, Any]:
    await session.flush()
    view = audit.snapshot(product)
    read = await product_read(session, product)
    view["apis"] = [a.slug for a in read.apis]
    view["methods"] = [f"{m.api}/{m.metric}" for m in read.methods]
    return view


# --- resolving references ---------------------------------------------------

async def find_api(session: AsyncSession, ref: str) -> Api | None:
    """An API by id or, failing that, by slug (a UUID is also a valid slug)."""
    if "\x00" in ref:  # no slug holds NUL, and PostgreSQL refuses it in a query
        return None
    try:
        api = await session.get(Api, uuid.UUID(ref))
        if api is not None:
            return api
    except ValueError:
        pass
    return await session.scalar(select(Api).where(Api.slug == ref))


async def find_metric(session: AsyncSession, selector: MetricSelector, field: str,
                      errors: FieldErrors) -> Metric | None:
    """The metric a selector names, or None with the reason added to `errors`."""
    where = _prefix(field)
    if selector.metric_id is not None:
        if selector.api is not None or selector.metric is not None:
            errors.add(f"{where}metric_id", "give either metric_id, or api and metric, not both")
            return None
        metric = await session.get(Metric, selector.metric_id)
        if metric is None:
            errors.add(f"{where}metric_id", "no such metric")
        return metric
    if selector.api is None or selector.metric is None:
        errors.add(f"{where}{'metric' if selector.api else 'api'}",
                   "name the metric by metric_id, or by api (slug) and metric (system name)")
        return None
    api = await session.scalar(select(Api).where(Api.slug == selector.api))
    if api is None:
        errors.add(f"{where}api", f"no API with slug {selector.api!r}")
        return None
    metric = await session.scalar(select(Metric).where(Metric.api_id == api.id,
                                                       Metric.system_name == selector.metric))
    if metric is None:
        errors.add(f"{where}metric", f"no metric {selector.metric!r} in API {api.slug!r}")
    return metric


async def resolve_product_metrics(session: AsyncSession, product_id: uuid.UUID,
                                  selectors: Sequence[MetricSelector], field: str,
                                  exposed: dict[uuid.UUID, Metric] | None = None) -> list[Metric]:
    """Resolve selectors (reported as `field.N…`) to metrics the product exposes, or raise 422."""
    if exposed is None:
        exposed = await exposed_metrics(session, product_id)
    api_ids = {m.api_id for m in exposed.values()}
    errors = FieldErrors()
    out: list[Metric] = []
    for index, selector in enumerate(selectors):
        where = f"{field}.{index}" if field else ""
        metric = await find_metric(session, selector, where, errors)
        if metric is None:
            continue
        target = f"{_prefix(where)}{'metric_id' if selector.metric_id else 'api'}"
        if metric.api_id not in api_ids:
            api = await session.get(Api, metric.api_id)
            errors.add(target, f"the API {api.slug!r} is not in this product")
        elif metric.id not in exposed:
            errors.add(f"{_prefix(where)}{'metric_id' if selector.metric_id else 'metric'}",
                       f"{metric.system_name!r} is not among the product's selected methods of its API")
        else:
            out.append(metric)
    errors.raise_if_any()
    return out


async def _resolve_apis(session: AsyncSession, refs: Sequence[str], field: str) -> list[Api]:
    errors = FieldErrors()
    apis: list[Api] = []
    for index, ref in enumerate(refs):
        api = await find_api(session, ref)
        if api is None:
            errors.add(f"{field}.{index}", f"no API with id or slug {ref!r}")
        elif api.id in {a.id for a in apis}:
            errors.add(f"{field}.{index}", f"API {api.slug!r} is listed twice")
        else:
            apis.append(api)
    errors.raise_if_any()
    return apis


async def _resolve_methods(session: AsyncSession, api_ids: set[uuid.UUID], selectors: Sequence[MetricSelector],
                           field: str) -> list[Metric]:
    errors = FieldErrors()
    metrics: list[Metric] = []
    for index, selector in enumerate(selectors):
        where = f"{field}.{index}"
        metric = await find_metric(session, selector, where, errors)
        if metric is None:
            continue
        key = "metric_id" if selector.metric_id else "api"
        if metric.api_id not in api_ids:
            api = await session.get(Api, metric.api_id)
            errors.add(f"{where}.{key}", f"the API {api.slug!r} is not in this product; add it first")
        elif metric.parent_id is None:
            errors.add(f"{where}.{'metric_id' if selector.metric_id else 'metric'}",
                       "the root metric is not a method; leave the API without selected methods to include it whole")
        elif metric.id in {m.id for m in metrics}:
            errors.add(where, f"method {metric.system_name!r} is listed twice")
        else:
            metrics.append(metric)
    errors.raise_if_any()
    return metrics


# --- changing a product's contents --------------------------------------------

async def _check_plans_fit(session: AsyncSession, product_id: uuid.UUID, exposed: dict[uuid.UUID, Metric],
                           field: str) -> None:
    """Refuse a change that would leave a plan limiting, disabling or pricing a metric no longer in the product."""
    for table, what in ((PlanLimit, "limits"), (PlanDisabledMetric, "disables"), (PlanPriceTier, "prices")):
        rows = await session.execute(
            select(Plan.slug, Api.slug, Metric.system_name).select_from(table)
            .join(Plan, Plan.id == table.plan_id).join(Metric, Metric.id == table.metric_id)
            .join(Api, Api.id == Metric.api_id)
            .where(Plan.product_id == product_id, table.metric_id.not_in(list(exposed)))
            .limit(1))
        found = rows.first()
        if found is not None:
            plan, api, metric = found
            raise conflict(field, f"plan {plan!r} {what} {api}/{metric}, which this change removes from the "
                                  "product; change the plan first")


async def _set_contents(session: AsyncSession, product: Product, apis: Sequence[Api] | None,
                        methods: Sequence[MetricSelector] | None, field: str) -> None:
    """Replace the product's APIs and/or selected methods (None leaves that part as it is)."""
    current_api_ids = await api_ids_of(session, product.id)
    api_ids = {a.id for a in apis} if apis is not None else current_api_ids
    if methods is not None:
        selected = {m.id for m in await _resolve_methods(session, api_ids, methods, "methods")}
    else:
        # Methods of APIs that leave the product leave with them.
        selected = {mid for mid, api_id in await session.execute(
            select(ProductMethod.metric_id, Metric.api_id).join(Metric, Metric.id == ProductMethod.metric_id)
            .where(ProductMethod.product_id == product.id)) if api_id in api_ids}
    await _check_plans_fit(session, product.id, await _exposure(session, api_ids, selected), field)

    current_selected = await selected_method_ids(session, product.id)
    if current_api_ids - api_ids:
        await session.execute(delete(ProductApi).where(ProductApi.product_id == product.id,
                                                       ProductApi.api_id.in_(current_api_ids - api_ids)))
    if current_selected - selected:
        await session.execute(delete(ProductMethod).where(ProductMethod.product_id == product.id,
                                                          ProductMethod.metric_id.in_(current_selected - selected)))
    session.add_all(ProductApi(product_id=product.id, api_id=api_id) for api_id in api_ids - current_api_ids)
    session.add_all(ProductMethod(product_id=product.id, metric_id=mid) for mid in selected - current_selected)
    await session.flush()


async def _check_slug(session: AsyncSession, slug: str | None, product_id: uuid.UUID | None) -> None:
    if slug is None:
        return
    other = await session.scalar(select(Product.id).where(Product.slug == slug))
    if other is not None and other != product_id:
        raise conflict("slug", f"a product with slug {slug!r} already exists")


async def create_product(session: AsyncSession, actor: Actor, data: ProductCreate) -> Product:
    await _check_slug(session, data.slug, None)
    apis = await _resolve_apis(session, data.apis, "apis")
    product = Product(name=data.name, slug=data.slug, description=data.description, notes=data.notes,
                      visibility=data.visibility)
    session.add(product)
    await session.flush()
    await _set_contents(session, product, apis, data.methods, "apis")
    await audit.record(session, actor, "product.created", product, after=await _audit_view(session, product))
    return product


async def update_product(session: AsyncSession, actor: Actor, product_id: uuid.UUID, data: ProductUpdate) -> Product:
    product = await get_product(session, product_id)
    before = await _audit_view(session, product)
    changes = data.model_dump(exclude_unset=True, exclude={"apis", "methods"})
    reject_nulls(changes)
    for key in ("apis", "methods"):
        if key in data.model_fields_set and getattr(data, key) is None:
            raise invalid(key, "may not be null; send [] to empty it")
    await _check_slug(session, changes.get("slug"), product.id)
    apis = await _resolve_apis(session, data.apis, "apis") if data.apis is not None else None
    if apis is not None or data.methods is not None:
        await _set_contents(session, product, apis, data.methods, "apis" if apis is not None else "methods")
    for key, value in changes.items():
        setattr(product, key, value)
    await audit.record(session, actor, "product.updated", product, before=before,
                       after=await _audit_view(session, product))
    return product


async def _change_contents(session: AsyncSession, actor: Actor, product_id: uuid.UUID, action: str,
                           apis: Sequence[Api] | None, methods: Sequence[MetricSelector] | None,
                           field: str) -> Product:
    product = await get_product(session, product_id)
    before = await _audit_view(session, product)
    await _set_contents(session, product, apis, methods, field)
    product.updated_at = utcnow()  # the contents live in other tables; the product still changed
    await audit.record(session, actor, action, product, before=before, after=await _audit_view(session, product))
    return product


async def set_apis(session: AsyncSession, actor: Actor, product_id: uuid.UUID, refs: Sequence[str]) -> Product:
    await get_product(session, product_id)
    apis = await _resolve_apis(session, refs, "apis")
    return await _change_contents(session, actor, product_id, "product.apis_set", apis, None, "apis")


async def add_api(session: AsyncSession, actor: Actor, product_id: uuid.UUID, ref: str) -> Product:
    await get_product(session, product_id)
    api = await find_api(session, ref)
    if api is None:
        raise invalid("api", f"no API with id or slug {ref!r}")
    current = await api_ids_of(session, product_id)
    if api.id in current:
        raise conflict("api", f"API {api.slug!r} is already in the product")
    apis = [a for a in await session.scalars(select(Api).where(Api.id.in_(current)))] + [api]
    return await _change_contents(session, actor, product_id, "product.api_added", apis, None, "api")


async def remove_api(session: AsyncSession, actor: Actor, product_id: uuid.UUID, ref: str) -> Product:
    await get_product(session, product_id)
    api = await find_api(session, ref)
    current = await api_ids_of(session, product_id)
    if api is None or api.id not in current:
        raise not_found("API in this product")
    apis = list(await session.scalars(select(Api).where(Api.id.in_(current - {api.id}))))
    return await _change_contents(session, actor, product_id, "product.api_removed", apis, None, "api")


async def set_methods(session: AsyncSession, actor: Actor, product_id: uuid.UUID,
                      selectors: Sequence[MetricSelector]) -> Product:
    return await _change_contents(session, actor, product_id, "product.methods_set", None, selectors, "methods")


async def delete_product(session: AsyncSession, actor: Actor, product_id: uuid.UUID) -> None:
    product = await get_product(session, product_id)
    used = await session.scalar(select(func.count()).select_from(Subscription)
                                .where(Subscription.product_id == product.id))
    if used:
        raise conflict("product_id", f"{used} subscription(s) reference this product; end and remove them first")
    before = await _audit_view(session, product)
    before["plans"] = list(await session.scalars(select(Plan.slug).where(Plan.product_id == product.id)
                                                 .order_by(Plan.slug)))
    await session.delete(product)
    await session.flush()
    await audit.record(session, actor, "product.deleted", target_type="products", target_id=str(product_id),
                       before=before)
