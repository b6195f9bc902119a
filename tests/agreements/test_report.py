"""Who signed what: staff-recorded acceptances, the report, the cross-agreement status list, re-acceptance."""
from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select

from accord.agreements.models import RequirementScope
from accord.core.clock import utcnow
from accord.events.models import Event
from accord.notifications.models import EmailMessage
from accord.notifications.planning import queue_emails_for
from tests.agreements.helpers import accepted, agreement, field_errors

BASE = "/admin/api/agreements"


async def test_staff_record_an_acceptance_on_a_partners_behalf(admin: httpx.AsyncClient, factory, session) -> None:
    partner = await factory.partner()
    terms, (v1, v2) = await agreement(session, published=[{}, {}], scope=RequirementScope.all)
    signed = utcnow() - timedelta(days=2)
    response = await admin.post(f"{BASE}/{terms.id}/acceptances",
                                json={"partner_id": str(partner.id), "accepted_at": signed.isoformat(),
                                      "note": "Signed PDF, contract #42"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["version_number"], body["source"], body["note"], body["user_id"]) == \
        (2, "staff", "Signed PDF, contract #42", None)
    assert body["accepted_at"].startswith(signed.isoformat()[:19])
    again = await admin.post(f"{BASE}/{terms.id}/acceptances", json={"partner_id": str(partner.id)})
    assert again.status_code == 200 and again.json()["id"] == body["id"]

    older = await admin.post(f"{BASE}/{terms.id}/acceptances",
                             json={"partner_id": str(partner.id), "version_id": str(v1.id)})
    assert older.status_code == 201 and older.json()["version_number"] == 1
    cases = [({"partner_id": str(terms.id)}, "partner_id"),
             ({"partner_id": str(partner.id), "version_id": str(partner.id)}, "version_id"),
             ({"partner_id": str(partner.id), "accepted_at": (utcnow() + timedelta(days=1)).isoformat()},
              "accepted_at")]
    for body_, field in cases:
        refused = await admin.post(f"{BASE}/{terms.id}/acceptances", json=body_)
        assert refused.status_code == 422 and field in field_errors(refused), refused.text
    listed = await admin.get(f"{BASE}/{terms.id}/acceptances", params={"partner_id": str(partner.id)})
    assert [a["version_number"] for a in listed.json()["items"]] == [1, 2]  # newest acceptance first


async def test_report_of_who_signed_and_who_did_not(admin: httpx.AsyncClient, factory, session) -> None:
    gold = await factory.tier("Gold")
    signed = await factory.partner(name="Beta", type="reseller", tier_id=gold.id)
    old = await factory.partner(name="Alpha", type="reseller")
    never = await factory.partner(name="Gamma", type="agency")
    now = utcnow()
    terms, (v1, v2) = await agreement(session, published=[{}, {"published_at": now - timedelta(days=1)}],
                                      scope=RequirementScope.all)
    await accepted(session, signed, v2, at=now - timedelta(hours=1))
    await accepted(session, old, v1)

    report = await admin.get(f"{BASE}/{terms.id}/report")
    assert report.status_code == 200, report.text
    body = report.json()
    rows = [(r["partner_name"], r["state"], r["accepted_version_number"]) for r in body["items"]
            if r["partner_id"] in {str(signed.id), str(old.id), str(never.id)}]
    # Never accepted, but version 2 came out yesterday: Gamma is within the grace period too.
    assert rows == [("Alpha", "due", 1), ("Gamma", "due", None), ("Beta", "accepted", 2)]
    assert body["counts"]["accepted"] >= 1 and body["counts"]["due"] >= 2
    beta = next(r for r in body["items"] if r["partner_id"] == str(signed.id))
    assert beta["accepted_at"] is not None and beta["due_at"] is None and beta["tier_id"] == str(gold.id)

    resellers = (await admin.get(f"{BASE}/{terms.id}/report", params={"partner_type": "reseller"})).json()
    assert {r["partner_name"] for r in resellers["items"]} == {"Alpha", "Beta"}
    assert resellers["counts"] == {"accepted": 1, "due": 1, "overdue": 0, "missing": 0}
    due = (await admin.get(f"{BASE}/{terms.id}/report", params={"state": "due", "partner_type": "reseller"})).json()
    assert [r["partner_name"] for r in due["items"]] == ["Alpha"] and due["total"] == 1
    by_tier = (await admin.get(f"{BASE}/{terms.id}/report", params={"tier_id": str(gold.id)})).json()
    assert [r["partner_name"] for r in by_tier["items"]] == ["Beta"]
    assert (await admin.get(f"{BASE}/{terms.id}/report", params={"state": "lost"})).status_code == 422
    paged = (await admin.get(f"{BASE}/{terms.id}/report", params={"partner_type": "reseller", "limit": 1})).json()
    assert len(paged["items"]) == 1 and paged["total"] == 2

    statuses = (await admin.get("/admin/api/agreement-statuses", params={"partner_id": str(never.id)})).json()
    assert [(s["slug"], s["state"]) for s in statuses["items"]] == [("terms", "due")]


async def test_reacceptance_request_emails_the_partner(admin: httpx.AsyncClient, factory, session,
                                                       settings) -> None:
    partner = await factory.partner(contact_email="legal@acme.example")
    signed = await factory.partner()
    terms, (v1,) = await agreement(session, published=[{"published_at": utcnow() - timedelta(days=1)}],
                                   scope=RequirementScope.all)
    await accepted(session, signed, v1)
    url = f"{BASE}/{terms.id}/reacceptance"

    response = await admin.post(url, json={"partner_id": str(partner.id)})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "due"
    already = await admin.post(url, json={"partner_id": str(signed.id)})
    assert already.status_code == 409 and "partner_id" in field_errors(already)
    unknown = await admin.post(url, json={"partner_id": str(terms.id)})
    assert unknown.status_code == 422 and "partner_id" in field_errors(unknown)

    event = await session.scalar(select(Event).where(Event.type == "agreement.reacceptance_requested"))
    assert event.partner_id == partner.id and event.data["object"]["version_number"] == 1
    assert await queue_emails_for(session, settings, event) == 1
    mail = await session.scalar(select(EmailMessage).where(EmailMessage.event_id == event.id))
    assert mail.to == "legal@acme.example" and mail.template == "agreement_version"
    assert "API Terms" in mail.subject and f"/api/partners/{partner.id}/agreements/{terms.id}" in mail.text_body


async def test_publishing_a_material_version_emails_bound_partners(admin: httpx.AsyncClient, factory, session,
                                                                   settings) -> None:
    product = await factory.product()
    plan = await factory.plan(product)
    bound = await factory.partner(contact_email="bound@acme.example")
    await factory.subscription(bound, plan)
    await factory.partner(contact_email="unbound@acme.example")
    terms, _ = await agreement(session, scope=RequirementScope.product, product_id=product.id)
    draft = (await admin.post(f"{BASE}/{terms.id}/versions",
                              json={"body": "Text", "changes_summary": "First terms", "grace_days": 7})).json()
    assert (await admin.post(f"{BASE}/{terms.id}/versions/{draft['id']}/publish")).status_code == 200
    event = await session.scalar(select(Event).where(Event.type == "agreement_version.published"))
    assert await queue_emails_for(session, settings, event) == 1
    mail = await session.scalar(select(EmailMessage).where(EmailMessage.event_id == event.id))
    assert mail.to == "bound@acme.example" and "First terms" in mail.text_body

    # A non-material version asks nobody who accepted the required one to accept again.
    await accepted(session, bound, await _version(session, draft["id"]))
    minor = (await admin.post(f"{BASE}/{terms.id}/versions", json={"body": "Typo fixed", "material": False})).json()
    await admin.post(f"{BASE}/{terms.id}/versions/{minor['id']}/publish")
    minor_event = await session.scalar(select(Event).where(Event.type == "agreement_version.published",
                                                           Event.subject_id == minor["id"]))
    assert await queue_emails_for(session, settings, minor_event) == 0


async def _version(session, version_id: str):
    import uuid

    from accord.agreements.models import AgreementVersion

    return await session.get(AgreementVersion, uuid.UUID(version_id))


async def test_a_reacceptance_email_past_the_deadline_says_production_is_paused(admin: httpx.AsyncClient, factory,
                                                                              session, settings) -> None:
    partner = await factory.partner(contact_email="late@acme.example")
    terms, _ = await agreement(session, published=[{"published_at": utcnow() - timedelta(days=40), "grace_days": 0}],
                               scope=RequirementScope.all, required_since=utcnow() - timedelta(days=40))
    response = await admin.post(f"{BASE}/{terms.id}/reacceptance", json={"partner_id": str(partner.id)})
    assert response.status_code == 200 and response.json()["state"] == "missing", response.text
    event = await session.scalar(select(Event).where(Event.type == "agreement.reacceptance_requested"))
    assert await queue_emails_for(session, settings, event) == 1
    mail = await session.scalar(select(EmailMessage).where(EmailMessage.event_id == event.id))
    assert "production calls that need it are paused until you accept it" in mail.text_body
    assert "production calls that need it are paused</strong>" in mail.html_body
