"""Users opt in to announcement emails; a published announcement reaches exactly the opted-in members it is for."""
from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from accord.announcements import service
from accord.announcements.models import Announcement
from accord.audit.models import AuditEntry
from accord.notifications.models import EmailMessage
from accord.partners.models import Audience, PartnerStatus, PartnerType
from accord.teams.models import MemberRole
from tests.announcements.helpers import bearer, published
from tests.factories import Factory

SETTING = "/api/me/announcement-emails"


async def test_users_opt_in_and_out(anon: httpx.AsyncClient, factory: Factory, session) -> None:
    user = await factory.user()
    headers = bearer(await factory.session_token(user))
    assert (await anon.get(SETTING, headers=headers)).json() == {"opted_in": False}  # nobody is opted in unasked

    opted_in = await anon.put(SETTING, json={"opted_in": True}, headers=headers)
    assert opted_in.status_code == 200 and opted_in.json() == {"opted_in": True}
    assert (await anon.get(SETTING, headers=headers)).json() == {"opted_in": True}
    assert (await anon.put(SETTING, json={"opted_in": False}, headers=headers)).json() == {"opted_in": False}
    assert (await anon.get(SETTING, headers=headers)).json() == {"opted_in": False}

    audit = (await session.scalars(select(AuditEntry).where(AuditEntry.target_id == str(user.id),
                                                            AuditEntry.action == "announcement_emails.updated")
                                   .order_by(AuditEntry.seq))).all()
    assert [(e.before, e.after["opted_in"]) for e in audit][1:] == [({"user_id": str(user.id), "opted_in": True},
                                                                      False)]
    assert audit[0].before is None and audit[0].actor_label == user.email

    for bad in ({}, {"opted_in": "maybe"}, {"opted_in": True, "weekly": True}):
        refused = await anon.put(SETTING, json=bad, headers=headers)
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert (await anon.put(SETTING, json={"opted_in": True})).status_code == 401
    assert (await anon.get(SETTING)).status_code == 401


async def test_recipients_are_the_opted_in_members_of_addressed_partners(anon: httpx.AsyncClient,
                                                                         admin: httpx.AsyncClient,
                                                                         factory: Factory, session) -> None:
    gold = await factory.tier("Gold")
    golden = await factory.partner(tier_id=gold.id, type=PartnerType.agency, audience=Audience.partner)
    also_golden = await factory.partner(tier_id=gold.id, type=PartnerType.agency, audience=Audience.partner)
    plain = await factory.partner(tier_id=None, type=PartnerType.agency, audience=Audience.partner)
    closed = await factory.partner(tier_id=gold.id, status=PartnerStatus.closed)

    async def member(partner, email: str, *, opt_in: bool, user=None):
        user, token = await factory.member(partner, MemberRole.viewer, user=user or await factory.user(email))
        if opt_in:
            assert (await anon.put(SETTING, json={"opted_in": True}, headers=bearer(token))).status_code == 200
        return user

    both = await member(golden, "both@example.com", opt_in=True)
    await member(also_golden, "both@example.com", opt_in=False, user=both)  # in two addressed partners
    await member(golden, "quiet@example.com", opt_in=False)
    await member(also_golden, "eager@example.com", opt_in=True)
    await member(plain, "untiered@example.com", opt_in=True)
    await member(closed, "closed@example.com", opt_in=True)
    gone = await member(golden, "gone@example.com", opt_in=True)
    gone.is_active = False
    await session.flush()

    for_gold = await published(admin, "Gold news", tier_ids=[str(gold.id)])
    for_everyone = await published(admin, "Everyone")
    for_internal = await published(admin, "Internal", audiences=["internal"])

    async def recipients(announcement: dict) -> list[str]:
        row = await session.get(Announcement, uuid.UUID(announcement["id"]))
        return await service.email_recipients(session, row)

    # One address per person, only opted-in and active ones, never a closed partner's.
    assert await recipients(for_gold) == ["both@example.com", "eager@example.com"]
    assert await recipients(for_everyone) == ["both@example.com", "eager@example.com", "untiered@example.com"]
    assert await recipients(for_internal) == []


async def test_publishing_queues_one_email_per_opted_in_member(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                               factory: Factory, session) -> None:
    gold, silver = await factory.tier("Gold"), await factory.tier("Silver")
    golden, silvery = await factory.partner(tier_id=gold.id), await factory.partner(tier_id=silver.id)
    for partner, email, opt_in in ((golden, "gold-in@example.com", True), (golden, "gold-out@example.com", False),
                                   (silvery, "silver-in@example.com", True)):
        _, token = await factory.member(partner, user=await factory.user(email))
        assert (await anon.put(SETTING, json={"opted_in": opt_in}, headers=bearer(token))).status_code == 200

    await admin.post("/admin/api/announcements", json={"title": "Still a draft", "tier_ids": [str(gold.id)]})
    news = await published(admin, "Gold <news> & more", body="**Bold** move: see `/v2`.", tier_ids=[str(gold.id)])

    queued = (await session.scalars(select(EmailMessage).order_by(EmailMessage.to))).all()
    assert [(m.to, m.template) for m in queued] == [("gold-in@example.com", "announcement")]
    email = queued[0]
    event_id = (await admin.get("/admin/api/events", params={"type": "announcement.published"})).json()["items"][0]["id"]
    assert email.event_id == event_id
    assert email.subject == "Gold <news> & more"
    assert "**Bold** move: see `/v2`." in email.text_body  # the Markdown as written
    assert "Gold &lt;news&gt; &amp; more" in email.html_body and "<news>" not in email.html_body
    assert news["status"] == "published"
