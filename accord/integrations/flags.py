"""The integration audit's flags, computed for every partner at once in a handful of aggregate queries.

Each flag is decided here and nowhere else; the per-partner details of the audit only
display what the flags name. Closed partners get no flags: the gateway refuses all
their traffic already.

- `stale-credential`: a credential that still works (not revoked, not expired) and was
  last used (or, never used, created) more than `stale_credential_days` ago.
- `above-tier`: an active or pending subscription to a product the partner's audience may
  not see, or to a plan whose minimum program tier is above the partner's tier.
- `no-active-member`: no active user on the partner's team.
- `no-traffic`: working access (an active subscription and a live application with a
  working credential) for more than `no_traffic_days`, and no admitted call in that time.
- `missing-agreement`: an integration (a live application with a working credential)
  while an agreement the partner is bound by is overdue or missing.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from accord.apps.models import Application, ApplicationState, Credential
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.integrations.schemas import Flag
from accord.partners.models import Audience, Partner, PartnerStatus, Tier, visible_tiers
from accord.plans.models import Plan
from accord.products.models import Product
from accord.subscriptions.models import Subscription, SubscriptionState
from accord.teams.models import Membership
from accord.usage.models import UsageCount
from accord.users.models import User

UNSATISFIED = frozenset({"overdue", "missing"})
CALLS_WINDOW = timedelta(days=30)
_HAS_ACCESS = (SubscriptionState.active, SubscriptionState.pending)


@dataclass(frozen=True)
class AuditWindow:
    """The audit's clock and thresholds, fixed once per report so every flag uses the same ones."""

    now: datetime
    stale_days: int
    no_traffic_days: int

    @classmethod
    def of(cls, settings: Settings) -> AuditWindow:
        return cls(utcnow(), settings.stale_credential_days, settings.no_traffic_days)

    @property
    def stale_before(self) -> datetime:
        return self.now - timedelta(days=self.stale_days)

    @property
    def traffic_since(self) -> datetime:
        return self.now - timedelta(days=self.no_traffic_days)

    @property
    def calls_since(self) -> datetime:
        """The start of the audit's "calls in the last 30 days"."""
        return self.now - CALLS_WINDOW


@dataclass(frozen=True)
class Traffic:
    """Each partner's admitted calls, from one pass over the request rows since `since` (the earlier
    of the audit's two windows; None: the whole history); keyed by the partner id's `.int` (cheap to hash)."""

    since: datetime | None
    last: dict[int, datetime]  # the last admitted call, for partners with one since `since`
    calls_30d: dict[int, int]


ADMITTED = (UsageCount.metric_id.is_(None), UsageCount.denial == "")


async def read_traffic(conn: AsyncConnection, window: AuditWindow, *, whole_history: bool = False) -> Traffic:
    """The recent request rows only (enough for the flags and the calls in the last 30 days), or the
    whole history when every partner's last call is wanted too (one pass rather than two)."""
    since = None if whole_history else min(window.calls_since, window.traffic_since)
    stmt = (select(UsageCount.partner_id, func.max(UsageCount.minute),
                   func.sum(case((UsageCount.minute >= window.calls_since, UsageCount.count), else_=0)))
            .where(*ADMITTED).group_by(UsageCount.partner_id))
    rows = (await conn.execute(stmt if since is None else stmt.where(UsageCount.minute >= since))).all()
    last, calls = {}, {}
    for partner_id, at, count in rows:
        if partner_id is not None:
            last[partner_id.int], calls[partner_id.int] = at, int(count or 0)
    return Traffic(since, last, calls)


def days_between(earlier: datetime, later: datetime) -> int:
    return max(0, (later - earlier).days)


def working_credential(now: datetime) -> ColumnElement[bool]:
    return and_(Credential.revoked_at.is_(None), or_(Credential.expires_at.is_(None), Credential.expires_at > now))


def _scoped(stmt: Select, partner_ids: list[uuid.UUID] | None) -> Select:
    """Kept to the partners audited: never closed ones, and only `partner_ids` when given."""
    stmt = stmt.where(Partner.status != PartnerStatus.closed)
    return stmt.where(Partner.id.in_(partner_ids)) if partner_ids is not None else stmt


# A flag as a dict shaped like `FlagRead` (a page validates it; the exports write thousands as they are).
FlagRow = dict[str, Any]


class _Flags:
    def __init__(self) -> None:
        self.by_partner: dict[uuid.UUID, list[FlagRow]] = defaultdict(list)

    def add(self, partner_id: uuid.UUID, flag: Flag, detail: str, recommendation: str = "",
            subject_ids: list[uuid.UUID] | None = None) -> None:
        self.by_partner[partner_id].append({"flag": flag, "detail": detail, "recommendation": recommendation,
                                            "subject_ids": subject_ids or []})


async def partner_flags(session: AsyncSession, window: AuditWindow, partner_ids: list[uuid.UUID] | None,
                        statuses: list[Any], traffic: Traffic) -> dict[uuid.UUID, list[FlagRow]]:
    """partner id → its flags (partners without any are left out); `partner_ids` None: every partner.

    `statuses` are the partners' agreement statuses (`agreements.service.statuses`) and `traffic`
    their calls (`read_traffic`), read once by the caller, which shows them too."""
    conn = await session.connection()
    flags = _Flags()
    await _stale_credentials(conn, window, partner_ids, flags)
    await _above_tier(conn, partner_ids, flags)
    await _no_active_member(conn, partner_ids, flags)
    integrated = await _no_traffic(conn, window, partner_ids, traffic, flags)
    _missing_agreements(integrated, statuses, flags)
    order = list(Flag)
    return {pid: sorted(found, key=lambda f: order.index(f["flag"])) if len(found) > 1 else found
            for pid, found in flags.by_partner.items()}


async def _stale_credentials(conn: AsyncConnection, window: AuditWindow, partner_ids: list[uuid.UUID] | None,
                             flags: _Flags) -> None:
    seen = func.coalesce(Credential.last_used_at, Credential.created_at)
    rows = await conn.execute(_scoped(
        select(Application.partner_id, Credential.id, Credential.name, Credential.last4, Application.name, seen)
        .join(Application, Application.id == Credential.application_id)
        .join(Partner, Partner.id == Application.partner_id)
        .where(working_credential(window.now), seen < window.stale_before)
        .order_by(Application.partner_id, seen), partner_ids))
    stale: dict[uuid.UUID, list[tuple]] = defaultdict(list)
    for partner_id, *credential in rows:
        stale[partner_id].append(credential)
    for partner_id, credentials in stale.items():
        names = ", ".join(f"{app} / {name} (…{last4}, unused {days_between(at, window.now)} days)"
                          for _, name, last4, app, at in credentials)
        flags.add(partner_id, Flag.stale_credential,
                  f"{len(credentials)} credential(s) unused for more than {window.stale_days} days: {names}",
                  "revoke", [c[0] for c in credentials])


async def _above_tier(conn: AsyncConnection, partner_ids: list[uuid.UUID] | None, flags: _Flags) -> None:
    min_tier, partner_tier = Tier.__table__.alias("min_tier"), Tier.__table__.alias("partner_tier")
    hidden = or_(*[and_(Partner.audience == audience, Product.visibility.not_in(list(visible_tiers(audience))))
                   for audience in Audience])
    below_min = and_(Plan.min_tier_id.is_not(None),
                     or_(partner_tier.c.rank.is_(None), partner_tier.c.rank < min_tier.c.rank))
    rows = await conn.execute(_scoped(
        select(Subscription.partner_id, Subscription.id, Product.slug, Product.visibility, Plan.slug,
               min_tier.c.slug, Partner.audience, hidden)
        .join(Partner, Partner.id == Subscription.partner_id)
        .join(Product, Product.id == Subscription.product_id)
        .join(Plan, Plan.id == Subscription.plan_id)
        .outerjoin(min_tier, min_tier.c.id == Plan.min_tier_id)
        .outerjoin(partner_tier, partner_tier.c.id == Partner.tier_id)
        .where(Subscription.state.in_(_HAS_ACCESS), or_(hidden, below_min))
        .order_by(Subscription.partner_id, Product.slug, Plan.slug), partner_ids))
    found: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = defaultdict(list)
    for partner_id, subscription_id, product, visibility, plan, min_slug, audience, is_hidden in rows:
        why = f"the {visibility} product is not visible to the {audience} audience" if is_hidden \
            else f"the plan needs tier {min_slug} or above"
        found[partner_id].append((subscription_id, f"{product}/{plan}: {why}"))
    for partner_id, items in found.items():
        flags.add(partner_id, Flag.above_tier, "; ".join(text for _, text in items),
                  "review the subscription", [sid for sid, _ in items])


async def _no_active_member(conn: AsyncConnection, partner_ids: list[uuid.UUID] | None, flags: _Flags) -> None:
    with_member = (select(Membership.partner_id).join(User, User.id == Membership.user_id)
                   .where(User.is_active.is_(True)))
    rows = (await conn.execute(_scoped(select(Partner.id).where(Partner.id.not_in(with_member)),
                                       partner_ids))).scalars()
    for partner_id in rows:
        flags.add(partner_id, Flag.no_active_member, "no active member on the partner's team", "invite a member")


async def _no_traffic(conn: AsyncConnection, window: AuditWindow, partner_ids: list[uuid.UUID] | None,
                      traffic: Traffic, flags: _Flags) -> set[int]:
    """Flags access without traffic; returns the partners with an integration (a working live credential),
    by their id's `.int`."""
    credentials = (select(Application.partner_id, func.min(Credential.created_at).label("since"))
                   .join(Application, Application.id == Credential.application_id)
                   .where(Application.state == ApplicationState.live, working_credential(window.now))
                   .group_by(Application.partner_id).subquery())
    subscriptions = (select(Subscription.partner_id,
                            func.min(func.coalesce(Subscription.activated_at, Subscription.created_at)).label("since"))
                     .where(Subscription.state == SubscriptionState.active)
                     .group_by(Subscription.partner_id).subquery())
    # partner with a working live credential → since when it has one, since when an active subscription
    rows = (await conn.execute(_scoped(
        select(credentials.c.partner_id, credentials.c.since, subscriptions.c.since)
        .join(Partner, Partner.id == credentials.c.partner_id)
        .outerjoin(subscriptions, subscriptions.c.partner_id == credentials.c.partner_id), partner_ids))).all()
    quiet_since = window.traffic_since  # within the traffic read (which starts at the earlier window, or never)
    for partner_id, credential_since, subscription_since in rows:
        if subscription_since is None:
            continue
        last = traffic.last.get(partner_id.int)
        if last is not None and last >= quiet_since:
            continue
        since = max(credential_since, subscription_since)
        if since < quiet_since:
            flags.add(partner_id, Flag.no_traffic,
                      f"working access since {since:%Y-%m-%d} and no admitted call in the last "
                      f"{window.no_traffic_days} days", "check the integration or revoke the access")
    return {row[0].int for row in rows}


def _missing_agreements(integrated: set[int], statuses: list[Any], flags: _Flags) -> None:
    found: dict[uuid.UUID, list] = defaultdict(list)
    for status in statuses:
        if status.state in UNSATISFIED and status.partner_id.int in integrated:
            found[status.partner_id].append(status)
    for partner_id, statuses in found.items():
        text = "; ".join(
            f"{s.title} v{s.version_number} {s.state}" + (f" since {s.due_at:%Y-%m-%d}" if s.due_at else "")
            for s in sorted(statuses, key=lambda s: s.slug))
        flags.add(partner_id, Flag.missing_agreement, f"integration without a required agreement: {text}",
                  "request re-acceptance", [s.agreement_id for s in statuses])
