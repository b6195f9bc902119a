"""Which emails an event causes, and to whom.

`PLANNERS` maps an event type to a function that reads the event (and what it refers
to) and returns the emails to queue. Partner-facing mail goes to the partner's active
partner-admins and its contact email, each address once. Reading the database here is
deliberate: an email names things (the application, the plan) that the payload only
refers to by id.

Some emails are not planned from events but queued where their secret exists:
the invitation (`accord.teams.service`, which alone ever holds the raw token),
email verification and password reset (`accord.users.email_flows`).
"""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Application
from accord.core.config import Settings
from accord.events.models import Event
from accord.notifications.rendering import site_context
from accord.notifications.service import queue_email, valid_address
from accord.partners.models import Partner
from accord.plans.models import Plan
from accord.products.models import Product
from accord.subscriptions.models import SubscriptionChange, SubscriptionState
from accord.teams.models import MemberRole, Membership
from accord.users.models import StaffRole, User

# Emails of catalog events that are queued by the code that holds their secret, not planned here.
QUEUED_DIRECTLY = {"member.invited": ("invitation",), "announcement.published": ("announcement",)}


@dataclass(frozen=True)
class PlannedEmail:
    template: str
    recipients: list[str]
    context: dict[str, Any]


Planner = Callable[[AsyncSession, Settings, Event], Awaitable[list[PlannedEmail]]]


# --- recipients ------------------------------------------------------------

def unique_addresses(addresses: Iterable[str | None]) -> list[str]:
    """Each usable address once (case-insensitively), in the order first seen."""
    seen: dict[str, None] = {}
    for address in addresses:
        address = (address or "").strip().lower()
        if address and valid_address(address):
            seen.setdefault(address, None)
    return list(seen)


async def partner_admin_emails(session: AsyncSession, partner_id: uuid.UUID) -> list[str]:
    rows = await session.scalars(
        select(User.email).join(Membership, Membership.user_id == User.id)
        .where(Membership.partner_id == partner_id, Membership.role == MemberRole.partner_admin,
               User.is_active.is_(True))
        .order_by(User.email))
    return list(rows)


async def partner_recipients(session: AsyncSession, partner: Partner) -> list[str]:
    """Who hears about a partner: its partner-admins and its contact email."""
    return unique_addresses([*await partner_admin_emails(session, partner.id), partner.contact_email])


async def staff_recipients(session: AsyncSession, settings: Settings) -> list[str]:
    """Who hears about the provider's own things: `staff_email`, or else every active owner and admin."""
    if settings.staff_email:
        return unique_addresses([settings.staff_email])
    rows = await session.scalars(select(User.email).where(
        User.staff_role.in_([StaffRole.owner, StaffRole.admin]), User.is_active.is_(True)).order_by(User.email))
    return unique_addresses(rows)


async def _partner_of(session: AsyncSession, event: Event) -> Partner | None:
    return await session.get(Partner, event.partner_id) if event.partner_id else None


def _object(event: Event) -> dict[str, Any]:
    return (event.data or {}).get("object") or {}


async def _application(session: AsyncSession, application_id: Any) -> Application | None:
    try:
        return await session.get(Application, uuid.UUID(str(application_id)))
    except ValueError:
        return None


# --- planners --------------------------------------------------------------

async def _partner_status(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    partner = await _partner_of(session, event)
    if partner is None:
        return []
    if event.type == "partner.activated":
        previous = ((event.data or {}).get("changes") or {}).get("status", [None])[0]
        change = "approved" if previous == "pending" else "resumed"
    else:
        change = event.type.removeprefix("partner.")  # suspended | closed
    # No reason in the mail: `status_reason` is staff-only.
    return [PlannedEmail("partner_status", await partner_recipients(session, partner),
                         {"partner_name": partner.name, "change": change})]


async def _application_approved(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    application = _object(event)
    partner = await _partner_of(session, event)
    if partner is None or application.get("environment") != "production":
        return []  # a sandbox app's approval is not a production-access decision
    return [PlannedEmail("access_decision", await partner_recipients(session, partner),
                         {"partner_name": partner.name, "kind": "application", "decision": "approved",
                          "subject_name": application.get("name", ""), "reason": ""})]


async def _subscription_decision(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    subscription = _object(event)
    partner = await _partner_of(session, event)
    if partner is None:
        return []
    plan = await session.get(Plan, uuid.UUID(subscription["plan_id"]))
    product = await session.get(Product, uuid.UUID(subscription["product_id"]))
    subject = f"the {plan.name if plan else 'requested'} plan of {product.name if product else 'the product'}"
    decision = "approved" if event.type == "subscription.approved" else "rejected"
    reason = ""
    if decision == "rejected":
        # The reason is in the subscription's history, which partners can read too.
        reason = await session.scalar(
            select(SubscriptionChange.reason)
            .where(SubscriptionChange.subscription_id == uuid.UUID(event.subject_id),
                   SubscriptionChange.to_state == SubscriptionState.rejected)
            .order_by(SubscriptionChange.created_at.desc()).limit(1)) or ""
    return [PlannedEmail("access_decision", await partner_recipients(session, partner),
                         {"partner_name": partner.name, "kind": "subscription", "decision": decision,
                          "subject_name": subject, "reason": reason})]


async def _credential_email(session: AsyncSession, event: Event, template: str,
                            **defaults: Any) -> list[PlannedEmail]:
    """A notice about one credential to its partner; `defaults`: the fields of the credential the template
    adds, with the value to use when the event does not carry one."""
    credential = _object(event)
    partner = await _partner_of(session, event)
    application = await _application(session, credential.get("application_id"))
    if partner is None or application is None:
        return []
    return [PlannedEmail(template, await partner_recipients(session, partner),
                         {"partner_name": partner.name, "application_name": application.name,
                          "environment": application.environment.value,
                          "credential_name": credential.get("name", ""), "last4": credential.get("last4", ""),
                          **{key: credential.get(key, default) for key, default in defaults.items()}})]


async def _credential_expiring(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    return await _credential_email(session, event, "credential_expiring", expires_at=None)


async def _credential_revoked(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    """A credential the integration audit revoked as stale (`credential.stale_revoked`)."""
    return await _credential_email(session, event, "credential_revoked", unused_days=0)


async def _limit_threshold(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    usage = _object(event) or event.data or {}
    partner = await _partner_of(session, event)
    application = await _application(session, usage.get("application_id") or usage.get("application"))
    if partner is None:
        return []
    return [PlannedEmail("limit_threshold", await partner_recipients(session, partner),
                         {"partner_name": partner.name,
                          "application_name": application.name if application else "your application",
                          "metric": usage.get("metric", "calls"), "period": usage.get("period", "period"),
                          "percent": int(usage.get("percent", 100)), "limit": usage.get("limit")})]


async def _webhook_disabled(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    endpoint = _object(event)
    partner = await _partner_of(session, event)
    if partner is not None:
        # A partner's endpoint is the partner-admins' business (they manage webhooks), not the contact's.
        recipients, owner_name = unique_addresses(await partner_admin_emails(session, partner.id)), \
            f"{partner.name} team"
    else:
        recipients, owner_name = await staff_recipients(session, settings), f"{settings.program_name} team"
    return [PlannedEmail("webhook_disabled", recipients,
                         {"owner_name": owner_name, "url": endpoint.get("url", ""),
                          "reason": endpoint.get("disabled_reason", ""), "disabled_at": endpoint.get("disabled_at"),
                          "endpoint_id": endpoint.get("id", event.subject_id)})]


async def _onboarding(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    """Nudges and production access decisions (accord.onboarding.notices; imported late, it imports this)."""
    from accord.onboarding.notices import plan

    return await plan(session, settings, event)


async def _agreement(session: AsyncSession, settings: Settings, event: Event) -> list[PlannedEmail]:
    """Agreement versions, deadlines and re-acceptance requests: planned by the agreements package."""
    from accord.agreements.emails import plan_emails

    return await plan_emails(session, settings, event)


PLANNERS: dict[str, Planner] = {
    "agreement_version.published": _agreement,
    "agreement.reacceptance_requested": _agreement,
    "agreement.due_soon": _agreement,
    "partner.suspended": _partner_status,
    "partner.activated": _partner_status,
    "partner.closed": _partner_status,
    "application.approved": _application_approved,
    "subscription.approved": _subscription_decision,
    "subscription.rejected": _subscription_decision,
    "credential.expiring_soon": _credential_expiring,
    "credential.stale_revoked": _credential_revoked,
    "usage.limit_threshold": _limit_threshold,
    "webhook_endpoint.disabled": _webhook_disabled,
    "partner.stuck": _onboarding,
    "partner.inactive": _onboarding,
    "production_access.decided": _onboarding,
}


async def queue_emails_for(session: AsyncSession, settings: Settings, event: Event) -> int:
    """Queue every email `event` causes, in the caller's transaction; how many were queued."""
    planner = PLANNERS.get(event.type)
    if planner is None:
        return 0
    queued = 0
    for planned in await planner(session, settings, event):
        for address in planned.recipients:
            await queue_email(session, to=address, template=planned.template,
                              context={**site_context(settings), **planned.context}, event_id=event.id)
            queued += 1
    return queued
