"""Who is bound by which agreement, and whether they satisfy it: computed in bulk from a few queries.

Shared by the service (reports, the partner API, the overdue job) and the gateway's
snapshot builder, so both read the rules the same way. Every query here is Core
(`executor.execute(select(...))`), so it runs on an `AsyncSession` or an `AsyncConnection`.

The rules (see the issue 5 contract):
- a partner is *bound* by an agreement when one of its requirements applies: scope `all`;
  its tier; its type; a product it subscribes to (active or pending subscription); a
  stage (every partner walks the path, so every partner is bound);
- the *required* version is the latest published material version (the first published
  version always counts as material: there is nothing older to fall back on);
- the partner *satisfies* the agreement when it accepted the required version or a later one;
- otherwise `due_at` = max(required version's published_at, the earliest applying
  requirement's created_at) + grace_days: before it the state is `due`, after it `overdue`,
  or `missing` when the partner never accepted any version.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import (
    Agreement,
    AgreementAcceptance,
    AgreementRequirement,
    AgreementVersion,
    RequirementScope,
)
from accord.core.clock import utcnow
from accord.partners.models import Partner, Tier
from accord.products.models import Product
from accord.subscriptions.models import Subscription, SubscriptionState

# The onboarding path's built-in stages, in order (accord.onboarding owns the table that may rename
# them or insert manual stages between; without it these are the stages).
BUILTIN_STAGES = ("registered", "terms_accepted", "sandbox_access", "first_sandbox_call", "production_requested",
                  "production_approved", "live", "active")
# Stage-scoped agreements up to and including this stage are needed for production traffic.
PRODUCTION_GATE_STAGE = "production_approved"
BINDING_SUBSCRIPTION_STATES = (SubscriptionState.active, SubscriptionState.pending)
STATES = ("accepted", "due", "overdue", "missing")
_IN_LIMIT = 2000  # above this many ids, filter in Python rather than in one huge IN (...)


@dataclass(frozen=True)
class AgreementStatus:
    partner_id: uuid.UUID
    agreement_id: uuid.UUID
    slug: str
    title: str
    version_number: int  # the required version: latest published material one
    accepted_version_number: int | None  # the latest version the partner accepted
    accepted_at: datetime | None  # when it accepted that version
    state: str  # accepted | due | overdue | missing
    due_at: datetime | None  # None when accepted
    reasons: tuple[str, ...]  # why it is bound, e.g. ("product:maps", "stage:terms_accepted")
    version_id: uuid.UUID | None = None  # of the required version
    latest_version_number: int | None = None  # the latest published version (what the partner reads and accepts)

    @property
    def gating(self) -> bool:
        """Past the deadline: production traffic that needs it is refused."""
        return self.state in ("overdue", "missing")


@dataclass(frozen=True)
class Required:
    agreement_id: uuid.UUID
    slug: str
    title: str
    version_id: uuid.UUID
    number: int
    published_at: datetime
    grace_days: int
    latest_number: int
    latest_version_id: uuid.UUID


@dataclass(frozen=True)
class Rule:
    agreement_id: uuid.UUID
    scope: str
    stage_key: str | None
    product_id: uuid.UUID | None
    tier_id: uuid.UUID | None
    partner_type: str | None
    created_at: datetime
    reason: str


@dataclass(frozen=True)
class PartnerFacts:
    id: uuid.UUID
    tier_id: uuid.UUID | None
    type: str


@dataclass
class Program:
    """The agreement rules of the program: required versions, requirements and stage order."""

    required: dict[uuid.UUID, Required]
    rules: list[Rule]
    stage_positions: dict[str, int]

    def product_ids(self) -> set[uuid.UUID]:
        return {r.product_id for r in self.rules if r.scope == RequirementScope.product and r.product_id}

    def gates_production(self, rule: Rule) -> bool:
        """Whether an unsatisfied `rule` stops production traffic (product rules: for their product only)."""
        if rule.scope != RequirementScope.stage:
            return True
        position = self.stage_positions.get(rule.stage_key or "")
        gate = self.stage_positions.get(PRODUCTION_GATE_STAGE)
        return position is not None and gate is not None and position <= gate


async def stage_keys(executor: Any) -> dict[str, int]:
    """Stage key → position: the onboarding table's rows when there are any, else the built-in path."""
    from accord.core.db import Base

    table = Base.metadata.tables.get("onboarding_stages")
    if table is not None and "key" in table.c and "position" in table.c:
        try:
            # In a savepoint: a database migrated before the onboarding tables existed must not
            # abort the caller's transaction (PostgreSQL would refuse every later statement).
            async with executor.begin_nested():
                rows = (await executor.execute(select(table.c.key, table.c.position))).all()
        except DBAPIError:
            rows = []
        if rows:
            positions = {key: position for key, position in rows}
            for index, key in enumerate(BUILTIN_STAGES):
                positions.setdefault(key, index)
            return positions
    return {key: index for index, key in enumerate(BUILTIN_STAGES)}


async def load_program(executor: Any, agreement_ids: Iterable[uuid.UUID] | None = None) -> Program:
    wanted = set(agreement_ids) if agreement_ids is not None else None
    agreements = {row.id: row for row in (await executor.execute(
        select(Agreement.id, Agreement.slug, Agreement.title))).all() if wanted is None or row.id in wanted}
    published: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for row in (await executor.execute(
            select(AgreementVersion.agreement_id, AgreementVersion.id, AgreementVersion.number,
                   AgreementVersion.published_at, AgreementVersion.material, AgreementVersion.grace_days)
            .where(AgreementVersion.published_at.is_not(None)))).all():
        if row.agreement_id in agreements:
            published[row.agreement_id].append(row)
    required: dict[uuid.UUID, Required] = {}
    for agreement_id, versions in published.items():
        versions.sort(key=lambda v: v.number)
        first, latest = versions[0], versions[-1]
        needed = max((v for v in versions if v.material or v is first), key=lambda v: v.number)
        agreement = agreements[agreement_id]
        required[agreement_id] = Required(agreement_id, agreement.slug, agreement.title, needed.id, needed.number,
                                          needed.published_at, needed.grace_days, latest.number, latest.id)
    rules = []
    for row in (await executor.execute(
            select(AgreementRequirement.agreement_id, AgreementRequirement.scope, AgreementRequirement.stage_key,
                   AgreementRequirement.product_id, AgreementRequirement.tier_id,
                   AgreementRequirement.partner_type, AgreementRequirement.created_at,
                   Product.slug.label("product_slug"), Tier.slug.label("tier_slug"))
            .outerjoin(Product, Product.id == AgreementRequirement.product_id)
            .outerjoin(Tier, Tier.id == AgreementRequirement.tier_id))).all():
        if row.agreement_id not in required:
            continue  # nothing published yet: nothing to accept
        rules.append(Rule(row.agreement_id, str(row.scope), row.stage_key, row.product_id, row.tier_id,
                          row.partner_type, row.created_at, requirement_reason(row)))
    return Program(required, rules, await stage_keys(executor))


def requirement_reason(row: Any) -> str:
    scope = str(row.scope)
    target = {"all": None, "stage": row.stage_key, "product": row.product_slug, "tier": row.tier_slug,
              "partner_type": row.partner_type}.get(scope)
    return scope if target is None else f"{scope}:{target}"


def _only(stmt: Any, column: Any, ids: list[uuid.UUID] | None) -> Any:
    return stmt.where(column.in_(ids)) if ids is not None and len(ids) <= _IN_LIMIT else stmt


async def core(executor: Any) -> Any:
    """A Core connection for bulk reads: a session's pending changes are flushed, its ORM layer skipped."""
    if isinstance(executor, AsyncSession):
        await executor.flush()
        return await executor.connection()
    return executor


async def load_partners(executor: Any, partner_ids: list[uuid.UUID] | None) -> list[PartnerFacts]:
    stmt = _only(select(Partner.id, Partner.tier_id, Partner.type).order_by(Partner.id), Partner.id, partner_ids)
    wanted = set(partner_ids) if partner_ids is not None else None
    return [PartnerFacts(id_, tier_id, str(type_)) for id_, tier_id, type_ in (await executor.execute(stmt))
            if wanted is None or id_ in wanted]


async def load_subscribed(executor: Any, program: Program,
                          partner_ids: list[uuid.UUID] | None) -> dict[uuid.UUID, frozenset[uuid.UUID]]:
    """Partner → the products it subscribes to (active or pending), among those some rule names."""
    products = program.product_ids()
    if not products:
        return {}
    stmt = _only(select(Subscription.partner_id, Subscription.product_id)
                 .where(Subscription.state.in_(BINDING_SUBSCRIPTION_STATES), Subscription.product_id.in_(products)),
                 Subscription.partner_id, partner_ids)
    out: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for partner_id, product_id in await executor.execute(stmt):
        out[partner_id].add(product_id)
    return {partner_id: frozenset(ids) for partner_id, ids in out.items()}


async def load_accepted(executor: Any, program: Program, partner_ids: list[uuid.UUID] | None,
                        ) -> dict[tuple[uuid.UUID, uuid.UUID], tuple[int, datetime]]:
    """(partner, agreement) → (latest version number accepted, when that version was first accepted)."""
    if not program.required:
        return {}
    # Ordered so that the row kept last for a pair is its highest version's earliest acceptance.
    stmt = _only(select(AgreementAcceptance.partner_id, AgreementAcceptance.agreement_id, AgreementVersion.number,
                        AgreementAcceptance.accepted_at)
                 .join(AgreementVersion, AgreementVersion.id == AgreementAcceptance.version_id)
                 .where(AgreementAcceptance.agreement_id.in_(list(program.required)))
                 .order_by(AgreementVersion.number, AgreementAcceptance.accepted_at.desc()),
                 AgreementAcceptance.partner_id, partner_ids)
    return {(partner_id, agreement_id): (number, accepted_at)
            for partner_id, agreement_id, number, accepted_at in await executor.execute(stmt)}


def applies(rule: Rule, tier_id: uuid.UUID | None, partner_type: str, products: frozenset[uuid.UUID]) -> bool:
    if rule.scope in (RequirementScope.all, RequirementScope.stage):
        return True
    if rule.scope == RequirementScope.tier:
        return tier_id is not None and tier_id == rule.tier_id
    if rule.scope == RequirementScope.partner_type:
        return partner_type == rule.partner_type
    if rule.scope == RequirementScope.product:
        return rule.product_id in products
    return False


@dataclass(frozen=True)
class Binding:
    """One agreement binding a partner: the version to accept, the deadline when it has not, and why."""

    required: Required
    due_at: datetime
    reasons: tuple[str, ...]


class Binder:
    """The agreements binding a partner. Partners alike (same tier, type and relevant products) are bound
    alike, so each kind is worked out once: a program of 10k partners has a handful of kinds."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self._kinds: dict[tuple[Any, ...], list[Binding]] = {}

    def __call__(self, tier_id: uuid.UUID | None, partner_type: str,
                 products: frozenset[uuid.UUID] = frozenset()) -> list[Binding]:
        key = (tier_id, partner_type, products)
        found = self._kinds.get(key)
        if found is None:
            rules: dict[uuid.UUID, list[Rule]] = defaultdict(list)
            for rule in self.program.rules:
                if applies(rule, tier_id, partner_type, products):
                    rules[rule.agreement_id].append(rule)
            found = self._kinds[key] = sorted(
                (binding(self.program.required[agreement_id], agreement_rules)
                 for agreement_id, agreement_rules in rules.items()), key=lambda b: b.required.slug)
        return found


def binding(required: Required, rules: list[Rule]) -> Binding:
    """The deadline runs from the required version's publication, or from the earliest rule if it is later."""
    since = max(required.published_at, min(rule.created_at for rule in rules))
    return Binding(required, since + timedelta(days=required.grace_days),
                   tuple(dict.fromkeys(rule.reason for rule in rules)))


def status_of(bound: Binding, partner_id: uuid.UUID, accepted: tuple[int, datetime] | None,
              now: datetime) -> AgreementStatus:
    """The status of one partner for one agreement binding it."""
    required = bound.required
    accepted_number, accepted_at = accepted if accepted else (None, None)
    if accepted_number is not None and accepted_number >= required.number:
        state, due_at = "accepted", None
    else:
        due_at = bound.due_at
        state = "due" if now < due_at else ("missing" if accepted_number is None else "overdue")
    return AgreementStatus(partner_id, required.agreement_id, required.slug, required.title, required.number,
                           accepted_number, accepted_at, state, due_at, bound.reasons, required.version_id,
                           required.latest_number)


async def compute_statuses(executor: Any, *, partner_ids: list[uuid.UUID] | None = None,
                           agreement_ids: list[uuid.UUID] | None = None,
                           now: datetime | None = None) -> list[AgreementStatus]:
    """Every (partner, agreement) where the partner is bound, with its state: five queries whatever the
    number of partners (10k partners × 3 agreements: about 0.3 s on PostgreSQL)."""
    now = now or utcnow()
    executor = await core(executor)
    program = await load_program(executor, agreement_ids)
    if not program.rules:
        return []
    partners = await load_partners(executor, partner_ids)
    subscribed = await load_subscribed(executor, program, partner_ids)
    accepted = await load_accepted(executor, program, partner_ids)
    bound = Binder(program)
    nothing: frozenset[uuid.UUID] = frozenset()
    # Ordered by partner id, then agreement slug.
    return [status_of(b, partner.id, accepted.get((partner.id, b.required.agreement_id)), now)
            for partner in partners
            for b in bound(partner.tier_id, partner.type, subscribed.get(partner.id, nothing))]
