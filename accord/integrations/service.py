"""The integration audit: for each partner its access, credentials, agreements, traffic, stage and flags.

Flags come from `accord.integrations.flags` (computed for the whole program in a few
aggregate queries, so filtering by flag and counting flags stay cheap); the details of
a page (or of the whole export) are then read in one query per kind of thing, for all
the partners at once. Read only: nothing here changes data.

Speed (10k partners, ~100k rows read, on PostgreSQL): the rows are read through the Core
connection as plain tuples and built into plain dicts (no ORM rows, no model per item;
a page is validated), enum columns come as their stored strings, partners are looked up
by their id's `.int`, the request rows are read in one pass shared by the flags and the
details, and the cyclic garbage collector is held off while a report is built
(`bulk.collector_paused`). `export_audit` writes the files inside that pause.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from accord.agreements import service as agreements
from accord.agreements.status import AgreementStatus
from accord.apps.models import Application, Credential
from accord.core.config import Settings
from accord.core.pagination import PageParams
from accord.integrations import export
from accord.core.collector import collector_paused
from accord.integrations.flags import (
    ADMITTED,
    AuditWindow,
    FlagRow,
    Traffic,
    days_between,
    partner_flags,
    read_traffic,
)
from accord.integrations.schemas import AuditPage, Flag, PartnerAudit
from accord.onboarding.models import PartnerOnboarding
from accord.partners.models import Partner, Tier
from accord.plans.models import Plan
from accord.products.models import Product
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.usage.models import FirstCall, UsageCount

# Subscriptions still worth showing: cancelled and rejected ones are history.
_SHOWN_STATES = (SubscriptionState.active, SubscriptionState.pending, SubscriptionState.suspended)


@dataclass
class Selection:
    """The audited partners (by name, after the filters), everyone's flags and agreement statuses.

    The maps are keyed by the partner id's `.int`: a `uuid.UUID` hashes and compares in Python
    code, and the whole audit looks partners up a few hundred thousand times."""

    everyone: list[uuid.UUID]
    ids: list[uuid.UUID]
    flags: dict[int, list[FlagRow]]
    statuses: dict[int, list[AgreementStatus]]
    traffic: Traffic


async def select_partners(session: AsyncSession, window: AuditWindow, *, flag: Flag | None = None,
                          partner_id: uuid.UUID | None = None, whole_history: bool = False) -> Selection:
    """`whole_history`: read every partner's last call now (the whole audit shows them all)."""
    scope = [partner_id] if partner_id else None
    statuses = await agreements.statuses(session, partner_ids=scope)
    conn = await session.connection()
    traffic = await read_traffic(conn, window, whole_history=whole_history)
    flags = {pid.int: found for pid, found in
             (await partner_flags(session, window, scope, statuses, traffic)).items()}
    stmt = select(Partner.id).order_by(Partner.name, Partner.id)
    everyone = list((await conn.execute(stmt.where(Partner.id == partner_id) if partner_id else stmt)).scalars())
    if flag:
        flagged = {key for key, found in flags.items() if any(f["flag"] == flag for f in found)}
        ids = [pid for pid in everyone if pid.int in flagged]
    else:
        ids = everyone
    by_partner: dict[int, list[AgreementStatus]] = defaultdict(list)
    for status in statuses:
        by_partner[status.partner_id.int].append(status)
    return Selection(everyone, ids, flags, by_partner, traffic)


def flag_counts(flags: dict[int, list[FlagRow]]) -> dict[str, int]:
    """Partners with each flag (a partner has each flag at most once)."""
    counts = {f.value: 0 for f in Flag}
    for found in flags.values():
        for one in found:
            counts[one["flag"].value] += 1
    return counts


async def audit_page(session: AsyncSession, settings: Settings, page: PageParams, *, flag: Flag | None = None,
                     partner_id: uuid.UUID | None = None) -> AuditPage:
    with collector_paused():
        return await _audit_page(session, AuditWindow.of(settings), page, flag, partner_id)


async def _audit_page(session: AsyncSession, window: AuditWindow, page: PageParams, flag: Flag | None,
                      partner_id: uuid.UUID | None) -> AuditPage:
    chosen = await select_partners(session, window, flag=flag, partner_id=partner_id)
    ids = chosen.ids[page.offset:page.offset + page.limit]
    items = [PartnerAudit.model_validate(row) for row in await details(session, window, ids, chosen)] if ids else []
    # Counted before the flag filter, so the counts say what each filter would show.
    return AuditPage(items=items, total=len(chosen.ids), limit=page.limit, offset=page.offset,
                     flag_counts=flag_counts(chosen.flags), generated_at=window.now,
                     stale_credential_days=window.stale_days, no_traffic_days=window.no_traffic_days)


async def audit_all(session: AsyncSession, settings: Settings, *, flag: Flag | None = None,
                    partner_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """The whole audit (for the CLI), each row shaped like `PartnerAudit`."""
    with collector_paused():
        return await _audit_all(session, AuditWindow.of(settings), flag, partner_id)


async def _audit_all(session: AsyncSession, window: AuditWindow, flag: Flag | None,
                     partner_id: uuid.UUID | None) -> list[dict[str, Any]]:
    chosen = await select_partners(session, window, flag=flag, partner_id=partner_id,
                                   whole_history=partner_id is None)
    return await details(session, window, chosen.ids, chosen) if chosen.ids else []


async def export_audit(session: AsyncSession, settings: Settings, file_format: str, *, flag: Flag | None = None,
                       partner_id: uuid.UUID | None = None) -> bytes:
    """The whole audit as a CSV or JSON file (`export.to_csv` / `export.to_json`), UTF-8."""
    window = AuditWindow.of(settings)
    with collector_paused():
        # The rows are dropped before the pause ends, so no collection ever walks them.
        if file_format == "csv":
            return export.to_csv(await _audit_all(session, window, flag, partner_id)).encode()
        return export.to_json_bytes(await _audit_all(session, window, flag, partner_id))


# Above this many partners the detail queries read every partner's rows rather than an IN list.
_IN_LIST_MAX = 1000


def as_text(column: Any) -> Any:
    """An enum column read as the string it stores (what `str()` of the enum gives), skipping the
    enum's conversion of every row: the audit only shows the value."""
    return type_coerce(column, String)


async def details(session: AsyncSession, window: AuditWindow, ids: list[uuid.UUID],
                  chosen: Selection) -> list[dict[str, Any]]:
    """The audit rows of `ids` (shaped like `PartnerAudit`), in that order: one query for the partners'
    own facts, then one per kind of nested item.

    Plain dicts, read through the session's Core connection: for the whole program there are
    tens of thousands of nested items, and building an ORM row or a model for each would cost
    more than all the queries (a page is validated)."""
    conn = await session.connection()
    only = ids if len(ids) <= _IN_LIST_MAX else None
    partners = {row[0].int: row for row in (await conn.execute(_partner_facts(only))).all()}
    subscriptions = await _subscriptions(conn, only)
    applications, credentials = await _applications(conn, only, window)
    traffic = chosen.traffic
    last_calls = traffic.last | await _earlier_calls(conn, traffic, only)
    rows = []
    for pid in ids:
        key = pid.int
        _, slug, name, kind, status, audience, tier, stage, onboarding_status, first_call = partners[key]
        signed, missing = _agreement_items(chosen.statuses.get(key, ()))
        rows.append({
            "partner_id": pid, "slug": slug, "name": name, "type": kind, "status": status, "audience": audience,
            "tier": tier, "stage": stage, "onboarding_status": onboarding_status,
            "subscriptions": subscriptions.get(key, []), "applications": applications.get(key, []),
            "credentials": credentials.get(key, []), "agreements_signed": signed, "agreements_missing": missing,
            # The last call is read from per-minute usage rows: never shown before the (exact) first one.
            "first_call_at": first_call, "last_call_at": _not_before(last_calls.get(key), first_call),
            "calls_30d": traffic.calls_30d.get(key, 0),
            "flags": chosen.flags.get(key, [])})
    return rows


def _partner_facts(only: list[uuid.UUID] | None) -> Select:
    """One row per partner: its own columns, tier, stage and first call."""
    if only is not None:  # a page: an index probe per partner
        first_call = select(func.min(FirstCall.at)).where(FirstCall.partner_id == Partner.id).scalar_subquery()
    else:
        firsts = (select(FirstCall.partner_id, func.min(FirstCall.at).label("at"))
                  .group_by(FirstCall.partner_id).subquery())
        first_call = firsts.c.at
    stmt = (select(Partner.id, Partner.slug, Partner.name, as_text(Partner.type), as_text(Partner.status),
                   as_text(Partner.audience), Tier.slug, PartnerOnboarding.stage_key,
                   as_text(PartnerOnboarding.status), first_call)
            .outerjoin(Tier, Tier.id == Partner.tier_id)
            .outerjoin(PartnerOnboarding, PartnerOnboarding.partner_id == Partner.id))
    if only is None:
        stmt = stmt.outerjoin(firsts, firsts.c.partner_id == Partner.id)
    return _limited(stmt, Partner.id, only)


async def _earlier_calls(conn: AsyncConnection, traffic: Traffic, only: list[uuid.UUID] | None) -> dict[int, datetime]:
    """The last admitted call of partners without one in the traffic read (which started at `traffic.since`).

    A page: an index probe on (partner_id, minute) per such partner. Everyone: one pass over the
    older request rows (with the recent read, every request row is read once)."""
    if traffic.since is None:
        return {}
    older = (*ADMITTED, UsageCount.minute < traffic.since)
    if only is None:
        rows = (await conn.execute(select(UsageCount.partner_id, func.max(UsageCount.minute))
                                   .where(*older).group_by(UsageCount.partner_id))).all()
        return {pid.int: at for pid, at in rows if pid is not None and pid.int not in traffic.last}
    quiet = [pid for pid in only if pid.int not in traffic.last]
    if not quiet:
        return {}
    latest = select(func.max(UsageCount.minute)).where(UsageCount.partner_id == Partner.id, *older).scalar_subquery()
    rows = (await conn.execute(select(Partner.id, latest).where(Partner.id.in_(quiet)))).all()
    return {pid.int: at for pid, at in rows if at is not None}


def _limited(stmt: Select, column: Any, ids: list[uuid.UUID] | None) -> Select:
    return stmt if ids is None else stmt.where(column.in_(ids))


def _agreement_items(statuses: list[AgreementStatus]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A partner's agreements signed and missing, each ordered by slug."""
    signed: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for s in sorted(statuses, key=lambda s: s.slug) if len(statuses) > 1 else statuses:
        (signed if s.state == "accepted" else missing).append({
            "agreement_id": s.agreement_id, "slug": s.slug, "title": s.title, "state": s.state,
            "version_number": s.version_number, "accepted_version_number": s.accepted_version_number,
            "accepted_at": s.accepted_at, "due_at": s.due_at, "reasons": list(s.reasons)})
    return signed, missing


async def _subscriptions(conn: AsyncConnection, ids: list[uuid.UUID] | None) -> dict[int, list]:
    rows = await conn.execute(_limited(
        select(Subscription.partner_id, Subscription.id, Subscription.product_id, Product.slug, Subscription.plan_id,
               Plan.slug, as_text(Subscription.state),
               func.coalesce(Subscription.activated_at, Subscription.created_at))
        .join(Product, Product.id == Subscription.product_id).join(Plan, Plan.id == Subscription.plan_id)
        .where(Subscription.state.in_(_SHOWN_STATES))
        .order_by(Product.slug, Plan.slug), Subscription.partner_id, ids))
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for partner_id, sid, product_id, product, plan_id, plan, state, since in rows.all():
        out[partner_id.int].append({"id": sid, "product_id": product_id, "product": product, "plan_id": plan_id,
                                "plan": plan, "state": state, "since": since})
    return out


async def _applications(conn: AsyncConnection, ids: list[uuid.UUID] | None,
                        window: AuditWindow) -> tuple[dict[int, list], dict[int, list]]:
    rows = await conn.execute(_limited(
        select(Application.partner_id, Application.id, Application.name, as_text(Application.environment),
               as_text(Application.state))
        .order_by(Application.environment, Application.name), Application.partner_id, ids))
    applications: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for partner_id, app_id, name, environment, state in rows.all():
        applications[partner_id.int].append({"id": app_id, "name": name, "environment": environment, "state": state})
    rows = await conn.execute(_limited(
        select(Application.partner_id, as_text(Application.environment), Credential.id, Credential.application_id,
               Credential.name, Credential.last4, Credential.created_at, Credential.expires_at,
               Credential.last_used_at)
        .join(Application, Application.id == Credential.application_id)
        .where(Credential.revoked_at.is_(None)).order_by(Credential.created_at, Credential.id),
        Application.partner_id, ids))
    credentials: dict[int, list[dict[str, Any]]] = defaultdict(list)
    now = window.now
    for partner_id, environment, cid, app_id, name, last4, created, expires, used in rows.all():
        credentials[partner_id.int].append({
            "id": cid, "application_id": app_id, "environment": environment, "name": name, "last4": last4,
            "created_at": created, "age_days": days_between(created, now), "expires_at": expires,
            "last_used_at": used, "unused_days": days_between(used or created, now)})
    return applications, credentials


def _not_before(moment: datetime | None, floor: datetime | None) -> datetime | None:
    if moment is None or floor is None:
        return moment or floor
    return max(moment, floor)
