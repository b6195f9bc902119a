"""Which emails each event type causes, and to whom (planned in the test's transaction)."""
from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import ApplicationState, Environment
from accord.audit.service import snapshot
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.events import service as events
from accord.events.models import Event
from accord.notifications.models import EmailMessage
from accord.notifications.planning import queue_emails_for
from accord.partners.models import PartnerStatus
from accord.subscriptions.models import SubscriptionState
from accord.teams.models import MemberRole
from accord.users.models import StaffRole


async def _plan_latest(session: AsyncSession, settings: Settings, event_type: str) -> list[EmailMessage]:
    event = await session.scalar(select(Event).where(Event.type == event_type).order_by(Event.seq.desc()))
    assert event is not None, f"no {event_type} event"
    return await _plan(session, settings, event)


async def _plan(session: AsyncSession, settings: Settings, event: Event) -> list[EmailMessage]:
    await queue_emails_for(session, settings, event)
    await session.flush()
    return list((await session.scalars(select(EmailMessage).where(EmailMessage.event_id == event.id)
                                       .order_by(EmailMessage.to))).all())


async def _team(factory, **partner_fields):
    """A partner with a partner-admin (admin@…), a developer (dev@…) and the given contact."""
    partner = await factory.partner(**partner_fields)
    n = uuid.uuid4().hex[:6]
    await factory.member(partner, MemberRole.partner_admin, user=await factory.user(f"admin-{n}@example.com"))
    await factory.member(partner, MemberRole.developer, user=await factory.user(f"dev-{n}@example.com"))
    return partner, f"admin-{n}@example.com"


async def test_approving_a_production_application_tells_the_partner(admin: httpx.AsyncClient, factory, session,
                                                                    settings: Settings) -> None:
    partner, admin_email = await _team(factory, name="Initech", contact_email="contact@initech.example")
    app = await factory.application(partner, Environment.production, name="Billing Sync",
                                    state=ApplicationState.pending)
    assert (await admin.post(f"/admin/api/applications/{app.id}/approve")).status_code == 200

    mails = await _plan_latest(session, settings, "application.approved")
    assert sorted(m.to for m in mails) == sorted([admin_email, "contact@initech.example"])
    assert {m.template for m in mails} == {"access_decision"}
    assert mails[0].subject == "Production access approved for Billing Sync"


async def test_a_rejected_subscription_says_why(admin: httpx.AsyncClient, factory, session,
                                                settings: Settings) -> None:
    partner, admin_email = await _team(factory)
    plan = await factory.plan(await factory.product(await factory.api(), name="Social"), name="Gold")
    subscription = await factory.subscription(partner, plan, SubscriptionState.pending)
    rejected = await admin.post(f"/admin/api/subscriptions/{subscription.id}/reject",
                                json={"reason": "sign the data agreement first"})
    assert rejected.status_code == 200, rejected.text

    [mail] = await _plan_latest(session, settings, "subscription.rejected")
    assert mail.to == admin_email
    assert mail.subject == "Your access to the Gold plan of Social was rejected"
    assert "sign the data agreement first" in mail.text_body


async def test_activation_reads_as_approval_or_as_resumption(admin: httpx.AsyncClient, factory, session,
                                                             settings: Settings) -> None:
    partner, _ = await _team(factory, name="Hooli", status=PartnerStatus.pending)
    assert (await admin.post(f"/admin/api/partners/{partner.id}/activate")).status_code == 200
    [approved] = await _plan_latest(session, settings, "partner.activated")
    assert (await admin.post(f"/admin/api/partners/{partner.id}/suspend", json={"reason": "x"})).status_code == 200
    assert (await admin.post(f"/admin/api/partners/{partner.id}/activate")).status_code == 200
    [resumed] = await _plan_latest(session, settings, "partner.activated")
    assert approved.subject == "Hooli was approved on Accord" and "welcome" in approved.text_body
    assert resumed.subject == "Hooli was resumed on Accord"


async def test_an_expiring_credential_names_its_application_and_last_four(factory, session,
                                                                          settings: Settings) -> None:
    partner, admin_email = await _team(factory)
    app = await factory.application(partner, Environment.production, name="Shop Backend")
    credential, secret = await factory.credential(app, name="primary", expires_at=utcnow() + timedelta(days=5))
    event = await events.emit(session, "credential.expiring_soon", data={"object": snapshot(credential)},
                              partner_id=partner.id, subject_type="credentials", subject_id=str(credential.id))
    [mail] = await _plan(session, settings, event)
    assert mail.to == admin_email and mail.template == "credential_expiring"
    assert "Shop Backend" in mail.subject and credential.last4 in mail.text_body
    assert secret not in mail.text_body


async def test_a_limit_threshold_from_the_gateway_is_mailed(factory, session, settings: Settings) -> None:
    partner, admin_email = await _team(factory)
    app = await factory.application(partner, name="Reports")
    # The payload the gateway's usage recorder writes.
    data = {"object": {"application_id": str(app.id), "api_id": str(uuid.uuid4()), "metric": "hits",
                       "period": "day", "limit": 500, "percent": 90}}
    event = await events.emit(session, "usage.limit_threshold", data=data, partner_id=partner.id,
                              subject_type="applications", subject_id=str(app.id))
    [mail] = await _plan(session, settings, event)
    assert mail.to == admin_email
    assert mail.subject == "Reports has used 90% of its hits limit for this day"


async def test_a_disabled_webhook_endpoint_is_reported_to_its_owner(factory, session, settings: Settings) -> None:
    partner, admin_email = await _team(factory, contact_email="contact@example.com")
    endpoint = {"id": str(uuid.uuid4()), "url": "https://hooks.example/in", "enabled": False,
                "disabled_reason": "every delivery failed for 3 days", "disabled_at": utcnow().isoformat()}
    partner_event = await events.emit(session, "webhook_endpoint.disabled",
                                      data={"object": {**endpoint, "partner_id": str(partner.id)}},
                                      partner_id=partner.id, subject_type="webhook_endpoints",
                                      subject_id=endpoint["id"])
    [mail] = await _plan(session, settings, partner_event)
    assert mail.to == admin_email  # the partner-admins manage webhooks; the contact is not told
    assert "https://hooks.example/in" in mail.subject and "every delivery failed" in mail.text_body

    owner = await factory.user("owner@program.example", staff_role=StaffRole.owner)
    await factory.user("viewer@program.example", staff_role=StaffRole.viewer)
    provider_event = await events.emit(session, "webhook_endpoint.disabled",
                                       data={"object": {**endpoint, "partner_id": None}},
                                       subject_type="webhook_endpoints", subject_id=endpoint["id"])
    staff = [m.to for m in await _plan(session, settings, provider_event)]
    assert owner.email in staff and "viewer@program.example" not in staff
    with_address = settings.model_copy(update={"staff_email": "Ops@Program.example"})
    another = await events.emit(session, "webhook_endpoint.disabled", data={"object": {**endpoint, "partner_id": None}},
                                subject_type="webhook_endpoints", subject_id=endpoint["id"])
    assert [m.to for m in await _plan(session, with_address, another)] == ["ops@program.example"]


async def test_events_without_emails_and_partners_without_recipients_queue_nothing(
        admin: httpx.AsyncClient, factory, session, settings: Settings) -> None:
    created = await admin.post("/admin/api/partners", json={"name": "Quiet", "slug": "quiet", "type": "technology"})
    assert created.status_code == 201
    assert await _plan_latest(session, settings, "partner.created") == []
    lonely = await factory.partner()  # no members, no contact email
    assert (await admin.post(f"/admin/api/partners/{lonely.id}/suspend", json={"reason": "x"})).status_code == 200
    assert await _plan_latest(session, settings, "partner.suspended") == []
