"""Partners and program tiers. Never commits; the caller does.

Partner status moves only through explicit actions, like an account in 3scale
or a developer in Apigee; each answers 409 `invalid-state` from any other state:

    pending   --activate--> active       (approve a sign-up)
    suspended --activate--> active       (resume)
    active    --suspend---> suspended    (a reason is required and kept)
    pending | active | suspended --close--> closed

* A pending partner is approved or turned down (closed); it cannot be suspended,
  since it never had access to suspend.
* Repeating an action (activating an active partner) is refused, not ignored, so
  a script learns that its idea of the partner's state was wrong.
* `closed` is final. Closing is what you do instead of deleting a partner with
  history: its applications, subscriptions and audit trail stay for the record,
  and re-opening would quietly bring its old credentials back to life. To work
  with the organisation again, create a new partner.

A partner may be deleted only while nothing is attached to it (no members,
applications or subscriptions); otherwise the answer is 409 saying to close it.
The program tier changes only through `change_tier` (audited as
`partner.tier_changed`), never through a plain update.
"""
from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.errors import ProblemError, conflict, invalid, not_found, reject_nulls
from accord.core.queries import where_equal
from accord.customfields.models import FieldTarget
from accord.customfields.service import validate_values
from accord.partners.models import Audience, Partner, PartnerStatus, PartnerType, Tier
from accord.partners.schemas import (
    PartnerCreate,
    PartnerSelfUpdate,
    PartnerSort,
    PartnerUpdate,
    TierCreate,
    TierUpdate,
)

# Default gap between a new tier and the highest one, leaving room to slot a tier in between.
RANK_STEP = 10


# --- tiers -------------------------------------------------------------------

def list_tiers() -> Select:
    return select(Tier).order_by(Tier.rank)


async def get_tier(session: AsyncSession, tier_id: uuid.UUID) -> Tier:
    tier = await session.get(Tier, tier_id)
    if tier is None:
        raise not_found("tier")
    return tier


async def tier_by_ref(session: AsyncSession, ref: str, field: str = "tier") -> Tier:
    """The tier named by slug or id, or a 422 naming `field`."""
    tier = await session.scalar(select(Tier).where(Tier.slug == ref))
    if tier is None and (tier_id := _as_uuid(ref)) is not None:
        tier = await session.get(Tier, tier_id)
    if tier is None:
        raise invalid(field, f"no tier {ref!r}")
    return tier


async def lowest_tier(session: AsyncSession) -> Tier | None:
    """The entry tier new partners get; None while the program has no tiers."""
    return await session.scalar(select(Tier).order_by(Tier.rank).limit(1))


async def tiers_by_id(session: AsyncSession, partners: list[Partner]) -> dict[uuid.UUID, Tier]:
    """The tiers of these partners in one query, for building answers."""
    ids = {p.tier_id for p in partners if p.tier_id is not None}
    if not ids:
        return {}
    return {t.id: t for t in await session.scalars(select(Tier).where(Tier.id.in_(ids)))}


async def _check_tier_unique(session: AsyncSession, tier_id: uuid.UUID | None, slug: str | None,
                             rank: int | None) -> None:
    if slug is not None:
        other = await session.scalar(select(Tier.id).where(Tier.slug == slug))
        if other is not None and other != tier_id:
            raise conflict("slug", f"a tier with slug {slug!r} already exists")
    if rank is not None:
        other = await session.scalar(select(Tier).where(Tier.rank == rank))
        if other is not None and other.id != tier_id:
            raise conflict("rank", f"tier {other.slug!r} already has rank {rank}; reorder the tiers instead")


async def create_tier(session: AsyncSession, actor: Actor, data: TierCreate) -> Tier:
    rank = data.rank
    if rank is None:
        highest = await session.scalar(select(func.max(Tier.rank)))
        rank = 0 if highest is None else highest + RANK_STEP
    await _check_tier_unique(session, None, data.slug, rank)
    tier = Tier(name=data.name, slug=data.slug, rank=rank, description=data.description)
    session.add(tier)
    await audit.record(session, actor, "tier.created", tier)
    return tier


async def update_tier(session: AsyncSession, actor: Actor, tier_id: uuid.UUID, data: TierUpdate) -> Tier:
    tier = await get_tier(session, tier_id)
    before = audit.snapshot(tier)
    changes = data.model_dump(exclude_unset=True)
    reject_nulls(changes)
    await _check_tier_unique(session, tier.id, changes.get("slug"), changes.get("rank"))
    for key, value in changes.items():
        setattr(tier, key, value)
    await audit.record(session, actor, "tier.updated", tier, before=before)
    return tier


async def delete_tier(session: AsyncSession, actor: Actor, tier_id: uuid.UUID) -> None:
    from accord.plans.models import Plan

    tier = await get_tier(session, tier_id)
    partners = await session.scalar(select(func.count()).select_from(Partner).where(Partner.tier_id == tier.id))
    if partners:
        raise ProblemError("conflict", f"{partners} partner(s) are in this tier; move them to another tier first",
                           [{"field": "tier_id", "reason": "in use by partners"}])
    # Plans would silently lose their minimum tier (the column is SET NULL) and open up to every tier.
    plans = await session.scalar(select(func.count()).select_from(Plan).where(Plan.min_tier_id == tier.id))
    if plans:
        raise ProblemError("conflict", f"{plans} plan(s) require this tier as their minimum; change them first",
                           [{"field": "tier_id", "reason": "in use by plans"}])
    before = audit.snapshot(tier)
    await session.delete(tier)
    await audit.record(session, actor, "tier.deleted", target_type="tiers", target_id=str(tier_id), before=before)


async def reorder_tiers(session: AsyncSession, actor: Actor, tier_ids: list[uuid.UUID]) -> list[Tier]:
    """Give the tiers their existing rank values in the order of `tier_ids` (lowest first).

    `tier_ids` must name every tier exactly once. Ranks are unique, so the tiers
    first move to temporary ranks below every real one, then to their new ranks;
    each step is flushed on its own so no statement ever sees two equal ranks.
    """
    tiers = {t.id: t for t in await session.scalars(list_tiers())}
    errors = []
    seen: set[uuid.UUID] = set()
    for index, tier_id in enumerate(tier_ids):
        if tier_id not in tiers:
            errors.append({"field": f"tier_ids.{index}", "reason": "no such tier"})
        elif tier_id in seen:
            errors.append({"field": f"tier_ids.{index}", "reason": "this tier is listed twice"})
        seen.add(tier_id)
    missing = [t.slug for t in tiers.values() if t.id not in seen]
    if missing:
        errors.append({"field": "tier_ids", "reason": f"must list every tier; missing: {', '.join(missing)}"})
    if errors:
        raise ProblemError("validation-error", "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors)

    current = sorted(tiers.values(), key=lambda t: t.rank)
    before = {"order": [{"id": str(t.id), "slug": t.slug, "rank": t.rank} for t in current]}
    ranks = [t.rank for t in current]
    ordered = [tiers[tier_id] for tier_id in tier_ids]
    below_all = min(ranks, default=0) - 1
    for index, tier in enumerate(ordered):
        tier.rank = below_all - index
    await session.flush()
    for tier, rank in zip(ordered, ranks, strict=True):
        tier.rank = rank
    await session.flush()
    after = {"order": [{"id": str(t.id), "slug": t.slug, "rank": t.rank} for t in ordered]}
    await audit.record(session, actor, "tier.reordered", target_type="tiers", target_id="", before=before,
                       after=after)
    return ordered


# --- partners: reading -------------------------------------------------------

def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _as_utc(moment: datetime) -> datetime:
    # A filter without a zone is taken as UTC, the zone every timestamp is stored in.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


_SORT_COLUMNS = {
    "name": func.lower(Partner.name),
    "slug": Partner.slug,
    "created_at": Partner.created_at,
    "status": Partner.status,
}


def list_partners(
    *,
    type: PartnerType | None = None,
    tier: str | None = None,
    status: PartnerStatus | None = None,
    audience: Audience | None = None,
    search: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    sort: PartnerSort = PartnerSort.name,
) -> Select:
    stmt = where_equal(select(Partner), {Partner.type: type, Partner.status: status, Partner.audience: audience})
    if tier:
        by_slug = Partner.tier_id.in_(select(Tier.id).where(Tier.slug == tier))
        tier_id = _as_uuid(tier)
        stmt = stmt.where(or_(by_slug, Partner.tier_id == tier_id) if tier_id else by_slug)
    if search:
        needle = search.strip().lower()
        stmt = stmt.where(or_(func.lower(Partner.name).contains(needle, autoescape=True),
                              Partner.slug.contains(needle, autoescape=True),
                              func.lower(Partner.contact_email).contains(needle, autoescape=True)))
    if created_after:
        stmt = stmt.where(Partner.created_at >= _as_utc(created_after))
    if created_before:
        stmt = stmt.where(Partner.created_at < _as_utc(created_before))
    descending = sort.value.startswith("-")
    key = sort.value.lstrip("-")
    if key == "tier":
        # Partners without a tier sort below the lowest tier on both databases.
        stmt = stmt.outerjoin(Tier, Tier.id == Partner.tier_id)
        order = Tier.rank.desc().nulls_last() if descending else Tier.rank.asc().nulls_first()
    else:
        column = _SORT_COLUMNS[key]
        order = column.desc() if descending else column.asc()
    # Ties go by name, then id, so pages never repeat or skip a partner.
    return stmt.order_by(order, func.lower(Partner.name), Partner.id)


async def get_partner(session: AsyncSession, partner_id: uuid.UUID) -> Partner:
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise not_found("partner")
    return partner


async def get_partner_by_slug(session: AsyncSession, slug: str) -> Partner | None:
    return await session.scalar(select(Partner).where(Partner.slug == slug))


async def available_slug(session: AsyncSession, name: str) -> str:
    """A free partner slug made from a name (`Acme Inc.` → `acme-inc`, then `acme-inc-2`…), for sign-ups."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:90].strip("-") or "partner"
    taken = set(await session.scalars(select(Partner.slug).where(
        or_(Partner.slug == base, Partner.slug.startswith(f"{base}-", autoescape=True)))))
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


# --- partners: writing ---------------------------------------------------------

async def _check_slug_free(session: AsyncSession, partner_id: uuid.UUID | None, slug: str) -> None:
    other = await session.scalar(select(Partner.id).where(Partner.slug == slug))
    if other is not None and other != partner_id:
        raise conflict("slug", f"a partner with slug {slug!r} already exists")


async def create_partner(session: AsyncSession, actor: Actor, data: PartnerCreate, *,
                         include_hidden: bool = True) -> Partner:
    """Create a partner: admin API, self sign-up, `accord apply` and `accord partners import`.

    Without `data.tier` the partner gets the lowest-ranked tier (none if the
    program has no tiers). Custom fields are checked against their definitions;
    pass `include_hidden=False` when the partner itself is writing (sign-up), so
    it cannot set staff-only fields.
    """
    await _check_slug_free(session, None, data.slug)
    tier = await tier_by_ref(session, data.tier) if data.tier else await lowest_tier(session)
    custom_fields = await validate_values(session, FieldTarget.partner, data.custom_fields,
                                          include_hidden=include_hidden)
    partner = Partner(
        name=data.name, slug=data.slug, type=data.type, audience=data.audience, status=data.status,
        tier_id=tier.id if tier else None, contact_name=data.contact_name, contact_email=data.contact_email,
        contact_phone=data.contact_phone, website=data.website, country=data.country, notes=data.notes,
        custom_fields=custom_fields,
    )
    session.add(partner)
    await session.flush()
    await audit.record(session, actor, "partner.created", partner, partner_id=partner.id)
    return partner


# Optional details a write may blank out with "".
_CLEARABLE = {"contact_name", "contact_email", "contact_phone", "website", "country", "notes"}


async def _apply_changes(session: AsyncSession, partner: Partner, changes: dict[str, Any], *,
                         include_hidden: bool) -> None:
    for key, value in changes.items():
        if value is None:
            hint = ' (send "" to clear it)' if key in _CLEARABLE else ""
            raise invalid(key, f"may not be null{hint}")
    if "slug" in changes:
        await _check_slug_free(session, partner.id, changes["slug"])
    if "custom_fields" in changes:
        changes["custom_fields"] = await validate_values(
            session, FieldTarget.partner, changes["custom_fields"], existing=partner.custom_fields,
            include_hidden=include_hidden)
    for key, value in changes.items():
        setattr(partner, key, value)


async def update_partner(session: AsyncSession, actor: Actor, partner_id: uuid.UUID,
                         data: PartnerUpdate) -> Partner:
    partner = await get_partner(session, partner_id)
    before = audit.snapshot(partner)
    await _apply_changes(session, partner, data.model_dump(exclude_unset=True), include_hidden=True)
    await audit.record(session, actor, "partner.updated", partner, before=before, partner_id=partner.id)
    return partner


async def update_own_partner(session: AsyncSession, actor: Actor, partner: Partner,
                             data: PartnerSelfUpdate) -> Partner:
    """A partner admin editing their organisation: contact details and visible custom fields only.

    A closed partner is read-only; a suspended one may still fix its details.
    """
    if partner.status == PartnerStatus.closed:
        raise ProblemError("invalid-state", "this partner is closed; its details can no longer be changed")
    before = audit.snapshot(partner)
    await _apply_changes(session, partner, data.model_dump(exclude_unset=True), include_hidden=False)
    await audit.record(session, actor, "partner.updated", partner, before=before, partner_id=partner.id)
    return partner


async def delete_partner(session: AsyncSession, actor: Actor, partner_id: uuid.UUID) -> None:
    from accord.apps.models import Application
    from accord.subscriptions.models import Subscription
    from accord.teams.models import Membership

    partner = await get_partner(session, partner_id)
    attached = []
    for model, what in ((Membership, "member"), (Application, "application"), (Subscription, "subscription")):
        count = await session.scalar(select(func.count()).select_from(model).where(model.partner_id == partner.id))
        if count:
            attached.append(f"{count} {what}(s)")
    if attached:
        raise ProblemError(
            "conflict",
            f"the partner has {', '.join(attached)}; close it instead "
            f"(POST /admin/api/partners/{partner.id}/close), which keeps its history",
            [{"field": "partner_id", "reason": "has " + ", ".join(attached)}])
    before = audit.snapshot(partner)
    await session.delete(partner)
    await audit.record(session, actor, "partner.deleted", target_type="partners", target_id=str(partner_id),
                       partner_id=partner_id, before=before)


# Action -> (states it may start from, state it leads to, audit action).
_TRANSITIONS: dict[str, tuple[set[PartnerStatus], PartnerStatus, str]] = {
    "activate": ({PartnerStatus.pending, PartnerStatus.suspended}, PartnerStatus.active, "partner.activated"),
    "suspend": ({PartnerStatus.active}, PartnerStatus.suspended, "partner.suspended"),
    "close": ({PartnerStatus.pending, PartnerStatus.active, PartnerStatus.suspended}, PartnerStatus.closed,
              "partner.closed"),
}


async def _transition(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, action: str,
                      reason: str) -> Partner:
    sources, target, audit_action = _TRANSITIONS[action]
    partner = await get_partner(session, partner_id)
    if partner.status not in sources:
        allowed = " or ".join(sorted(sources))
        raise ProblemError("invalid-state", f"cannot {action} the partner: it is {partner.status}, and only "
                           f"{allowed} partners can become {target}")
    before = audit.snapshot(partner)
    partner.status = target
    partner.status_reason = reason
    await audit.record(session, actor, audit_action, partner, before=before, partner_id=partner.id)
    return partner


async def activate_partner(session: AsyncSession, actor: Actor, partner_id: uuid.UUID) -> Partner:
    """Approve a pending partner or resume a suspended one; clears the suspension reason."""
    return await _transition(session, actor, partner_id, "activate", "")


async def suspend_partner(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, reason: str) -> Partner:
    return await _transition(session, actor, partner_id, "suspend", reason)


async def close_partner(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, reason: str = "") -> Partner:
    return await _transition(session, actor, partner_id, "close", reason)


async def change_tier(session: AsyncSession, actor: Actor, partner_id: uuid.UUID, ref: str) -> Partner:
    """Move a partner to another program tier; recorded as `partner.tier_changed` (nothing if unchanged)."""
    partner = await get_partner(session, partner_id)
    tier = await tier_by_ref(session, ref)
    if partner.tier_id == tier.id:
        return partner
    old = await session.get(Tier, partner.tier_id) if partner.tier_id else None
    before = {**audit.snapshot(partner), "tier": old.slug if old else None}
    partner.tier_id = tier.id
    after = {**audit.snapshot(partner), "tier": tier.slug}
    await audit.record(session, actor, "partner.tier_changed", partner, before=before, after=after,
                       partner_id=partner.id)
    return partner
