"""Agreements: documents, versions, requirements, acceptances and who has signed what.

Never commits; the caller does. Every change is audited; the audit actions that are
events (`agreement_version.published`, `agreement.accepted`, `agreement.overdue`,
`agreement.due_soon`, `agreement.reacceptance_requested`) reach webhooks and email.

- An agreement has numbered versions. One draft at a time may be written and edited;
  publishing freezes it for good (`published_at`). An agreement with a published
  version cannot be deleted: acceptances point at it.
- Requirements say who is bound (see `accord.agreements.status`). They are created and
  deleted, not edited: a requirement's creation time starts its deadline.
- Acceptances are immutable evidence: accepting a version twice returns the first record.

Functions other packages call: `statuses`, `stage_satisfied_at` (`stages_satisfied_at` in bulk), `request_reacceptance`,
`record_acceptance`.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import (
    AcceptanceSource,
    Agreement,
    AgreementAcceptance,
    AgreementRequirement,
    AgreementVersion,
    RequirementScope,
)
from accord.agreements.status import (
    AgreementStatus,
    compute_statuses,
    load_program,
    stage_keys,
)
from accord.audit import service as audit
from accord.auth.actor import Actor
from accord.core.clock import utcnow
from accord.core.errors import ProblemError, conflict, invalid, not_found
from accord.partners.models import Partner, PartnerType, Tier
from accord.products.models import Product

__all__ = ["AgreementStatus", "statuses", "stage_satisfied_at", "stages_satisfied_at", "request_reacceptance",
           "record_acceptance"]


def _invalid_state(detail: str, field: str = "published_at") -> ProblemError:
    return ProblemError("invalid-state", detail, [{"field": field, "reason": detail}])


# --- agreements -----------------------------------------------------------

def list_agreements() -> Select:
    return select(Agreement).order_by(Agreement.slug)


async def get_agreement(session: AsyncSession, agreement_id: uuid.UUID) -> Agreement:
    agreement = await session.get(Agreement, agreement_id)
    if agreement is None:
        raise not_found("agreement")
    return agreement


async def _check_slug(session: AsyncSession, slug: str, current: uuid.UUID | None = None) -> None:
    taken = await session.scalar(select(Agreement.id).where(Agreement.slug == slug))
    if taken is not None and taken != current:
        raise conflict("slug", f"an agreement with slug {slug!r} exists")


async def create_agreement(session: AsyncSession, actor: Actor, *, slug: str, title: str,
                           description: str = "") -> Agreement:
    await _check_slug(session, slug)
    agreement = Agreement(slug=slug, title=title, description=description)
    session.add(agreement)
    await audit.record(session, actor, "agreement.created", agreement)
    return agreement


async def update_agreement(session: AsyncSession, actor: Actor, agreement: Agreement,
                           changes: dict[str, Any]) -> Agreement:
    if "slug" in changes:
        await _check_slug(session, changes["slug"], agreement.id)
    before = audit.snapshot(agreement)
    for key, value in changes.items():
        setattr(agreement, key, value)
    await audit.record(session, actor, "agreement.updated", agreement, before=before)
    return agreement


async def delete_agreement(session: AsyncSession, actor: Actor, agreement: Agreement) -> None:
    published = await session.scalar(select(func.count()).select_from(AgreementVersion).where(
        AgreementVersion.agreement_id == agreement.id, AgreementVersion.published_at.is_not(None)))
    if published:
        raise _invalid_state("an agreement with a published version cannot be deleted: partners may have accepted "
                             "it; delete its requirements so that it binds nobody")
    before = audit.snapshot(agreement)
    await session.execute(delete(AgreementVersion).where(AgreementVersion.agreement_id == agreement.id))
    await session.execute(delete(AgreementRequirement).where(AgreementRequirement.agreement_id == agreement.id))
    await session.delete(agreement)
    await audit.record(session, actor, "agreement.deleted", target_type="agreements", target_id=str(agreement.id),
                       before=before)


# --- versions ---------------------------------------------------------------

async def versions(session: AsyncSession, agreement_id: uuid.UUID) -> list[AgreementVersion]:
    return list(await session.scalars(select(AgreementVersion).where(AgreementVersion.agreement_id == agreement_id)
                                      .order_by(AgreementVersion.number.desc())))


async def get_version(session: AsyncSession, agreement: Agreement, version_id: uuid.UUID) -> AgreementVersion:
    version = await session.get(AgreementVersion, version_id)
    if version is None or version.agreement_id != agreement.id:
        raise not_found("agreement version")
    return version


async def latest_published(session: AsyncSession, agreement_id: uuid.UUID) -> AgreementVersion | None:
    return await session.scalar(select(AgreementVersion).where(
        AgreementVersion.agreement_id == agreement_id, AgreementVersion.published_at.is_not(None))
        .order_by(AgreementVersion.number.desc()).limit(1))


async def create_version(session: AsyncSession, actor: Actor, agreement: Agreement, **fields: Any) -> AgreementVersion:
    draft = await session.scalar(select(AgreementVersion.number).where(
        AgreementVersion.agreement_id == agreement.id, AgreementVersion.published_at.is_(None)))
    if draft is not None:
        raise conflict("agreement", f"version {draft} is still a draft; edit or publish it first")
    last = await session.scalar(select(func.max(AgreementVersion.number))
                                .where(AgreementVersion.agreement_id == agreement.id))
    version = AgreementVersion(agreement_id=agreement.id, number=(last or 0) + 1, **fields)
    session.add(version)
    await audit.record(session, actor, "agreement_version.created", version)
    return version


def _draft_only(version: AgreementVersion, verb: str) -> None:
    if version.published_at is not None:
        raise _invalid_state(f"version {version.number} is published and cannot be {verb}; create a new version")


async def update_version(session: AsyncSession, actor: Actor, version: AgreementVersion,
                         changes: dict[str, Any]) -> AgreementVersion:
    _draft_only(version, "changed")
    before = audit.snapshot(version)
    for key, value in changes.items():
        setattr(version, key, value)
    await audit.record(session, actor, "agreement_version.updated", version, before=before)
    return version


async def delete_version(session: AsyncSession, actor: Actor, version: AgreementVersion) -> None:
    _draft_only(version, "deleted")
    before = audit.snapshot(version)
    await session.delete(version)
    await audit.record(session, actor, "agreement_version.deleted", target_type="agreement_versions",
                       target_id=str(version.id), before=before)


async def publish_version(session: AsyncSession, actor: Actor, version: AgreementVersion, *,
                          at: datetime | None = None) -> AgreementVersion:
    """Freeze a draft and make it the version partners read (and, when material, must accept).

    `at` backdates the publication (a version brought over from another system); default now.
    """
    _draft_only(version, "published again")
    if not version.body.strip():
        raise invalid("body", "is empty; write the agreement's text before publishing it")
    if at is not None and at > utcnow():
        raise invalid("published_at", "is in the future")
    before = audit.snapshot(version)
    version.published_at = at or utcnow()
    if version.effective_at is None:
        version.effective_at = version.published_at
    await audit.record(session, actor, "agreement_version.published", version, before=before)
    return version


# --- requirements -----------------------------------------------------------

def list_requirements(agreement_id: uuid.UUID) -> Select:
    return (select(AgreementRequirement).where(AgreementRequirement.agreement_id == agreement_id)
            .order_by(AgreementRequirement.created_at, AgreementRequirement.id))


async def get_requirement(session: AsyncSession, agreement: Agreement, requirement_id: uuid.UUID,
                          ) -> AgreementRequirement:
    requirement = await session.get(AgreementRequirement, requirement_id)
    if requirement is None or requirement.agreement_id != agreement.id:
        raise not_found("agreement requirement")
    return requirement


_TARGET_OF = {RequirementScope.stage: "stage_key", RequirementScope.product: "product_id",
              RequirementScope.tier: "tier_id", RequirementScope.partner_type: "partner_type"}
_TARGETS = ("stage_key", "product_id", "tier_id", "partner_type")


async def _validate_target(session: AsyncSession, scope: RequirementScope, targets: dict[str, Any]) -> None:
    wanted = _TARGET_OF.get(scope)
    for name in _TARGETS:
        if name != wanted and targets.get(name) is not None:
            raise invalid(name, f"is only for scope {name.removesuffix('_id').removesuffix('_key')}; "
                                f"leave it out for scope {scope}")
    if wanted is None:
        return
    value = targets.get(wanted)
    if value is None or value == "":
        raise invalid(wanted, f"is required for scope {scope}")
    if scope == RequirementScope.product and await session.get(Product, value) is None:
        raise invalid("product_id", "no such product")
    if scope == RequirementScope.tier and await session.get(Tier, value) is None:
        raise invalid("tier_id", "no such tier")
    if scope == RequirementScope.partner_type and value not in {t.value for t in PartnerType}:
        raise invalid("partner_type", f"not a partner type; one of {', '.join(t.value for t in PartnerType)}")
    if scope == RequirementScope.stage:
        known = await stage_keys(session)
        if value not in known:
            raise invalid("stage_key", f"not an onboarding stage; one of {', '.join(sorted(known, key=known.get))}")


async def create_requirement(session: AsyncSession, actor: Actor, agreement: Agreement, *,
                             scope: RequirementScope, **targets: Any) -> AgreementRequirement:
    await _validate_target(session, scope, targets)
    values = {name: targets.get(name) for name in _TARGETS}
    existing = await session.scalar(select(AgreementRequirement.id).where(
        AgreementRequirement.agreement_id == agreement.id, AgreementRequirement.scope == scope,
        *[(getattr(AgreementRequirement, k) == v) if v is not None else getattr(AgreementRequirement, k).is_(None)
          for k, v in values.items()]))
    if existing is not None:
        raise conflict("scope", "the agreement already has this requirement")
    requirement = AgreementRequirement(agreement_id=agreement.id, scope=scope, **values)
    session.add(requirement)
    await audit.record(session, actor, "agreement_requirement.created", requirement)
    return requirement


async def delete_requirement(session: AsyncSession, actor: Actor, requirement: AgreementRequirement) -> None:
    before = audit.snapshot(requirement)
    await session.delete(requirement)
    await audit.record(session, actor, "agreement_requirement.deleted", target_type="agreement_requirements",
                       target_id=str(requirement.id), before=before)


# --- acceptances ------------------------------------------------------------

def list_acceptances(*, agreement_id: uuid.UUID | None = None, partner_id: uuid.UUID | None = None,
                     version_id: uuid.UUID | None = None) -> Select:
    stmt = (select(AgreementAcceptance, AgreementVersion.number, Agreement.slug, Agreement.title)
            .join(AgreementVersion, AgreementVersion.id == AgreementAcceptance.version_id)
            .join(Agreement, Agreement.id == AgreementAcceptance.agreement_id)
            .order_by(AgreementAcceptance.accepted_at.desc(), AgreementAcceptance.id))
    for column, value in ((AgreementAcceptance.agreement_id, agreement_id),
                          (AgreementAcceptance.partner_id, partner_id),
                          (AgreementAcceptance.version_id, version_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt


def before_publication(version: AgreementVersion) -> str:
    return f"is before version {version.number} was published ({version.published_at:%Y-%m-%d %H:%M} UTC)"


async def record_acceptance(session: AsyncSession, actor: Actor, partner: Partner, version: AgreementVersion, *,
                            source: AcceptanceSource, accepted_at: datetime | None = None,
                            user_id: uuid.UUID | None = None, accepted_by: str = "",
                            ip_address: str | None = None, user_agent: str | None = None,
                            note: str = "") -> tuple[AgreementAcceptance, bool]:
    """Record that `partner` accepted `version`; (the record, whether it is new).

    Accepting a version the partner already accepted returns the existing record:
    the first acceptance is the evidence, and it never changes.
    """
    if version.published_at is None:
        raise invalid("version_id", "is a draft; only a published version can be accepted")
    now = utcnow()
    if accepted_at is not None and accepted_at > now:
        raise invalid("accepted_at", "is in the future")
    if accepted_at is not None and accepted_at < version.published_at:
        # Nobody signs a text before it exists: usually the version's own date is missing or wrong.
        raise invalid("accepted_at", before_publication(version))
    existing = await session.scalar(select(AgreementAcceptance).where(
        AgreementAcceptance.partner_id == partner.id, AgreementAcceptance.version_id == version.id)
        .order_by(AgreementAcceptance.accepted_at).limit(1))
    if existing is not None:
        return existing, False
    acceptance = AgreementAcceptance(
        agreement_id=version.agreement_id, version_id=version.id, partner_id=partner.id, user_id=user_id,
        accepted_by=(accepted_by or actor.label)[:320], accepted_at=accepted_at or now, recorded_at=now,
        ip_address=(ip_address or None) and ip_address[:64], user_agent=(user_agent or None) and user_agent[:500],
        source=source, note=note)
    session.add(acceptance)
    await audit.record(session, actor, "agreement.accepted", acceptance, partner_id=partner.id)
    return acceptance, True


async def accept_current(session: AsyncSession, actor: Actor, partner: Partner, agreement: Agreement, *,
                         version_id: uuid.UUID | None, ip_address: str | None,
                         user_agent: str | None) -> tuple[AgreementAcceptance, bool]:
    """A partner member accepting the latest published version (the one it read, when it says which)."""
    current = await latest_published(session, agreement.id)
    if current is None:
        raise not_found("agreement")
    if version_id is not None and version_id != current.id:
        raise conflict("version_id", f"is not the current version; version {current.number} was published, "
                                     "read it and accept that one")
    return await record_acceptance(session, actor, partner, current, source=AcceptanceSource.partner,
                                   user_id=actor.user_id, accepted_by=actor.label, ip_address=ip_address,
                                   user_agent=user_agent)


# --- who is bound, and who has signed ---------------------------------------

async def statuses(session: AsyncSession, *, partner_ids: list[uuid.UUID] | None = None,
                   agreement_ids: list[uuid.UUID] | None = None,
                   now: datetime | None = None) -> list[AgreementStatus]:
    """Every (partner, agreement) where the partner is bound, with its state; in bulk (a few queries)."""
    return await compute_statuses(session, partner_ids=partner_ids, agreement_ids=agreement_ids, now=now)


async def status_for(session: AsyncSession, partner_id: uuid.UUID, agreement_id: uuid.UUID) -> AgreementStatus | None:
    found = await statuses(session, partner_ids=[partner_id], agreement_ids=[agreement_id])
    return found[0] if found else None


async def stage_satisfied_at(session: AsyncSession, partner_id: uuid.UUID, stage_key: str) -> datetime | None:
    """When the partner had accepted every agreement required for the stage (see `stages_satisfied_at`)."""
    return (await stages_satisfied_at(session, [partner_id], stage_key)).get(partner_id)


async def stages_satisfied_at(session: AsyncSession, partner_ids: list[uuid.UUID],
                              stage_key: str) -> dict[uuid.UUID, datetime]:
    """For each partner that had accepted every agreement required for the stage, when (the latest of those
    moments); in bulk (two queries whatever the number of partners).

    For each stage-scoped agreement, the moment is its earliest acceptance of the required
    version or a later one. A partner that has not accepted one is left out; when the stage
    needs no agreement, every partner is in, at its creation time.
    """
    if not partner_ids:
        return {}
    program = await load_program(session)
    needed = {rule.agreement_id for rule in program.rules
              if rule.scope == RequirementScope.stage and rule.stage_key == stage_key}
    if not needed:
        return dict((await session.execute(
            select(Partner.id, Partner.created_at).where(Partner.id.in_(partner_ids)))).all())
    rows = (await session.execute(
        select(AgreementAcceptance.partner_id, AgreementAcceptance.agreement_id, AgreementVersion.number,
               func.min(AgreementAcceptance.accepted_at))
        .join(AgreementVersion, AgreementVersion.id == AgreementAcceptance.version_id)
        .where(AgreementAcceptance.partner_id.in_(partner_ids), AgreementAcceptance.agreement_id.in_(needed))
        .group_by(AgreementAcceptance.partner_id, AgreementAcceptance.agreement_id, AgreementVersion.number))).all()
    satisfied: dict[uuid.UUID, dict[uuid.UUID, datetime]] = {}
    for partner_id, agreement_id, number, accepted_at in rows:
        if number >= program.required[agreement_id].number:
            mine = satisfied.setdefault(partner_id, {})
            current = mine.get(agreement_id)
            mine[agreement_id] = accepted_at if current is None else min(current, accepted_at)
    return {partner_id: max(mine.values()) for partner_id, mine in satisfied.items() if set(mine) == needed}


async def request_reacceptance(session: AsyncSession, actor: Actor, partner_id: uuid.UUID,
                               agreement_id: uuid.UUID) -> AgreementStatus:
    """Ask a bound partner to accept the current version (an email to its admins; event
    `agreement.reacceptance_requested`). Refused when it already has."""
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise invalid("partner_id", "no such partner")
    agreement = await get_agreement(session, agreement_id)
    status = await status_for(session, partner_id, agreement_id)
    if status is None:
        raise invalid("partner_id", "the partner is not bound by this agreement (or it has no published version)")
    if status.state == "accepted":
        raise conflict("partner_id", f"the partner already accepted version {status.accepted_version_number}")
    version = await session.get(AgreementVersion, status.version_id)
    await audit.record(session, actor, "agreement.reacceptance_requested", version, partner_id=partner_id,
                       after=status_payload(status, agreement))
    return status


def status_payload(status: AgreementStatus, agreement: Agreement | None = None) -> dict[str, Any]:
    """The `object` of the per-partner agreement events (due soon, overdue, re-acceptance requested)."""
    return {"agreement_id": str(status.agreement_id), "slug": status.slug, "title": status.title,
            "version_id": str(status.version_id), "version_number": status.version_number,
            "accepted_version_number": status.accepted_version_number, "state": status.state,
            "due_at": status.due_at.isoformat() if status.due_at else None, "reasons": list(status.reasons)}


async def report(session: AsyncSession, agreement: Agreement, *, state: str | None = None,
                 partner_type: str | None = None, tier_id: uuid.UUID | None = None,
                 ) -> tuple[list[tuple[AgreementStatus, Any]], dict[str, int]]:
    """Every partner bound by `agreement` with its state, and the count per state; filtered."""
    found = await statuses(session, agreement_ids=[agreement.id])
    partners = {row.id: row for row in (await session.execute(
        select(Partner.id, Partner.name, Partner.slug, Partner.type, Partner.tier_id)
        .where(Partner.id.in_([s.partner_id for s in found]) if len(found) <= 2000 else True))).all()}
    rows = []
    counts = {"accepted": 0, "due": 0, "overdue": 0, "missing": 0}
    for status in found:
        partner = partners.get(status.partner_id)
        if partner is None:
            continue
        if partner_type is not None and str(partner.type) != partner_type:
            continue
        if tier_id is not None and partner.tier_id != tier_id:
            continue
        counts[status.state] += 1
        if state is None or status.state == state:
            rows.append((status, partner))
    rows.sort(key=lambda pair: (pair[0].state != "missing", pair[0].state != "overdue", pair[0].state != "due",
                                pair[1].name.lower(), str(pair[1].id)))
    return rows, counts
