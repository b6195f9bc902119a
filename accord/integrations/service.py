"""The integration audit: for each partner its access, credentials, agreements, traffic, stage and flags.

Flags come from `accord.integrations.flags` (computed for the whole program in a few
aggregate queries, so filtering by flag and counting flags stay cheap); the details of
a page (or of the whole export) are then read in one query per kind of thing, for all
the partners at once. Read only: nothing here changes data.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, String, case, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from accord.agreements import service as agreements
from accord.agreements.status import AgreementStatus
from accord.apps.models import Application, Credential
from accord.core.config import Settings
from accord.core.pagination import PageParams
from accord.integrations.flags import AuditWindow, days_between, partner_flags
from accord.integrations.schemas import AuditPage, Flag, FlagRead, PartnerAudit
from accord.onboarding.models import PartnerOnboarding
from accord.partners.models import Partner, Tier
from accord.plans.models import Plan
from accord.products.models import Product
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.usage.models import FirstCall, UsageCount

CALLS_WINDOW = timedelta(days=30)
# Subscriptions still worth showing: cancelled and rejected ones are history.
_SHOWN_STATES = (SubscriptionState.active, SubscriptionState.pending, SubscriptionState.suspended)


@dataclass
class Selection:
    """The audited partners (by name, after the filters), everyone's flags and agreement statuses."""

    everyone: list[uuid.UUID]
    ids: list[uuid.UUID]
    flags: dict[uuid.UUID, list[FlagRead]]
    statuses: dict[uuid.UUID, list[AgreementStatus]]


async def select_partners(session: AsyncSession, window: AuditWindow, *, flag: Flag | None = None,
                          partner_id: uuid.UUID | None = None) -> Selection:
    scope = [partner_id] if partner_id else None
    statuses = await agreements.statuses(session, partner_ids=scope)
    flags = await partner_flags(session, window, scope, statuses)
    stmt = select(Partner.id).order_by(Partner.name, Partner.id)
    everyone = list(await session.scalars(stmt.where(Partner.id == partner_id) if partner_id else stmt))
    ids = [pid for pid in everyone if any(f.flag == flag for f in flags.get(pid, ()))] if flag else everyone
    by_partner: dict[uuid.UUID, list[AgreementStatus]] = defaultdict(list)
    for status in statuses:
        by_partner[status.partner_id].append(status)
    return Selection(everyone, ids, flags, by_partner)


def flag_counts(ids: list[uuid.UUID], flags: dict[uuid.UUID, list[FlagRead]]) -> dict[str, int]:
    counts = {f.value: 0 for f in Flag}
    for pid in ids:
        for found in flags.get(pid, ()):
            counts[found.flag.value] += 1
    return counts


async def audit_page(session: AsyncSession, settings: Settings, page: PageParams, *, flag: Flag | None = None,
                     partner_id: uuid.UUID | None = None) -> AuditPage:
    window = AuditWindow.of(settings)
    chosen = await select_partners(session, window, flag=flag, partner_id=partner_id)
    ids = chosen.ids[page.offset:page.offset + page.limit]
    items = [PartnerAudit.model_validate(row) for row in await details(session, window, ids, chosen)] if ids else []
    # Counted before the flag filter, so the counts say what each filter would show.
    return AuditPage(items=items, total=len(chosen.ids), limit=page.limit, offset=page.offset,
                     flag_counts=flag_counts(chosen.everyone, chosen.flags), generated_at=window.now,
                     stale_credential_days=window.stale_days, no_traffic_days=window.no_traffic_days)


async def audit_all(session: AsyncSession, settings: Settings, *, flag: Flag | None = None,
                    partner_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """The whole audit (for the exports and the CLI), each row shaped like `PartnerAudit`."""
    window = AuditWindow.of(settings)
    chosen = await select_partners(session, window, flag=flag, partner_id=partner_id)
    return await details(session, window, chosen.ids, chosen) if chosen.ids else []


# Above this many partners the detail queries read every partner's rows rather than an IN list.
_IN_LIST_MAX = 1000


def as_text(column: Any) -> Any:
    """An enum column read as the string it stores (what `str()` of the enum gives), skipping the
    enum's conversion of every row: the audit only shows the value."""
    return type_coerce(column, String)


async def details(session: AsyncSession, window: AuditWindow, ids: list[uuid.UUID],
                  chosen: Selection) -> list[dict[str, Any]]:
    """The audit rows of `ids` (shaped like `PartnerAudit`), in that order, in one query per kind of detail.

    Plain dicts, read through the session's Core connection: for the whole program there are
    tens of thousands of nested items, and building an ORM row or a model for each would cost
    more than all the queries (a page is validated)."""
    conn = await session.connection()
    only = ids if len(ids) <= _IN_LIST_MAX else None
    tiers = dict((await conn.execute(select(Tier.id, Tier.slug))).all())
    partners = {row[0]: row for row in await conn.execute(_limited(
        select(Partner.id, Partner.slug, Partner.name, as_text(Partner.type), as_text(Partner.status),
               as_text(Partner.audience), Partner.tier_id), Partner.id, only))}
    subscriptions = await _subscriptions(conn, only)
    applications, credentials = await _applications(conn, only, window)
    first_calls = dict((await conn.execute(_limited(
        select(FirstCall.partner_id, func.min(FirstCall.at)).group_by(FirstCall.partner_id),
        FirstCall.partner_id, only))).all())
    last_calls, calls = await _traffic(conn, window, ids, only)
    stages = {pid: (stage, status) for pid, stage, status in await conn.execute(_limited(
        select(PartnerOnboarding.partner_id, PartnerOnboarding.stage_key, as_text(PartnerOnboarding.status)),
        PartnerOnboarding.partner_id, only))}
    agreement_items = _agreement_items(chosen.statuses, ids)
    no_stage = (None, None)
    rows = []
    for pid in ids:
        _, slug, name, kind, status, audience, tier_id = partners[pid]
        stage, onboarding_status = stages.get(pid, no_stage)
        signed, missing = agreement_items.get(pid, ([], []))
        rows.append({
            "partner_id": pid, "slug": slug, "name": name, "type": kind, "status": status, "audience": audience,
            "tier": tiers.get(tier_id), "stage": stage, "onboarding_status": onboarding_status,
            "subscriptions": subscriptions.get(pid, []), "applications": applications.get(pid, []),
            "credentials": credentials.get(pid, []), "agreements_signed": signed, "agreements_missing": missing,
            "first_call_at": first_calls.get(pid), "last_call_at": last_calls.get(pid),
            "calls_30d": int(calls.get(pid) or 0),
            "flags": [f.model_dump() for f in chosen.flags.get(pid, ())]})
    return rows


def _limited(stmt: Select, column: Any, ids: list[uuid.UUID] | None) -> Select:
    return stmt if ids is None else stmt.where(column.in_(ids))


def _agreement_items(statuses: dict[uuid.UUID, list[AgreementStatus]], ids: list[uuid.UUID],
                     ) -> dict[uuid.UUID, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """partner id → (agreements signed, agreements missing), each list ordered by slug."""
    out = {}
    for pid in ids:
        found = statuses.get(pid, ())
        signed, missing = [], []
        for s in sorted(found, key=lambda s: s.slug) if len(found) > 1 else found:
            (signed if s.state == "accepted" else missing).append({
                "agreement_id": s.agreement_id, "slug": s.slug, "title": s.title, "state": s.state,
                "version_number": s.version_number, "accepted_version_number": s.accepted_version_number,
                "accepted_at": s.accepted_at, "due_at": s.due_at, "reasons": list(s.reasons)})
        out[pid] = (signed, missing)
    return out


async def _subscriptions(conn: AsyncConnection, ids: list[uuid.UUID] | None) -> dict[uuid.UUID, list]:
    rows = await conn.execute(_limited(
        select(Subscription.partner_id, Subscription.id, Subscription.product_id, Product.slug, Subscription.plan_id,
               Plan.slug, as_text(Subscription.state),
               func.coalesce(Subscription.activated_at, Subscription.created_at))
        .join(Product, Product.id == Subscription.product_id).join(Plan, Plan.id == Subscription.plan_id)
        .where(Subscription.state.in_(_SHOWN_STATES))
        .order_by(Product.slug, Plan.slug), Subscription.partner_id, ids))
    out: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for partner_id, sid, product_id, product, plan_id, plan, state, since in rows:
        out[partner_id].append({"id": sid, "product_id": product_id, "product": product, "plan_id": plan_id,
                                "plan": plan, "state": state, "since": since})
    return out


async def _applications(conn: AsyncConnection, ids: list[uuid.UUID] | None,
                        window: AuditWindow) -> tuple[dict[uuid.UUID, list], dict[uuid.UUID, list]]:
    rows = await conn.execute(_limited(
        select(Application.partner_id, Application.id, Application.name, as_text(Application.environment),
               as_text(Application.state))
        .order_by(Application.environment, Application.name), Application.partner_id, ids))
    applications: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for partner_id, app_id, name, environment, state in rows:
        applications[partner_id].append({"id": app_id, "name": name, "environment": environment, "state": state})
    rows = await conn.execute(_limited(
        select(Application.partner_id, as_text(Application.environment), Credential.id, Credential.application_id,
               Credential.name, Credential.last4, Credential.created_at, Credential.expires_at,
               Credential.last_used_at)
        .join(Application, Application.id == Credential.application_id)
        .where(Credential.revoked_at.is_(None)).order_by(Credential.created_at, Credential.id),
        Application.partner_id, ids))
    credentials: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    now = window.now
    for partner_id, environment, cid, app_id, name, last4, created, expires, used in rows:
        credentials[partner_id].append({
            "id": cid, "application_id": app_id, "environment": environment, "name": name, "last4": last4,
            "created_at": created, "age_days": days_between(created, now), "expires_at": expires,
            "last_used_at": used, "unused_days": days_between(used or created, now)})
    return applications, credentials


async def _traffic(conn: AsyncConnection, window: AuditWindow, ids: list[uuid.UUID], only: list[uuid.UUID] | None,
                   ) -> tuple[dict[uuid.UUID, datetime], dict[uuid.UUID, int]]:
    """Each partner's last admitted call and its admitted calls in the last 30 days.

    Many partners: one pass over the request rows gives both. A page: an index probe per
    partner on (partner_id, minute) for the last call, and its last 30 days summed."""
    admitted = (UsageCount.metric_id.is_(None), UsageCount.denial == "")
    recent = UsageCount.minute >= window.now - CALLS_WINDOW
    if only is None:
        rows = await conn.execute(
            select(UsageCount.partner_id, func.max(UsageCount.minute),
                   func.sum(case((recent, UsageCount.count), else_=0)))
            .where(*admitted).group_by(UsageCount.partner_id))
        last, calls = {}, {}
        for pid, at, count in rows:
            if pid is not None:
                last[pid], calls[pid] = at, count
        return last, calls
    latest = select(func.max(UsageCount.minute)).where(UsageCount.partner_id == Partner.id,
                                                       *admitted).scalar_subquery()
    rows = await conn.execute(select(Partner.id, latest).where(Partner.id.in_(only)))
    last = {pid: at for pid, at in rows if at is not None}
    calls = dict((await conn.execute(
        select(UsageCount.partner_id, func.sum(UsageCount.count))
        .where(recent, *admitted, UsageCount.partner_id.in_(only)).group_by(UsageCount.partner_id))).all())
    return last, calls
