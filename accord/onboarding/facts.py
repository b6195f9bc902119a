"""The facts the onboarding stages come from, read in bulk for a set of partners.

Each reader answers `{partner_id: Fact}` with the time of the fact and a cause a
person can read, in a few queries whatever the number of partners (the caller
passes chunks of a few hundred ids). Only the facts a partner still needs are
read: stages are never left once reached, so a partner at `live` costs no
question about its sandbox.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.audit.models import AuditEntry
from accord.apps.models import Application, ApplicationState, Credential, Environment
from accord.events.models import Event
from accord.onboarding.models import AccessRequestState, ProductionAccessRequest, StageMark
from accord.usage.models import FirstCall, UsageCount

ADMITTED_CLASSES = ("2xx", "3xx")


@dataclass(frozen=True)
class Fact:
    at: datetime
    cause: str
    actor: str = "system"


def _earliest(found: dict[uuid.UUID, Fact], partner_id: uuid.UUID, fact: Fact) -> None:
    current = found.get(partner_id)
    if current is None or fact.at < current.at:
        found[partner_id] = fact


def _admitted(stmt):  # the request rows of calls the gateway let through
    return stmt.where(UsageCount.metric_id.is_(None), UsageCount.denial == "",
                      UsageCount.status_class.in_(ADMITTED_CLASSES))


async def terms_accepted(session: AsyncSession, partners: Iterable) -> dict[uuid.UUID, Fact]:
    """When every agreement the `terms_accepted` stage requires was accepted (accord.agreements)."""
    from accord.agreements import service as agreements

    accepted = await agreements.stages_satisfied_at(session, [p.id for p in partners], "terms_accepted")
    return {partner_id: Fact(at, "accepted every agreement the terms stage requires")
            for partner_id, at in accepted.items()}


async def sandbox_access(session: AsyncSession, partner_ids: list[uuid.UUID]) -> dict[uuid.UUID, Fact]:
    """The first key of a sandbox application that is (or was) live."""
    rows = await session.execute(
        select(Application.partner_id, Application.name, func.min(Credential.created_at))
        .join(Credential, Credential.application_id == Application.id)
        .where(Application.partner_id.in_(partner_ids), Application.environment == Environment.sandbox,
               Application.state != ApplicationState.pending)
        .group_by(Application.partner_id, Application.id, Application.name))
    found: dict[uuid.UUID, Fact] = {}
    for partner_id, name, at in rows:
        _earliest(found, partner_id, Fact(at, f"first key of sandbox application {name}"))
    return found


async def first_calls(session: AsyncSession, partner_ids: list[uuid.UUID],
                      environment: str) -> dict[uuid.UUID, Fact]:
    """The first admitted call in `environment`, as the gateway recorded it."""
    rows = await session.execute(
        select(FirstCall.partner_id, FirstCall.at, Application.name)
        .outerjoin(Application, Application.id == FirstCall.application_id)
        .where(FirstCall.partner_id.in_(partner_ids), FirstCall.environment == environment))
    found: dict[uuid.UUID, Fact] = {}
    for partner_id, at, name in rows:
        _earliest(found, partner_id, Fact(at, f"first {environment} call of application {name or '(deleted)'}"))
    return found


async def production_requested(session: AsyncSession, partner_ids: list[uuid.UUID]) -> dict[uuid.UUID, Fact]:
    rows = await session.execute(
        select(ProductionAccessRequest.partner_id, func.min(ProductionAccessRequest.created_at))
        .where(ProductionAccessRequest.partner_id.in_(partner_ids))
        .group_by(ProductionAccessRequest.partner_id))
    return {partner_id: Fact(at, "requested production access") for partner_id, at in rows}


async def production_approved(session: AsyncSession, partner_ids: list[uuid.UUID]) -> dict[uuid.UUID, Fact]:
    """An approved production access request, or a production application staff let go live.

    The second covers partners whose production access predates Accord's request queue:
    applications created live by staff, by `accord apply` or by an import, and pending
    ones staff approved directly (the time of that approval, from the audit log).
    """
    rows = await session.execute(
        select(ProductionAccessRequest.partner_id, func.min(ProductionAccessRequest.decided_at))
        .where(ProductionAccessRequest.partner_id.in_(partner_ids),
               ProductionAccessRequest.state == AccessRequestState.approved)
        .group_by(ProductionAccessRequest.partner_id))
    found = {partner_id: Fact(at, "production access approved") for partner_id, at in rows if at is not None}
    apps = (await session.execute(
        select(Application.partner_id, Application.id, Application.name, Application.created_at)
        .where(Application.partner_id.in_(partner_ids), Application.environment == Environment.production,
               Application.state != ApplicationState.pending))).all()
    approved_at = dict((await session.execute(
        select(AuditEntry.target_id, func.min(AuditEntry.at))
        .where(AuditEntry.action == "application.approved", AuditEntry.target_id.in_([str(a.id) for a in apps]))
        .group_by(AuditEntry.target_id))).all()) if apps else {}
    for partner_id, app_id, name, created_at in apps:
        _earliest(found, partner_id, Fact(approved_at.get(str(app_id), created_at),
                                          f"production application {name} is live"))
    return found


async def stages_requiring_agreements(session: AsyncSession) -> list[str]:
    """The stages an agreement requirement names (accord.agreements: scope `stage`)."""
    from accord.agreements.models import AgreementRequirement, RequirementScope

    return list(await session.scalars(select(AgreementRequirement.stage_key).distinct()
                                      .where(AgreementRequirement.scope == RequirementScope.stage,
                                             AgreementRequirement.stage_key.is_not(None))))


async def marks(session: AsyncSession, partner_ids: list[uuid.UUID]) -> dict[tuple[uuid.UUID, str], Fact]:
    rows = await session.scalars(select(StageMark).where(StageMark.partner_id.in_(partner_ids)))
    return {(m.partner_id, m.stage_key): Fact(m.at, m.note or "marked by the program team", m.marked_by)
            for m in rows}


async def last_calls(session: AsyncSession, floors: dict[uuid.UUID, datetime]) -> dict[uuid.UUID, datetime]:
    """The minute of each partner's latest admitted call, looking only from its floor on (a known call)."""
    if not floors:
        return {}
    rows = await session.execute(_admitted(
        select(UsageCount.partner_id, func.max(UsageCount.minute))
        .where(UsageCount.partner_id.in_(list(floors)), UsageCount.minute >= min(floors.values())))
        .group_by(UsageCount.partner_id))
    return {partner_id: minute for partner_id, minute in rows}


async def first_production_call_after(session: AsyncSession, partner_id: uuid.UUID,
                                      moment: datetime) -> datetime | None:
    """The minute of the first admitted production call at or after `moment` (minute resolution)."""
    floor = moment.replace(second=0, microsecond=0)
    return await session.scalar(_admitted(
        select(func.min(UsageCount.minute))
        .where(UsageCount.partner_id == partner_id, UsageCount.environment == Environment.production.value,
               UsageCount.minute >= floor)))


async def first_call_since(session: AsyncSession, partner_id: uuid.UUID, moment: datetime) -> datetime | None:
    """The minute of the first admitted call (any environment) after `moment`."""
    return await session.scalar(_admitted(
        select(func.min(UsageCount.minute)).where(UsageCount.partner_id == partner_id, UsageCount.minute > moment)))


async def closed_at(session: AsyncSession, partner_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    rows = await session.execute(
        select(Event.partner_id, func.max(Event.created_at))
        .where(Event.partner_id.in_(partner_ids), Event.type == "partner.closed").group_by(Event.partner_id))
    return dict(rows.all())

