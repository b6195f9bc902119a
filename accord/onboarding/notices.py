"""The emails of onboarding events (planned by accord.notifications.planning, which calls `plan`)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.events.models import Event
from accord.onboarding import stages as path
from accord.onboarding.steps import next_stage, stage_phrases


async def plan(session: AsyncSession, settings: Settings, event: Event) -> list[Any]:
    from accord.notifications.planning import PlannedEmail, partner_admin_emails, partner_recipients, unique_addresses
    from accord.partners.models import Partner
    from accord.products.models import Product

    partner = await session.get(Partner, event.partner_id) if event.partner_id else None
    if partner is None:
        return []
    obj = (event.data or {}).get("object") or {}
    if event.type == "production_access.decided":
        product = await session.get(Product, uuid.UUID(obj["product_id"])) if obj.get("product_id") else None
        subject = product.name if product else ""  # a request for production access in general
        return [PlannedEmail("access_decision", await partner_recipients(session, partner),
                             {"partner_name": partner.name, "kind": "production_access", "decision": obj.get("state"),
                              "subject_name": subject, "reason": obj.get("decision_reason") or ""})]
    # Nudges go to the people who can act: the partner's admins.
    admins = unique_addresses(await partner_admin_emails(session, partner.id)) or \
        await partner_recipients(session, partner)
    if event.type == "partner.inactive":
        last = obj.get("last_call_at")
        last_call_at = datetime.fromisoformat(last) if last else partner.created_at
        return [PlannedEmail("nudge_inactive", admins, {"partner_name": partner.name, "last_call_at": last_call_at,
                                                        "days": max(0, (utcnow() - last_call_at).days)})]
    if event.type == "partner.stuck":
        ordered = await path.stages(session)
        from accord.onboarding.models import PartnerOnboarding

        row = await session.get(PartnerOnboarding, partner.id)
        upcoming = next_stage(ordered, row) if row is not None else None
        if upcoming is None:
            return []
        missing, sentence = stage_phrases(upcoming)
        return [PlannedEmail("nudge_stuck", admins, {"partner_name": partner.name, "missing_step": missing,
                                                     "next_step": sentence,
                                                     "days": max(0, (utcnow() - partner.created_at).days)})]
    return []
