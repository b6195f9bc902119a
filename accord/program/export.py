"""`accord export`: the database as a program file, in the format `accord apply` reads.

Fields at their default value are left out (see `spec`), and the order is stable:
tiers by rank; custom fields by target, position and key; partners by slug,
members by email and applications sandbox first, then by name; APIs, products,
plans, metrics and limits in the order they were created (which, for anything
`accord apply` made, is the order of the file); mapping rules by position.
Applying an export to the database it came from changes nothing.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from enum import Enum
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Application, ApplicationSubscription, Credential, CredentialKind, Environment
from accord.apps.service import credential_status
from accord.catalog.models import Api, CredentialLocation, Lifecycle, MappingRule, Metric
from accord.customfields.models import FieldDefinition, FieldTarget, FieldType
from accord.partners.models import Partner, Tier
from accord.plans.models import Plan, PlanDisabledMetric, PlanLimit, PlanPriceTier
from accord.plans.schemas import HTTP_VERBS
from accord.products.models import Product, ProductApi, ProductMethod
from accord.program.apply_agreements import export_agreements
from accord.program.apply_partners import WORKING_CREDENTIALS, live_values
from accord.program.document import escape
from accord.program.spec import ROOT_METRIC, ROOT_METRIC_DEFAULTS, default_application_state
from accord.subscriptions.models import Subscription
from accord.subscriptions.service import LIVE
from accord.teams.models import Membership
from accord.users.models import User

_TARGET_ORDER = {target: index for index, target in enumerate(FieldTarget)}
_ENVIRONMENT_ORDER = {Environment.sandbox: 0, Environment.production: 1}
_CENTS = Decimal("0.01")


def money(value: Decimal | int | float) -> str:
    """A decimal as text with at least two decimal places and no trailing zeros beyond: 49.00, 0.0015."""
    value = Decimal(value).normalize()
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(_CENTS)
    return f"{value:f}"


def _put(out: dict[str, Any], key: str, value: Any, default: Any) -> None:
    """Set `key` unless `value` is the default (enums compare by value)."""
    plain = value.value if isinstance(value, Enum) else value
    if plain != (default.value if isinstance(default, Enum) else default):
        out[key] = plain


def _by_creation(rows: list[Any]) -> list[Any]:
    return sorted(rows, key=lambda r: (r.created_at, str(r.id)))


class _Exporter:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.api_order: dict[uuid.UUID, int] = {}
        self.product_order: dict[uuid.UUID, int] = {}
        self.metric_position: dict[uuid.UUID, tuple[int, int]] = {}  # metric id → (API's index, metric's index)
        self.metric_ref: dict[uuid.UUID, tuple[str, str]] = {}  # metric id → (api slug, metric name)
        self.tier_slugs: dict[uuid.UUID, str] = {}
        self.defined: dict[FieldTarget, set[str]] = {}  # custom field keys by target

    async def program(self) -> dict[str, Any]:
        sections = {
            "tiers": await self.tiers(),
            "custom_fields": await self.custom_fields(),
            "apis": await self.apis(),
            "products": await self.products(),
            "agreements": await export_agreements(self.session),
            "partners": await self.partners(),
        }
        return {name: items for name, items in sections.items() if items}

    # --- tiers and custom fields ---

    async def tiers(self) -> list[dict[str, Any]]:
        out = []
        for tier in await self.session.scalars(select(Tier).order_by(Tier.rank)):
            self.tier_slugs[tier.id] = tier.slug
            item = {"slug": tier.slug, "name": tier.name, "rank": tier.rank}
            _put(item, "description", tier.description, "")
            out.append(item)
        return out

    async def custom_fields(self) -> list[dict[str, Any]]:
        rows = sorted(await self.session.scalars(select(FieldDefinition)),
                      key=lambda d: (_TARGET_ORDER[FieldTarget(d.target)], d.position, d.key))
        out = []
        for d in rows:
            item: dict[str, Any] = {"target": FieldTarget(d.target).value, "key": d.key, "label": d.label}
            _put(item, "type", d.type, FieldType.text)
            _put(item, "required", d.required, False)
            _put(item, "choices", list(d.choices or []), [])
            _put(item, "position", d.position, 0)
            _put(item, "hidden", d.hidden, False)
            out.append(item)
        return out

    # --- the catalog ---

    async def apis(self) -> list[dict[str, Any]]:
        apis = _by_creation(list(await self.session.scalars(select(Api))))
        metrics: dict[uuid.UUID, list[Metric]] = defaultdict(list)
        for metric in _by_creation(list(await self.session.scalars(select(Metric)))):
            metrics[metric.api_id].append(metric)
        rules: dict[uuid.UUID, list[MappingRule]] = defaultdict(list)
        for rule in sorted(await self.session.scalars(select(MappingRule)),
                           key=lambda r: (r.position, r.created_at, str(r.id))):
            rules[rule.api_id].append(rule)
        out = []
        for index, api in enumerate(apis):
            self.api_order[api.id] = index
            for order, metric in enumerate(metrics[api.id]):
                self.metric_position[metric.id] = (index, order)
                self.metric_ref[metric.id] = (api.slug, metric.system_name)
            out.append(self.api(api, metrics[api.id], rules[api.id]))
        return out

    def api(self, api: Api, metrics: list[Metric], rules: list[MappingRule]) -> dict[str, Any]:
        item: dict[str, Any] = {"slug": api.slug, "name": api.name}
        _put(item, "description", api.description, "")
        item["path_prefix"] = api.path_prefix
        _put(item, "hostname", api.hostname, "")
        item["visibility"] = api.visibility.value
        _put(item, "lifecycle", api.lifecycle, Lifecycle.ga)
        _put(item, "credential_location", api.credential_location, CredentialLocation.authorization)
        _put(item, "credential_name", api.credential_name, "")
        upstreams: dict[str, Any] = {}
        _put(upstreams, "sandbox", api.sandbox_upstream_url, None)
        _put(upstreams, "production", api.production_upstream_url, None)
        _put(item, "upstreams", upstreams, {})
        _put(item, "openapi", api.openapi, None)
        names = {m.id: m.system_name for m in metrics}
        exported = [self.metric(m, names) for m in metrics]
        _put(item, "metrics", [m for m in exported if m is not None], [])
        _put(item, "mapping_rules", [self.rule(r, index, names) for index, r in enumerate(rules)], [])
        return item

    @staticmethod
    def metric(metric: Metric, names: dict[uuid.UUID, str]) -> dict[str, Any] | None:
        root = metric.system_name == ROOT_METRIC
        item: dict[str, Any] = {"name": metric.system_name}
        _put(item, "friendly_name", metric.friendly_name, ROOT_METRIC_DEFAULTS["friendly_name"] if root
             else metric.system_name)
        parent = names.get(metric.parent_id) if metric.parent_id else None
        if not root:
            _put(item, "parent", parent, ROOT_METRIC)
        _put(item, "unit", metric.unit, "hit")
        _put(item, "description", metric.description, ROOT_METRIC_DEFAULTS["description"] if root else "")
        if root and len(item) == 1:
            return None  # the root metric as create_api makes it is implied
        return item

    @staticmethod
    def rule(rule: MappingRule, index: int, names: dict[uuid.UUID, str]) -> dict[str, Any]:
        item: dict[str, Any] = {"method": rule.http_method, "pattern": rule.pattern,
                                "metric": names.get(rule.metric_id, "")}
        _put(item, "delta", rule.delta, 1)
        _put(item, "position", rule.position, index)
        _put(item, "last", rule.last, False)
        return item

    def method_ref(self, metric_id: uuid.UUID) -> str:
        api, metric = self.metric_ref[metric_id]
        return f"{api}.{metric}"

    # --- products and plans ---

    async def products(self) -> list[dict[str, Any]]:
        apis = {a.id: a.slug for a in await self.session.scalars(select(Api))}
        product_apis: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for link in await self.session.scalars(select(ProductApi)):
            product_apis[link.product_id].append(link.api_id)
        methods: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for link in await self.session.scalars(select(ProductMethod)):
            methods[link.product_id].append(link.metric_id)
        plans: dict[uuid.UUID, list[Plan]] = defaultdict(list)
        for plan in _by_creation(list(await self.session.scalars(select(Plan)))):
            plans[plan.product_id].append(plan)
        out = []
        for index, product in enumerate(_by_creation(list(await self.session.scalars(select(Product))))):
            self.product_order[product.id] = index
            item: dict[str, Any] = {"slug": product.slug, "name": product.name}
            _put(item, "description", product.description, "")
            _put(item, "notes", product.notes, "")
            item["visibility"] = product.visibility.value
            _put(item, "apis", [apis[a] for a in sorted(product_apis[product.id], key=self.api_order.__getitem__)],
                 [])
            _put(item, "methods", [self.method_ref(m) for m in sorted(methods[product.id], key=self.metric_key)], [])
            _put(item, "plans", [await self.plan(p) for p in plans[product.id]], [])
            out.append(item)
        return out

    def metric_key(self, metric_id: uuid.UUID) -> tuple[int, int]:
        return self.metric_position[metric_id]

    async def plan(self, plan: Plan) -> dict[str, Any]:
        item: dict[str, Any] = {"slug": plan.slug, "name": plan.name}
        _put(item, "description", plan.description, "")
        _put(item, "notes", plan.notes, "")
        _put(item, "default", plan.is_default, False)
        _put(item, "published", plan.published, True)
        _put(item, "approval_required", plan.approval_required, False)
        _put(item, "trial_days", plan.trial_days, 0)
        _put(item, "min_tier", self.tier_slugs.get(plan.min_tier_id) if plan.min_tier_id else None, None)
        verbs = plan.allowed_http_methods
        _put(item, "allowed_http_methods", sorted(verbs, key=HTTP_VERBS.index) if verbs is not None else None, None)
        limits = _by_creation(list(await self.session.scalars(select(PlanLimit).where(PlanLimit.plan_id == plan.id))))
        _put(item, "limits", [{"api": self.metric_ref[x.metric_id][0], "metric": self.metric_ref[x.metric_id][1],
                               "period": x.period.value, "value": x.value} for x in limits], [])
        disabled = await self.session.scalars(select(PlanDisabledMetric.metric_id)
                                              .where(PlanDisabledMetric.plan_id == plan.id))
        _put(item, "disabled_methods", [self.method_ref(m) for m in sorted(disabled, key=self.metric_key)], [])
        pricing: dict[str, Any] = {}
        if Decimal(plan.setup_fee) != 0:
            pricing["setup_fee"] = money(plan.setup_fee)
        if Decimal(plan.monthly_fee) != 0:
            pricing["monthly_fee"] = money(plan.monthly_fee)
        _put(pricing, "currency", plan.currency, "USD")
        prices = await self.session.scalars(select(PlanPriceTier).where(PlanPriceTier.plan_id == plan.id))
        unit_prices = []
        for price in sorted(prices, key=lambda p: (self.metric_key(p.metric_id), p.from_units)):
            entry: dict[str, Any] = {"api": self.metric_ref[price.metric_id][0],
                                     "metric": self.metric_ref[price.metric_id][1]}
            _put(entry, "from_units", price.from_units, 0)
            _put(entry, "to_units", price.to_units, None)
            entry["unit_price"] = money(price.unit_price)
            unit_prices.append(entry)
        _put(pricing, "unit_prices", unit_prices, [])
        _put(item, "pricing", pricing, {})
        return item

    # --- partners ---

    async def partners(self) -> list[dict[str, Any]]:
        products = {p.id: p.slug for p in await self.session.scalars(select(Product))}
        self.defined = defaultdict(set)
        for target, key in await self.session.execute(select(FieldDefinition.target, FieldDefinition.key)):
            self.defined[FieldTarget(target)].add(key)
        out = []
        for partner in await self.session.scalars(select(Partner).order_by(Partner.slug)):
            item: dict[str, Any] = {"slug": partner.slug, "name": partner.name, "type": partner.type.value}
            _put(item, "tier", self.tier_slugs.get(partner.tier_id) if partner.tier_id else None, None)
            item["audience"] = partner.audience.value
            item["status"] = partner.status.value
            _put(item, "website", partner.website, "")
            _put(item, "country", partner.country, "")
            _put(item, "notes", partner.notes, "")
            contact: dict[str, Any] = {}
            _put(contact, "name", partner.contact_name, "")
            _put(contact, "email", partner.contact_email, "")
            _put(contact, "phone", partner.contact_phone, "")
            _put(item, "contact", contact, {})
            values = live_values(partner.custom_fields, self.defined[FieldTarget.partner])
            _put(item, "custom_fields", values, {})
            _put(item, "members", await self.members(partner), [])
            subscriptions = await self.subscriptions(partner)
            _put(item, "subscriptions", [{"product": products[s.product_id], "plan": plan}
                                         for s, plan in subscriptions], [])
            _put(item, "applications", await self.applications(partner, products), [])
            out.append(item)
        return out

    async def members(self, partner: Partner) -> list[dict[str, Any]]:
        rows = await self.session.execute(select(Membership, User).join(User, User.id == Membership.user_id)
                                          .where(Membership.partner_id == partner.id).order_by(User.email))
        out = []
        for membership, user in rows:
            item: dict[str, Any] = {"email": user.email}
            _put(item, "name", user.name, "")
            item["role"] = membership.role.value
            out.append(item)
        return out

    async def subscriptions(self, partner: Partner) -> list[tuple[Subscription, str]]:
        rows = await self.session.execute(select(Subscription, Plan.slug).join(Plan, Plan.id == Subscription.plan_id)
                                          .where(Subscription.partner_id == partner.id,
                                                 Subscription.state.in_(LIVE)))
        return sorted(((s, plan) for s, plan in rows), key=lambda row: self.product_order[row[0].product_id])

    async def applications(self, partner: Partner, products: dict[uuid.UUID, str]) -> list[dict[str, Any]]:
        rows = sorted(await self.session.scalars(select(Application).where(Application.partner_id == partner.id)),
                      key=lambda a: (_ENVIRONMENT_ORDER[a.environment], a.name))
        out = []
        for app in rows:
            item: dict[str, Any] = {"name": app.name, "environment": app.environment.value}
            _put(item, "state", app.state, default_application_state(app.environment))
            _put(item, "description", app.description, "")
            attached = await self.session.execute(
                select(Subscription.product_id).join(ApplicationSubscription,
                                                     ApplicationSubscription.subscription_id == Subscription.id)
                .where(ApplicationSubscription.application_id == app.id, Subscription.state.in_(LIVE)))
            _put(item, "subscriptions", [products[p] for p in sorted(attached.scalars(),
                                                                     key=self.product_order.__getitem__)], [])
            _put(item, "custom_fields", live_values(app.custom_fields, self.defined[FieldTarget.application]),
                 {})
            _put(item, "credentials", await self.credentials(app), [])
            out.append(item)
        return out

    async def credentials(self, app: Application) -> list[dict[str, Any]]:
        rows = _by_creation(list(await self.session.scalars(
            select(Credential).where(Credential.application_id == app.id, Credential.revoked_at.is_(None)))))
        out: dict[str, dict[str, Any]] = {}
        for credential in rows:
            # A rotated credential and its replacement share a name: one entry.
            if credential.name in out or credential_status(credential) not in WORKING_CREDENTIALS:
                continue
            item: dict[str, Any] = {"name": credential.name}
            _put(item, "kind", credential.kind, CredentialKind.api_key)
            out[credential.name] = item
        return list(out.values())


def _escaped(value: Any) -> Any:
    """Literal `${` in the data, written so that interpolation gives it back."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


async def export_program(session: AsyncSession) -> dict[str, Any]:
    """The current program as plain data, exactly what `load_document` returns for the exported file."""
    return await _Exporter(session).program()


# --- YAML ---------------------------------------------------------------------------

_FLOW_WIDTH = 110


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _short(value: Any) -> bool:
    return len(repr(value)) <= _FLOW_WIDTH and not any(isinstance(v, str) and "\n" in v for v in
                                                       (value.values() if isinstance(value, dict) else value))


class _ProgramDumper(yaml.SafeDumper):
    """Block style for structure, flow style (`{a: 1}`, `[x, y]`) for small all-scalar items, like the demo file."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as people write YAML.
        super().increase_indent(flow, False)


def _represent_dict(dumper: _ProgramDumper, data: dict[str, Any]) -> yaml.Node:
    flow = all(_scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v)) for v in data.values()) \
        and _short(data)
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: _ProgramDumper, data: list[Any]) -> yaml.Node:
    # Scalars inline (`[GET, POST]`), and a lone one-field item too (`[{name: default}]`).
    lone = len(data) == 1 and isinstance(data[0], dict) and len(data[0]) == 1 and _scalar(*data[0].values())
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                     flow_style=(lone or all(_scalar(v) for v in data)) and _short(data))


def _represent_str(dumper: _ProgramDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_ProgramDumper.add_representer(dict, _represent_dict)
_ProgramDumper.add_representer(list, _represent_list)
_ProgramDumper.add_representer(str, _represent_str)

HEADER = "# An Accord partner program, written by `accord export`. Apply it with `accord apply -f <file>`.\n"


def dump_program(data: dict[str, Any]) -> str:
    """The program as YAML: one block per section, separated by blank lines."""
    data = _escaped(data)
    blocks = [yaml.dump({name: items}, Dumper=_ProgramDumper, sort_keys=False, allow_unicode=True, width=4096)
              for name, items in data.items()]
    return HEADER + "\n".join(blocks)
