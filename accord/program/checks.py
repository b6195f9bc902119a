"""Cross-reference checks, run before anything is written so every problem is listed at once.

A reference (a limit's metric, a partner's tier, a subscription's plan…) may name
something declared in the file or, without `--prune`, something already in the
database (which apply keeps). With `--prune` only the file counts, since whatever
it does not declare is about to be removed.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import ApplicationState, Environment
from accord.catalog import openapi
from accord.catalog.models import Api, Metric
from accord.core.errors import ProblemError
from accord.customfields.models import FieldDefinition, FieldTarget
from accord.partners.models import Partner, Tier
from accord.plans.models import Plan
from accord.products.models import Product
from accord.program.errors import ProgramError
from accord.program.spec import ROOT_METRIC, ProgramSpec, split_method
from accord.subscriptions.models import Subscription
from accord.subscriptions.service import LIVE


@dataclass
class Known:
    """Names that exist once the file is applied."""

    tiers: set[str] = field(default_factory=set)
    fields: dict[FieldTarget, set[str]] = field(default_factory=lambda: defaultdict(set))
    metrics: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # api slug → metric names
    plans: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # product slug → plan slugs
    partner_products: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


async def _from_database(session: AsyncSession, known: Known) -> None:
    known.tiers.update(await session.scalars(select(Tier.slug)))
    for target, key in await session.execute(select(FieldDefinition.target, FieldDefinition.key)):
        known.fields[FieldTarget(target)].add(key)
    for api, metric in await session.execute(
            select(Api.slug, Metric.system_name).join(Metric, Metric.api_id == Api.id)):
        known.metrics[api].add(metric)
    for product in await session.scalars(select(Product.slug)):
        known.plans[product]  # a product without plans still exists
    for product, plan in await session.execute(
            select(Product.slug, Plan.slug).join(Plan, Plan.product_id == Product.id)):
        known.plans[product].add(plan)
    for partner, product in await session.execute(
            select(Partner.slug, Product.slug).select_from(Subscription)
            .join(Partner, Partner.id == Subscription.partner_id).join(Product, Product.id == Subscription.product_id)
            .where(Subscription.state.in_(LIVE))):
        known.partner_products[partner].add(product)


async def known_names(session: AsyncSession, spec: ProgramSpec, prune: bool) -> Known:
    known = Known()
    if not prune:
        await _from_database(session, known)
    known.tiers.update(t.slug for t in spec.tiers)
    for f in spec.custom_fields:
        known.fields[f.target].add(f.key)
    for api in spec.apis:
        known.metrics[api.slug].update({ROOT_METRIC, *(m.name for m in api.metrics)})
    for product in spec.products:
        known.plans[product.slug].update(p.slug for p in product.plans)
    for partner in spec.partners:
        known.partner_products[partner.slug].update(s.product for s in partner.subscriptions)
    return known


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append((path, reason))


def _check_metric(problems: _Problems, known: Known, path: str, api: str, metric: str, product_apis: list[str],
                  *, method: bool = False) -> None:
    if api not in product_apis:
        problems.add(f"{path}.api" if not method else path, f"the API {api!r} is not in this product's apis")
    elif metric not in known.metrics.get(api, set()):
        problems.add(f"{path}.metric" if not method else path, f"no metric {metric!r} in API {api!r}")
    elif method and metric == ROOT_METRIC:
        problems.add(path, f"{ROOT_METRIC!r} is the API's root metric, not a method")


def _check_apis(spec: ProgramSpec, known: Known, problems: _Problems) -> None:
    for i, api in enumerate(spec.apis):
        path = f"apis[{i}]"
        names = known.metrics[api.slug]
        parents = {m.name: m.parent for m in api.metrics}
        for j, metric in enumerate(api.metrics):
            if metric.name == ROOT_METRIC:
                if metric.parent is not None:
                    problems.add(f"{path}.metrics[{j}].parent", f"the root metric {ROOT_METRIC!r} has no parent")
                continue
            if metric.parent is not None and metric.parent not in names:
                problems.add(f"{path}.metrics[{j}].parent", f"no metric {metric.parent!r} in this API")
            seen, current = {metric.name}, metric.parent
            while current in parents and current is not None:
                if current in seen:
                    problems.add(f"{path}.metrics[{j}].parent", "metrics may not be their own ancestors")
                    break
                seen.add(current)
                current = parents[current]
        for j, rule in enumerate(api.mapping_rules):
            if rule.metric not in names:
                problems.add(f"{path}.mapping_rules[{j}].metric", f"no metric {rule.metric!r} in this API")
        if api.openapi is not None:
            try:
                api.openapi = openapi.parse_document(api.openapi)
            except ProblemError as exc:
                problems.add(f"{path}.openapi", exc.errors[0]["reason"] if exc.errors else str(exc.detail))


def _check_products(spec: ProgramSpec, known: Known, problems: _Problems) -> None:
    for i, product in enumerate(spec.products):
        path = f"products[{i}]"
        for j, api in enumerate(product.apis):
            if api not in known.metrics:
                problems.add(f"{path}.apis[{j}]", f"no API {api!r}")
        for j, ref in enumerate(product.methods):
            _check_metric(problems, known, f"{path}.methods[{j}]", *split_method(ref), product.apis, method=True)
        for k, plan in enumerate(product.plans):
            where = f"{path}.plans[{k}]"
            if plan.min_tier is not None and plan.min_tier not in known.tiers:
                problems.add(f"{where}.min_tier", f"no tier {plan.min_tier!r}")
            for j, limit in enumerate(plan.limits):
                _check_metric(problems, known, f"{where}.limits[{j}]", limit.api, limit.metric, product.apis)
            for j, ref in enumerate(plan.disabled_methods):
                _check_metric(problems, known, f"{where}.disabled_methods[{j}]", *split_method(ref), product.apis,
                              method=True)
            for j, price in enumerate(plan.pricing.unit_prices):
                _check_metric(problems, known, f"{where}.pricing.unit_prices[{j}]", price.api, price.metric,
                              product.apis)
                if price.to_units is not None and price.to_units <= price.from_units:
                    problems.add(f"{where}.pricing.unit_prices[{j}].to_units", "must be greater than from_units")


def _check_custom_fields(problems: _Problems, known: Known, path: str, target: FieldTarget,
                         values: dict[str, object]) -> None:
    for key in values:
        if key not in known.fields[target]:
            problems.add(f"{path}.custom_fields.{key}", f"no {target} custom field {key!r}")


def _check_partners(spec: ProgramSpec, known: Known, problems: _Problems) -> None:
    for i, partner in enumerate(spec.partners):
        path = f"partners[{i}]"
        if partner.tier is not None and partner.tier not in known.tiers:
            problems.add(f"{path}.tier", f"no tier {partner.tier!r}")
        _check_custom_fields(problems, known, path, FieldTarget.partner, partner.custom_fields)
        for j, sub in enumerate(partner.subscriptions):
            if sub.product not in known.plans:
                problems.add(f"{path}.subscriptions[{j}].product", f"no product {sub.product!r}")
            elif sub.plan not in known.plans[sub.product]:
                problems.add(f"{path}.subscriptions[{j}].plan", f"no plan {sub.plan!r} in product {sub.product!r}")
        for j, app in enumerate(partner.applications):
            where = f"{path}.applications[{j}]"
            _check_custom_fields(problems, known, where, FieldTarget.application, app.custom_fields)
            if app.environment == Environment.sandbox and app.desired_state == ApplicationState.pending:
                problems.add(f"{where}.state", "a sandbox application is live at once; it is never pending")
            for k, product in enumerate(app.subscriptions):
                if product not in known.partner_products[partner.slug]:
                    problems.add(f"{where}.subscriptions[{k}]",
                                 f"the partner has no subscription to product {product!r}")


async def check_references(session: AsyncSession, spec: ProgramSpec, prune: bool) -> None:
    """Raise ProgramError listing every reference in the file that names nothing."""
    known = await known_names(session, spec, prune)
    problems = _Problems()
    _check_apis(spec, known, problems)
    _check_products(spec, known, problems)
    _check_partners(spec, known, problems)
    if problems.items:
        raise ProgramError(problems.items)
