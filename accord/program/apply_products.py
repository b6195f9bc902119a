"""Applying products and their plans (limits, disabled methods, pricing).

A product's contents and its plans' limits depend on each other: the products
service refuses to take an API (or method) out of a product while a plan still
limits it, and the plans service refuses a limit on a metric the product does not
expose. So a product is first *widened* to the union of what it has and what the
file wants (`apply_products`), then its plans are applied, and only at the end is
it narrowed to exactly what the file says (`finish_products`), once plans that no
longer fit have been changed or pruned.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from accord.catalog.models import Api, Metric
from accord.partners.models import Tier
from accord.plans import service as plans
from accord.plans.models import Plan, PlanDisabledMetric, PlanLimit, PlanPriceTier
from accord.plans.schemas import HTTP_VERBS, LimitCreate, LimitUpdate, PlanCreate, PlanUpdate, PriceTierCreate
from accord.products import service as products
from accord.products.models import Product, ProductApi, ProductMethod
from accord.products.schemas import MetricSelector, ProductCreate, ProductUpdate
from accord.program.changes import CREATE, DELETE, UPDATE, Change, FieldChange, diff
from accord.program.context import Context
from accord.program.spec import PlanSpec, ProductSpec, ProgramSpec, split_method

_PLAN_RENAME = {"is_default": "default", "min_tier_id": "min_tier", "setup_fee": "pricing.setup_fee",
                "monthly_fee": "pricing.monthly_fee", "currency": "pricing.currency"}


def _selector(ref: str) -> MetricSelector:
    api, metric = split_method(ref)
    return MetricSelector(api=api, metric=metric)


async def metric_names(ctx: Context, metric_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """metric id → `api.metric`."""
    if not metric_ids:
        return {}
    rows = await ctx.session.execute(select(Metric.id, Api.slug, Metric.system_name)
                                     .join(Api, Api.id == Metric.api_id).where(Metric.id.in_(metric_ids)))
    return {mid: f"{api}.{name}" for mid, api, name in rows}


# --- products ----------------------------------------------------------------------

async def _contents(ctx: Context, product_id: uuid.UUID) -> tuple[list[str], list[str]]:
    """The product's API slugs and selected methods (`api.metric`), sorted."""
    apis = await ctx.session.scalars(select(Api.slug).join(ProductApi, ProductApi.api_id == Api.id)
                                     .where(ProductApi.product_id == product_id))
    method_ids = set(await ctx.session.scalars(select(ProductMethod.metric_id)
                                               .where(ProductMethod.product_id == product_id)))
    return sorted(apis), sorted((await metric_names(ctx, method_ids)).values())


def _product_desired(product: ProductSpec) -> dict[str, Any]:
    return {"name": product.name, "description": product.description, "notes": product.notes,
            "visibility": product.visibility, "apis": sorted(product.apis), "methods": sorted(product.methods)}


def _widest(current_apis: list[str], current_methods: list[str], product: ProductSpec) -> tuple[list[str], list[str]]:
    """What the product may hold while its plans change: everything it has and everything it will have.

    An API counts whole (no selected methods) if it is whole now or will be; otherwise
    its selection is the union of both selections.
    """
    def by_api(methods: list[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for ref in methods:
            out[split_method(ref)[0]].add(ref)
        return out

    now, wanted = by_api(current_methods), by_api(product.methods)
    apis = sorted(set(current_apis) | set(product.apis))
    methods: set[str] = set()
    for api in apis:
        if api not in current_apis:
            methods |= wanted.get(api, set())
        elif api in now and api in wanted:
            methods |= now[api] | wanted[api]
        elif api in now and api not in product.apis:
            methods |= now[api]  # leaving the product later; keep it as it is meanwhile
    return apis, sorted(methods)


async def apply_products(ctx: Context, spec: ProgramSpec) -> None:
    """Create products and widen existing ones, then apply every product's plans."""
    current = {p.slug: p for p in await ctx.session.scalars(select(Product))}
    for i, product in enumerate(spec.products):
        path = f"products[{i}]"
        row = current.get(product.slug)
        if row is None:
            with ctx.at(path):
                row = await products.create_product(ctx.session, ctx.actor, ProductCreate(
                    name=product.name, slug=product.slug, description=product.description, notes=product.notes,
                    visibility=product.visibility, apis=product.apis,
                    methods=[_selector(m) for m in product.methods]))
            ctx.record(CREATE, "product", product.slug)
        else:
            apis, methods = await _contents(ctx, row.id)
            fields = diff({"name": row.name, "description": row.description, "notes": row.notes,
                           "visibility": row.visibility, "apis": apis, "methods": methods}, _product_desired(product))
            if fields:
                update: dict[str, Any] = {f.name: f.new for f in fields if f.name not in {"apis", "methods"}}
                wide_apis, wide_methods = _widest(apis, methods, product)
                if wide_apis != apis or wide_methods != methods:
                    update["apis"], update["methods"] = wide_apis, [_selector(m) for m in wide_methods]
                if update:
                    with ctx.at(path):
                        await products.update_product(ctx.session, ctx.actor, row.id, ProductUpdate(**update))
                ctx.record(UPDATE, "product", product.slug, fields)
        await _apply_plans(ctx, product, row.id, path)


async def finish_products(ctx: Context, spec: ProgramSpec) -> None:
    """Narrow each product to exactly the APIs and methods the file gives it (see the module docstring)."""
    current = {p.slug: p for p in await ctx.session.scalars(select(Product))}
    for i, product in enumerate(spec.products):
        row = current[product.slug]
        apis, methods = await _contents(ctx, row.id)
        if apis != sorted(product.apis) or methods != sorted(product.methods):
            with ctx.at(f"products[{i}]"):
                await products.update_product(ctx.session, ctx.actor, row.id, ProductUpdate(
                    apis=product.apis, methods=[_selector(m) for m in product.methods]))


async def prune_plans(ctx: Context, spec: ProgramSpec) -> None:
    """Delete the plans of declared products that the file no longer lists."""
    declared = {p.slug: {plan.slug for plan in p.plans} for p in spec.products}
    rows = await ctx.session.execute(select(Plan, Product.slug).join(Product, Product.id == Plan.product_id)
                                     .order_by(Product.slug, Plan.slug))
    for plan, product in rows:
        if product in declared and plan.slug not in declared[product]:
            await ctx.remove(f"plan {product}/{plan.slug}", Change(DELETE, "plan", f"{product}/{plan.slug}"),
                             lambda plan_id=plan.id: plans.delete_plan(ctx.session, ctx.actor, plan_id))


async def prune_products(ctx: Context, spec: ProgramSpec) -> None:
    declared = {p.slug for p in spec.products}
    for product in await ctx.session.scalars(select(Product).order_by(Product.slug)):
        if product.slug not in declared:
            await ctx.remove(f"product {product.slug}", Change(DELETE, "product", product.slug),
                             lambda product_id=product.id: products.delete_product(ctx.session, ctx.actor, product_id))


# --- plans ---------------------------------------------------------------------------

def _verbs(verbs: list[str] | None) -> list[str] | None:
    return None if verbs is None else sorted(verbs, key=HTTP_VERBS.index)


def _unit_price(api: str, metric: str, from_units: int, to_units: int | None, price: Decimal) -> dict[str, Any]:
    return {"api": api, "metric": metric, "from_units": from_units, "to_units": to_units,
            "unit_price": Decimal(price).normalize()}


def _sorted_prices(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda p: (p["api"], p["metric"], p["from_units"]))


def _plan_desired(plan: PlanSpec, manage_default: bool) -> dict[str, Any]:
    desired: dict[str, Any] = {
        "name": plan.name, "description": plan.description, "notes": plan.notes, "published": plan.published,
        "approval_required": plan.approval_required, "trial_days": plan.trial_days, "min_tier": plan.min_tier,
        "allowed_http_methods": _verbs(plan.allowed_http_methods),
        "disabled_methods": sorted(plan.disabled_methods),
        "pricing.setup_fee": plan.pricing.setup_fee, "pricing.monthly_fee": plan.pricing.monthly_fee,
        "pricing.currency": plan.pricing.currency,
        "pricing.unit_prices": _sorted_prices([_unit_price(p.api, p.metric, p.from_units, p.to_units, p.unit_price)
                                               for p in plan.pricing.unit_prices]),
    }
    if manage_default:
        # Only when the product names its default: otherwise the service's choice (the first plan) stands.
        desired["default"] = plan.default
    return desired


async def _plan_fields(ctx: Context, plan: Plan, tiers: dict[uuid.UUID, str]) -> dict[str, Any]:
    disabled = set(await ctx.session.scalars(select(PlanDisabledMetric.metric_id)
                                             .where(PlanDisabledMetric.plan_id == plan.id)))
    prices = list(await ctx.session.scalars(select(PlanPriceTier).where(PlanPriceTier.plan_id == plan.id)))
    names = await metric_names(ctx, disabled | {p.metric_id for p in prices})
    return {
        "name": plan.name, "description": plan.description, "notes": plan.notes, "published": plan.published,
        "approval_required": plan.approval_required, "trial_days": plan.trial_days,
        "min_tier": tiers.get(plan.min_tier_id) if plan.min_tier_id else None,
        "allowed_http_methods": plan.allowed_http_methods,
        "disabled_methods": sorted(names[m] for m in disabled),
        "pricing.setup_fee": plan.setup_fee, "pricing.monthly_fee": plan.monthly_fee,
        "pricing.currency": plan.currency,
        "pricing.unit_prices": _sorted_prices([_unit_price(*split_method(names[p.metric_id]), p.from_units,
                                                           p.to_units, p.unit_price) for p in prices]),
        "default": plan.is_default,
    }


def _price_tiers(plan: PlanSpec) -> list[PriceTierCreate]:
    return [PriceTierCreate(api=p.api, metric=p.metric, from_units=p.from_units, to_units=p.to_units,
                            unit_price=p.unit_price) for p in plan.pricing.unit_prices]


def _plan_update(fields: list[FieldChange], plan: PlanSpec, tier_ids: dict[str, uuid.UUID]) -> PlanUpdate:
    values: dict[str, Any] = {}
    for f in fields:
        if f.name == "default":
            if f.new:
                values["is_default"] = True  # an old default is unset by the service when another becomes it
        elif f.name == "min_tier":
            values["min_tier_id"] = tier_ids[f.new] if f.new else None
        elif f.name == "disabled_methods":
            values["disabled_methods"] = [_selector(m) for m in plan.disabled_methods]
        elif f.name == "pricing.unit_prices":
            values["price_tiers"] = _price_tiers(plan)
        else:
            values[f.name.removeprefix("pricing.")] = f.new
    return PlanUpdate(**values)


async def _apply_plans(ctx: Context, product: ProductSpec, product_id: uuid.UUID, product_path: str) -> None:
    tiers = {t.id: t.slug for t in await ctx.session.scalars(select(Tier))}
    tier_ids = {slug: tier_id for tier_id, slug in tiers.items()}
    current = {p.slug: p for p in await ctx.session.scalars(select(Plan).where(Plan.product_id == product_id))}
    manage_default = any(p.default for p in product.plans)
    for k, plan in enumerate(product.plans):
        path = f"{product_path}.plans[{k}]"
        key = f"{product.slug}/{plan.slug}"
        rename = {**_PLAN_RENAME, "price_tiers": "pricing.unit_prices"}
        row = current.get(plan.slug)
        if row is None:
            with ctx.at(path, rename):
                row = await plans.create_plan(ctx.session, ctx.actor, product_id, PlanCreate(
                    name=plan.name, slug=plan.slug, description=plan.description, notes=plan.notes,
                    published=plan.published, approval_required=plan.approval_required, is_default=plan.default,
                    trial_days=plan.trial_days, allowed_http_methods=plan.allowed_http_methods,
                    min_tier_id=tier_ids[plan.min_tier] if plan.min_tier else None,
                    setup_fee=plan.pricing.setup_fee, monthly_fee=plan.pricing.monthly_fee,
                    currency=plan.pricing.currency, disabled_methods=[_selector(m) for m in plan.disabled_methods],
                    price_tiers=_price_tiers(plan)))
            ctx.record(CREATE, "plan", key)
            await _apply_limits(ctx, plan, row.id, path, key, record=False)
            continue
        fields = diff(await _plan_fields(ctx, row, tiers), _plan_desired(plan, manage_default))
        if fields:
            update = _plan_update(fields, plan, tier_ids)
            if update.model_fields_set:
                with ctx.at(path, rename):
                    await plans.update_plan(ctx.session, ctx.actor, row.id, update)
            ctx.record(UPDATE, "plan", key, fields)
        await _apply_limits(ctx, plan, row.id, path, key, record=True)


async def _apply_limits(ctx: Context, plan: PlanSpec, plan_id: uuid.UUID, plan_path: str, plan_key: str, *,
                        record: bool) -> None:
    """Add, change and (with --prune) remove the plan's limits one at a time.

    One at a time, not as a replaced list, so each limit is its own row created in
    file order (which `accord export` keeps) and a limit left out is removed only
    with --prune.
    """
    rows = list(await ctx.session.scalars(select(PlanLimit).where(PlanLimit.plan_id == plan_id)))
    names = await metric_names(ctx, {r.metric_id for r in rows})
    current = {(names[r.metric_id], r.period.value): r for r in rows}
    declared = set()
    for j, limit in enumerate(plan.limits):
        path = f"{plan_path}.limits[{j}]"
        ident = (f"{limit.api}.{limit.metric}", limit.period.value)
        declared.add(ident)
        key = f"{plan_key} {ident[0]} per {ident[1]}"
        row = current.get(ident)
        if row is None:
            with ctx.at(path):
                await plans.add_limit(ctx.session, ctx.actor, plan_id, LimitCreate(
                    api=limit.api, metric=limit.metric, period=limit.period, value=limit.value))
            if record:
                ctx.record(CREATE, "limit", key, note=str(limit.value))
        elif row.value != limit.value:
            change = FieldChange("value", row.value, limit.value)
            with ctx.at(path):
                await plans.update_limit(ctx.session, ctx.actor, plan_id, row.id, LimitUpdate(value=limit.value))
            ctx.record(UPDATE, "limit", key, [change])
    for ident, row in sorted(current.items()):
        if ident not in declared:
            await ctx.remove(f"{plan_path}.limits", Change(DELETE, "limit", f"{plan_key} {ident[0]} per {ident[1]}"),
                             lambda limit_id=row.id: plans.remove_limit(ctx.session, ctx.actor, plan_id, limit_id))
