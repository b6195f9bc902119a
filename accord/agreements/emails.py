"""The emails agreement events cause (called by `accord.notifications.planning`).

- `agreement_version.published`: every bound partner that must now accept this version
  (it is the required one and the partner has not accepted it) gets `agreement_version`
  with its own deadline; a non-material version needs no new acceptance, so it mails nobody
  who already accepted the required one.
- `agreement.reacceptance_requested`: the partner gets `agreement_version` again.
- `agreement.due_soon`: the partner gets the `agreement_deadline` reminder.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import AgreementVersion
from accord.agreements.status import compute_statuses
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.events.models import Event
from accord.notifications.rendering import public_url
from accord.partners.models import Partner


def _url(settings: Settings, partner_id: Any, agreement_id: Any) -> str:
    return f"{public_url(settings)}/api/partners/{partner_id}/agreements/{agreement_id}"


def _moment(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


async def plan_emails(session: AsyncSession, settings: Settings, event: Event) -> list[Any]:
    from accord.notifications.planning import PlannedEmail, partner_recipients

    data = (event.data or {}).get("object") or {}
    if event.type == "agreement_version.published":
        version = await session.get(AgreementVersion, uuid.UUID(event.subject_id))
        if version is None:
            return []
        found = [s for s in await compute_statuses(session, agreement_ids=[version.agreement_id])
                 if s.version_id == version.id and s.state != "accepted"]
        partners = {p.id: p for p in await _partners(session, [s.partner_id for s in found])}
        planned = []
        for status in found:
            partner = partners.get(status.partner_id)
            if partner is None:
                continue
            planned.append(PlannedEmail("agreement_version", await partner_recipients(session, partner), {
                "partner_name": partner.name, "agreement_name": status.title, "version": str(version.number),
                "summary": version.changes_summary, "accept_by": status.due_at,
                "agreement_url": _url(settings, partner.id, version.agreement_id)}))
        return planned

    partner = await session.get(Partner, event.partner_id) if event.partner_id else None
    if partner is None or not data.get("agreement_id"):
        return []
    due_at = _moment(data.get("due_at"))
    common = {"partner_name": partner.name, "agreement_name": data.get("title", ""),
              "version": str(data.get("version_number", "")),
              "agreement_url": _url(settings, partner.id, data["agreement_id"])}
    recipients = await partner_recipients(session, partner)
    if event.type == "agreement.reacceptance_requested":
        version = await session.get(AgreementVersion, uuid.UUID(data["version_id"])) if data.get("version_id") \
            else None
        accept_by = due_at if due_at is not None and due_at > utcnow() else None
        return [PlannedEmail("agreement_version", recipients,
                             {**common, "summary": version.changes_summary if version else "",
                              "accept_by": accept_by, "paused": accept_by is None and due_at is not None})]
    if event.type == "agreement.due_soon" and due_at is not None:
        days_left = max(0, round((due_at - utcnow()).total_seconds() / 86400))
        return [PlannedEmail("agreement_deadline", recipients, {**common, "deadline": due_at,
                                                                "days_left": days_left})]
    return []


async def _partners(session: AsyncSession, ids: list[uuid.UUID]) -> list[Partner]:
    from sqlalchemy import select

    out: list[Partner] = []
    for start in range(0, len(ids), 1000):
        out.extend((await session.scalars(select(Partner).where(Partner.id.in_(ids[start:start + 1000])))).all())
    return out
