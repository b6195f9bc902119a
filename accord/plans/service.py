"""Plans on a product: limits, disabled methods, pricing, the default plan, and what partners see.

Every metric a plan names (limit, disabled method, price tier) must be one its product
exposes (`products.service.exposed_metrics`). A product has exactly one default plan (the
one used at sign-up) as soon as it has any plan. Never commits; the caller does.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.catalog.models import Api, Metric
from accord.core.clock import utcnow
from accord.core.errors import conflict, invalid, not_found, reject_nulls
from accord.partners.models import Partner, Tier, visible_tiers
from accord.plans.models import Period, Plan, PlanDisabledMetric, PlanLimit, PlanPriceTier
from accord.plans.schemas import (
    DisabledMethodRead,
    LimitCreate,
    LimitRead,
    LimitUpdate,
    PartnerLimitRead,
    PartnerMethodRead,
    PartnerPlanRead,
    PartnerPriceTierRead,
    PartnerProductRead,
    PartnerTierRead,
    PlanCreate,
    PlanRead,
    PlanUpdate,
    PriceTierCreate,
    PriceTierRead,
    TierSummary,
)
from accord.products import service as products
from accord.products.models import Product
from accord.products.schemas import MetricSelector
from accord.subscriptions.models import Subscription

_PERIOD_ORDER = {period: index for index, period in enumerate(Period)}
_CENTS = Decimal("0.01")
_MICROS = Decimal("0.000001")
# The inline lists of a plan request; they are written to their own tables.
_LISTS = ("limits", "disabled_methods", "price_tiers")
# Plan fields where null means something ("every HTTP method", "any tier") rather than "missing".
_NULLABLE = {"allowed_http_methods", "min_tier_id"}


# --- reading --------------------------------------------------------------

def list_plans(product_id: uuid.UUID, *, published: bool | None = None) -> Select:
    stmt = select(Plan).where(Plan.product_id == product_id).order_by(Plan.is_default.desc(), Plan.slug)
    if published is not None:
        stmt = stmt.where(Plan.published == published)
    return stmt


async def get_plan(session: AsyncSession, plan_id: uuid.UUID) -> Plan:
    plan = await session.get(Plan, plan_id)
    if plan is None:
        raise not_found("plan")
    return plan


async def default_plan(session: AsyncSession, product_id: uuid.UUID) -> Plan | None:
    """The plan a sign-up to this product gets."""
    return await session.scalar(select(Plan).where(Plan.product_id == product_id, Plan.is_default.is_(True)))


async def _metric_names(session: AsyncSession, metric_ids: set[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
    """metric id → (api slug, metric system name)."""
    if not metric_ids:
        return {}
    rows = await session.execute(select(Metric.id, Api.slug, Metric.system_name).join(Api, Api.id == Metric.api_id)
                                 .where(Metric.id.in_(metric_ids)))
    return {mid: (api, name) for mid, api, name in rows}


async def plan_reads(session: AsyncSession, plans: Sequence[Plan]) -> list[PlanRead]:
    """Response shapes for several plans with their limits, disabled methods and price tiers, in a few queries."""
    ids = [p.id for p in plans]
    limits: dict[uuid.UUID, list[PlanLimit]] = defaultdict(list)
    disabled: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    tiers: dict[uuid.UUID, list[PlanPriceTier]] = defaultdict(list)
    if ids:
        for row in await session.scalars(select(PlanLimit).where(PlanLimit.plan_id.in_(ids))):
            limits[row.plan_id].append(row)
        for plan_id, metric_id in await session.execute(
                select(PlanDisabledMetric.plan_id, PlanDisabledMetric.metric_id)
                .where(PlanDisabledMetric.plan_id.in_(ids))):
            disabled[plan_id].append(metric_id)
        for row in await session.scalars(select(PlanPriceTier).where(PlanPriceTier.plan_id.in_(ids))):
            tiers[row.plan_id].append(row)
    metric_ids = {r.metric_id for rows in limits.values() for r in rows} | {
        m for rows in disabled.values() for m in rows} | {r.metric_id for rows in tiers.values() for r in rows}
    names = await _metric_names(session, metric_ids)
    min_tier_ids = {p.min_tier_id for p in plans if p.min_tier_id}
    min_tiers = {t.id: t for t in await session.scalars(select(Tier).where(Tier.id.in_(min_tier_ids)))} \
        if min_tier_ids else {}

    out = []
    for plan in plans:
        tier = min_tiers.get(plan.min_tier_id) if plan.min_tier_id else None
        out.append(PlanRead(
            id=plan.id, product_id=plan.product_id, name=plan.name, slug=plan.slug, description=plan.description,
            notes=plan.notes, published=plan.published, approval_required=plan.approval_required,
            is_default=plan.is_default, trial_days=plan.trial_days, allowed_http_methods=plan.allowed_http_methods,
            min_tier_id=plan.min_tier_id,
            min_tier=TierSummary(id=tier.id, slug=tier.slug, name=tier.name, rank=tier.rank) if tier else None,
            setup_fee=Decimal(plan.setup_fee).quantize(_CENTS), monthly_fee=Decimal(plan.monthly_fee).quantize(_CENTS),
            currency=plan.currency,
            limits=sorted((LimitRead(id=r.id, metric_id=r.metric_id, api=names[r.metric_id][0],
                                     metric=names[r.metric_id][1], period=r.period, value=r.value)
                           for r in limits[plan.id]),
                          key=lambda x: (x.api, x.metric, _PERIOD_ORDER[x.period])),
            disabled_methods=sorted((DisabledMethodRead(metric_id=m, api=names[m][0], metric=names[m][1])
                                     for m in disabled[plan.id]), key=lambda x: (x.api, x.metric)),
            price_tiers=sorted((PriceTierRead(id=r.id, metric_id=r.metric_id, api=names[r.metric_id][0],
                                              metric=names[r.metric_id][1], from_units=r.from_units,
                                              to_units=r.to_units,
                                              unit_price=Decimal(r.unit_price).quantize(_MICROS))
                                for r in tiers[plan.id]), key=lambda x: (x.api, x.metric, x.from_units)),
            created_at=plan.created_at, updated_at=plan.updated_at,
        ))
    return out


async def plan_read(session: AsyncSession, plan: Plan) -> PlanRead:
    return (await plan_reads(session, [plan]))[0]


async def _audit_view(session: AsyncSession, plan: Plan) -> dict[str, Any]:
    await session.flush()
    view = audit.snapshot(plan)
    read = await plan_read(session, plan)
    view["limits"] = [f"{x.api}/{x.metric} {x.value}/{x.period}" for x in read.limits]
    view["disabled_methods"] = [f"{x.api}/{x.metric}" for x in read.disabled_methods]
    view["price_tiers"] = [f"{x.api}/{x.metric} [{x.from_units}, {x.to_units}) at {x.unit_price}"
                           for x in read.price_tiers]
    return view


# --- validating the lists ---------------------------------------------------

async def _resolve(session: AsyncSession, product_id: uuid.UUID, items: Sequence[MetricSelector],
                   field: str) -> list[Metric]:
    return await products.resolve_product_metrics(session, product_id, items, field)


def _item(field: str, index: int, name: str) -> str:
    return f"{field}.{index}.{name}" if field else name


async def _validated_limits(session: AsyncSession, product_id: uuid.UUID, items: Sequence[LimitCreate],
                            field: str) -> list[tuple[Metric, Period, int]]:
    metrics = await _resolve(session, product_id, items, field)
    errors = products.FieldErrors()
    seen: set[tuple[uuid.UUID, Period]] = set()
    for index, (item, metric) in enumerate(zip(items, metrics, strict=True)):
        if (metric.id, item.period) in seen:
            errors.add(_item(field, index, "period"), f"a {item.period} limit on {metric.system_name!r} is "
                                                      "already listed")
        seen.add((metric.id, item.period))
    errors.raise_if_any()
    return [(metric, item.period, item.value) for item, metric in zip(items, metrics, strict=True)]


async def _validated_disabled(session: AsyncSession, product_id: uuid.UUID, items: Sequence[MetricSelector],
                              field: str) -> list[Metric]:
    metrics = await _resolve(session, product_id, items, field)
    errors = products.FieldErrors()
    seen: set[uuid.UUID] = set()
    for index, metric in enumerate(metrics):
        if metric.id in seen:
            errors.add(f"{field}.{index}" if field else "metric", f"{metric.system_name!r} is listed twice")
        seen.add(metric.id)
    errors.raise_if_any()
    return metrics


def _overlap(a_from: int, a_to: int | None, b_from: int, b_to: int | None) -> bool:
    """Whether half-open unit ranges [from, to) overlap; a missing `to` is unbounded."""
    return (b_to is None or a_from < b_to) and (a_to is None or b_from < a_to)


async def _validated_price_tiers(
    session: AsyncSession, product_id: uuid.UUID, items: Sequence[PriceTierCreate], field: str,
    existing: Sequence[PlanPriceTier] = (),
) -> list[tuple[Metric, PriceTierCreate]]:
    """Tiers with from < to that overlap neither each other nor `existing` ones of the same metric."""
    metrics = await _resolve(session, product_id, items, field)
    errors = products.FieldErrors()
    accepted: list[tuple[uuid.UUID, int, int | None]] = [(t.metric_id, t.from_units, t.to_units) for t in existing]
    for index, (item, metric) in enumerate(zip(items, metrics, strict=True)):
        if item.to_units is not None and item.to_units <= item.from_units:
            errors.add(_item(field, index, "to_units"), "must be greater than from_units")
            continue
        clash = next(((f, t) for m, f, t in accepted
                      if m == metric.id and _overlap(item.from_units, item.to_units, f, t)), None)
        if clash is not None:
            errors.add(_item(field, index, "from_units"),
                       f"overlaps the {metric.system_name!r} tier from {clash[0]} to {clash[1] or 'unbounded'}")
            continue
        accepted.append((metric.id, item.from_units, item.to_units))
    errors.raise_if_any()
    return list(zip(metrics, items, strict=True))


async def _check_min_tier(session: AsyncSession, tier_id: uuid.UUID | None) -> None:
    if tier_id is not None and await session.get(Tier, tier_id) is None:
        raise invalid("min_tier_id", "no such program tier")


async def _check_slug(session: AsyncSession, product_id: uuid.UUID, slug: str | None,
                      plan_id: uuid.UUID | None) -> None:
    if slug is None:
        return
    other = await session.scalar(select(Plan.id).where(Plan.product_id == product_id, Plan.slug == slug))
    if other is not None and other != plan_id:
        raise conflict("slug", f"this product already has a plan with slug {slug!r}")


# --- writing the lists --------------------------------------------------------

async def _write_limits(session: AsyncSession, plan: Plan, limits: list[tuple[Metric, Period, int]]) -> None:
    """Make the plan's limits exactly these, keeping the ids of limits that stay."""
    existing = {(r.metric_id, r.period): r
                for r in await session.scalars(select(PlanLimit).where(PlanLimit.plan_id == plan.id))}
    wanted = {(metric.id, period): value for metric, period, value in limits}
    for key, row in existing.items():
        if key not in wanted:
            await session.delete(row)
        else:
            row.value = wanted[key]
    session.add_all(PlanLimit(plan_id=plan.id, metric_id=metric_id, period=period, value=value)
                    for (metric_id, period), value in wanted.items() if (metric_id, period) not in existing)
    await session.flush()


async def _write_disabled(session: AsyncSession, plan: Plan, metrics: list[Metric]) -> None:
    await session.execute(delete(PlanDisabledMetric).where(PlanDisabledMetric.plan_id == plan.id))
    session.add_all(PlanDisabledMetric(plan_id=plan.id, metric_id=m.id) for m in metrics)
    await session.flush()


async def _write_price_tiers(session: AsyncSession, plan: Plan, tiers: list[tuple[Metric, PriceTierCreate]]) -> None:
    await session.execute(delete(PlanPriceTier).where(PlanPriceTier.plan_id == plan.id))
    session.add_all(PlanPriceTier(plan_id=plan.id, metric_id=m.id, from_units=t.from_units, to_units=t.to_units,
                                  unit_price=t.unit_price) for m, t in tiers)
    await session.flush()


@dataclass
class _Lists:
    """A request's inline lists, validated; None where the request left a list out."""

    limits: list[tuple[Metric, Period, int]] | None
    disabled: list[Metric] | None
    price_tiers: list[tuple[Metric, PriceTierCreate]] | None


async def _validate_lists(session: AsyncSession, product_id: uuid.UUID, data: PlanCreate | PlanUpdate) -> _Lists:
    """Check every inline list before anything is written, so a bad request changes nothing."""
    return _Lists(
        limits=None if data.limits is None else await _validated_limits(session, product_id, data.limits, "limits"),
        disabled=None if data.disabled_methods is None else await _validated_disabled(
            session, product_id, data.disabled_methods, "disabled_methods"),
        price_tiers=None if data.price_tiers is None else await _validated_price_tiers(
            session, product_id, data.price_tiers, "price_tiers"),
    )


async def _write_lists(session: AsyncSession, plan: Plan, lists: _Lists) -> None:
    if lists.limits is not None:
        await _write_limits(session, plan, lists.limits)
    if lists.disabled is not None:
        await _write_disabled(session, plan, lists.disabled)
    if lists.price_tiers is not None:
        await _write_price_tiers(session, plan, lists.price_tiers)


# --- the default plan ---------------------------------------------------------

async def _make_default(session: AsyncSession, actor: Actor, plan: Plan) -> None:
    """Make `plan` its product's one default, unsetting (and auditing) the previous one."""
    others = await session.scalars(select(Plan).where(Plan.product_id == plan.product_id, Plan.id != plan.id,
                                                      Plan.is_default.is_(True)))
    for other in others:
        before = audit.snapshot(other)
        other.is_default = False
        await audit.record(session, actor, "plan.updated", other, before=before)
    plan.is_default = True


# --- plans ----------------------------------------------------------------------

async def create_plan(session: AsyncSession, actor: Actor, product_id: uuid.UUID, data: PlanCreate) -> Plan:
    product = await products.get_product(session, product_id)
    await _check_slug(session, product.id, data.slug, None)
    await _check_min_tier(session, data.min_tier_id)
    first = await session.scalar(select(func.count()).select_from(Plan).where(Plan.product_id == product.id)) == 0
    lists = await _validate_lists(session, product.id, data)
    plan = Plan(product_id=product.id, is_default=False, **data.model_dump(exclude={*_LISTS, "is_default"}))
    session.add(plan)
    await session.flush()
    if data.is_default or first:
        await _make_default(session, actor, plan)
    await _write_lists(session, plan, lists)
    await audit.record(session, actor, "plan.created", plan, after=await _audit_view(session, plan))
    return plan


async def update_plan(session: AsyncSession, actor: Actor, plan_id: uuid.UUID, data: PlanUpdate) -> Plan:
    plan = await get_plan(session, plan_id)
    before = await _audit_view(session, plan)
    changes = data.model_dump(exclude_unset=True, exclude=set(_LISTS))
    reject_nulls(changes, nullable=_NULLABLE)
    for key in _LISTS:
        if key in data.model_fields_set and getattr(data, key) is None:
            raise invalid(key, "may not be null; send [] to empty it")
    await _check_slug(session, plan.product_id, changes.get("slug"), plan.id)
    if "min_tier_id" in changes:
        await _check_min_tier(session, changes["min_tier_id"])
    make_default = changes.pop("is_default", None)
    if make_default is False and plan.is_default:
        raise invalid("is_default", "a product always has one default plan; make another plan the default instead")
    await _write_lists(session, plan, await _validate_lists(session, plan.product_id, data))
    for key, value in changes.items():
        setattr(plan, key, value)
    if make_default:
        await _make_default(session, actor, plan)
    plan.updated_at = utcnow()
    await audit.record(session, actor, "plan.updated", plan, before=before, after=await _audit_view(session, plan))
    return plan


async def delete_plan(session: AsyncSession, actor: Actor, plan_id: uuid.UUID) -> None:
    plan = await get_plan(session, plan_id)
    used = await session.scalar(select(func.count()).select_from(Subscription).where(Subscription.plan_id == plan.id))
    if used:
        raise conflict("plan_id", f"{used} subscription(s) use this plan; move or remove them first")
    before = await _audit_view(session, plan)
    was_default, product_id = plan.is_default, plan.product_id
    await session.delete(plan)
    await session.flush()
    await audit.record(session, actor, "plan.deleted", target_type="plans", target_id=str(plan_id), before=before)
    if was_default:
        # Keep exactly one default: promote the oldest remaining plan, published ones first.
        heir = await session.scalar(select(Plan).where(Plan.product_id == product_id)
                                    .order_by(Plan.published.desc(), Plan.created_at, Plan.slug).limit(1))
        if heir is not None:
            heir_before = audit.snapshot(heir)
            heir.is_default = True
            await audit.record(session, actor, "plan.updated", heir, before=heir_before)


# --- limits, disabled methods and price tiers one at a time ---------------------

async def _touch(session: AsyncSession, actor: Actor, plan: Plan, action: str, before: dict[str, Any]) -> None:
    plan.updated_at = utcnow()
    await audit.record(session, actor, action, plan, before=before, after=await _audit_view(session, plan))


async def replace_limits(session: AsyncSession, actor: Actor, plan_id: uuid.UUID,
                         items: Sequence[LimitCreate]) -> Plan:
    plan = await get_plan(session, plan_id)
    before = await _audit_view(session, plan)
    await _write_limits(session, plan, await _validated_limits(session, plan.product_id, items, "limits"))
    await _touch(session, actor, plan, "plan.limits_replaced", before)
    return plan


async def get_limit(session: AsyncSession, plan_id: uuid.UUID, limit_id: uuid.UUID) -> PlanLimit:
    row = await session.get(PlanLimit, limit_id)
    if row is None or row.plan_id != plan_id:
        raise not_found("limit")
    return row


async def _check_limit_free(session: AsyncSession, plan_id: uuid.UUID, metric_id: uuid.UUID, period: Period,
                            limit_id: uuid.UUID | None) -> None:
    other = await session.scalar(select(PlanLimit.id).where(PlanLimit.plan_id == plan_id,
                                                            PlanLimit.metric_id == metric_id,
                                                            PlanLimit.period == period))
    if other is not None and other != limit_id:
        raise conflict("period", f"the plan already has a {period} limit on this metric")


async def add_limit(session: AsyncSession, actor: Actor, plan_id: uuid.UUID, data: LimitCreate) -> PlanLimit:
    plan = await get_plan(session, plan_id)
    before = await _audit_view(session, plan)
    [(metric, period, value)] = await _validated_limits(session, plan.product_id, [data], "")
    await _check_limit_free(session, plan.id, metric.id, period, None)
    row = PlanLimit(plan_id=plan.id, metric_id=metric.id, period=period, value=value)
    session.add(row)
    await _touch(session, actor, plan, "plan.limit_added", before)
    return row


async def update_limit(session: AsyncSession, actor: Actor, plan_id: uuid.UUID, limit_id: uuid.UUID,
                       data: LimitUpdate) -> PlanLimit:
    plan = await get_plan(session, plan_id)
    row = await get_limit(session, plan.id, limit_id)
    before = await _audit_view(session, plan)
    changes = data.model_dump(exclude_unset=True)
    reject_nulls(changes)
    # Check before assigning: the query would otherwise autoflush the clash into an IntegrityError.
    await _check_limit_free(session, plan.id, row.metric_id, changes.get("period", row.period), row.id)
    for key, value in changes.items():
        setattr(row, key, value)
    await _touch(session, actor, plan, "plan.limit_updated", before)
    return row


async def remove_limit(session: AsyncSession, actor: Actor, plan_id: uuid.UUID, limit_id: uuid.UUID) -> None:
    plan = await get_plan(session, plan_id)
    row = await get_limit(session, plan.id, limit_id)
    before = await _audit_view(session, plan)
    await session.delete(row)
    await _touch(session, actor, plan, "plan.limit_removed", before)


async def replace_disabled_methods(session: AsyncSession, actor: Actor, plan_id: uuid.UUID,
                                   items: Sequence[MetricSelector]) -> Plan:
    plan = await get_plan(session, plan_id)
    before = await _audit_view(session, plan)
    await _write_disabled(session, plan,
                          await _validated_disabled(session, plan.product_id, items, "disabled_methods"))
    await _touch(session, actor, plan, "plan.disabled_methods_replaced", before)
    return plan


async def disable_method(session: AsyncSession, actor: Actor, plan_id: uuid.UUID, data: MetricSelector) -> Metric:
    plan = await get_plan(session, plan_id)
    before = await _audit_view(session, plan)
    [metric] = await _resolve(session, plan.product_id, [data], "")
    if await session.get(PlanDisabledMetric, (plan.id, metric.id)) is not None:
        raise conflict("metric", f"{metric.system_name!r} is already disabled in this plan")
    session.add(PlanDisabledMetric(plan_id=plan.id, metric_id=metric.id))
    await _touch(session, actor, plan, "plan.method_disabled", before)
    return metric


async def enable_method(session: AsyncSession, actor: Actor, plan_id: uuid.UUID, metric_id: uuid.UUID) -> None:
    plan = await get_plan(session, plan_id)
    row = await session.get(PlanDisabledMetric, (plan.id, metric_id))
    if row is None:
        raise not_found("disabled method")
    before = await _audit_view(session, plan)
    await session.delete(row)
    await _touch(session, actor, plan, "plan.method_enabled", before)


async def replace_price_tiers(session: AsyncSession, actor: Actor, plan_id: uuid.UUID,
                              items: Sequence[PriceTierCreate]) -> Plan:
    plan = await get_plan(session, plan_id)
    before = await _audit_view(session, plan)
    await _write_price_tiers(session, plan,
                             await _validated_price_tiers(session, plan.product_id, items, "price_tiers"))
    await _touch(session, actor, plan, "plan.price_tiers_replaced", before)
    return plan


async def add_price_tier(session: AsyncSession, actor: Actor, plan_id: uuid.UUID,
                         data: PriceTierCreate) -> PlanPriceTier:
    plan = await get_plan(session, plan_id)
    before = await _audit_view(session, plan)
    existing = list(await session.scalars(select(PlanPriceTier).where(PlanPriceTier.plan_id == plan.id)))
    [(metric, tier)] = await _validated_price_tiers(session, plan.product_id, [data], "", existing)
    row = PlanPriceTier(plan_id=plan.id, metric_id=metric.id, from_units=tier.from_units, to_units=tier.to_units,
                        unit_price=tier.unit_price)
    session.add(row)
    await _touch(session, actor, plan, "plan.price_tier_added", before)
    return row


async def remove_price_tier(session: AsyncSession, actor: Actor, plan_id: uuid.UUID, tier_id: uuid.UUID) -> None:
    plan = await get_plan(session, plan_id)
    row = await session.get(PlanPriceTier, tier_id)
    if row is None or row.plan_id != plan.id:
        raise not_found("price tier")
    before = await _audit_view(session, plan)
    await session.delete(row)
    await _touch(session, actor, plan, "plan.price_tier_removed", before)


# --- what partners see ------------------------------------------------------------

async def _partner_rank(session: AsyncSession, partner: Partner) -> int | None:
    if partner.tier_id is None:
        return None
    return await session.scalar(select(Tier.rank).where(Tier.id == partner.tier_id))


def _meets(min_rank: int | None, partner_rank: int | None) -> bool:
    return min_rank is None or (partner_rank is not None and partner_rank >= min_rank)


async def tier_allows(session: AsyncSession, plan: Plan, partner: Partner) -> bool:
    """Whether the partner's program tier is at least the plan's minimum tier."""
    if plan.min_tier_id is None:
        return True
    min_rank = await session.scalar(select(Tier.rank).where(Tier.id == plan.min_tier_id))
    return _meets(min_rank, await _partner_rank(session, partner))


def visible_products(partner: Partner, *, search: str | None = None) -> Select:
    """The products the partner's audience may see."""
    return products.list_products(search=search, tiers=visible_tiers(partner.audience))


async def visible_product(session: AsyncSession, partner: Partner, product_id: uuid.UUID) -> Product:
    """The product if the partner may see it; otherwise 404 exactly like a missing one."""
    product = await session.get(Product, product_id)
    if product is None or product.visibility not in visible_tiers(partner.audience):
        raise not_found("product")
    return product


def _partner_plan(plan: PlanRead, partner_rank: int | None) -> PartnerPlanRead:
    tier = plan.min_tier
    return PartnerPlanRead(
        id=plan.id, name=plan.name, slug=plan.slug, description=plan.description, is_default=plan.is_default,
        approval_required=plan.approval_required, trial_days=plan.trial_days,
        allowed_http_methods=plan.allowed_http_methods,
        min_tier=PartnerTierRead(slug=tier.slug, name=tier.name, rank=tier.rank) if tier else None,
        eligible=_meets(tier.rank if tier else None, partner_rank),
        setup_fee=plan.setup_fee, monthly_fee=plan.monthly_fee, currency=plan.currency,
        limits=[PartnerLimitRead(api=x.api, metric=x.metric, period=x.period, value=x.value) for x in plan.limits],
        disabled_methods=[PartnerMethodRead(api=x.api, metric=x.metric) for x in plan.disabled_methods],
        price_tiers=[PartnerPriceTierRead(api=x.api, metric=x.metric, from_units=x.from_units, to_units=x.to_units,
                                          unit_price=x.unit_price) for x in plan.price_tiers],
    )


async def partner_product_reads(session: AsyncSession, partner: Partner,
                                rows: Sequence[Product]) -> list[PartnerProductRead]:
    """Products as the partner sees them: published plans only, no staff notes."""
    reads = await products.product_reads(session, rows)
    ids = [p.id for p in rows]
    published = list(await session.scalars(
        select(Plan).where(Plan.product_id.in_(ids), Plan.published.is_(True))
        .order_by(Plan.is_default.desc(), Plan.slug))) if ids else []
    by_product: dict[uuid.UUID, list[PlanRead]] = defaultdict(list)
    for plan in await plan_reads(session, published):
        by_product[plan.product_id].append(plan)
    rank = await _partner_rank(session, partner)
    return [PartnerProductRead(id=p.id, name=p.name, slug=p.slug, description=p.description,
                               visibility=p.visibility, apis=p.apis, methods=p.methods,
                               plans=[_partner_plan(plan, rank) for plan in by_product[p.id]])
            for p in reads]
