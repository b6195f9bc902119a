"""Production access requests: the partner's request, the staff queue with age and SLA, and each decision."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import uuid

import httpx
from sqlalchemy import select

from accord.apps.models import ApplicationState, ApplicationSubscription, Environment
from accord.core.clock import clock, utcnow
from accord.subscriptions.models import Subscription, SubscriptionState
from tests.onboarding.helpers import error_fields, events_of, planned_emails, team

T0 = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)


async def _catalog(factory):
    api = await factory.api()
    product = await factory.product(api)
    return product, await factory.plan(product, slug="basic"), await factory.plan(product, slug="pro",
                                                                                   approval_required=True)


async def _request(anon: httpx.AsyncClient, partner, headers, **body) -> httpx.Response:
    body.setdefault("use_case", "Sync orders")
    return await anon.post(f"/api/partners/{partner.id}/production-access-requests", headers=headers, json=body)


async def test_approving_subscribes_to_the_chosen_plan_and_approves_the_application(
        anon, admin, factory, session, settings) -> None:
    product, _, pro = await _catalog(factory)
    partner, headers, email = await team(factory)
    app = await factory.application(partner, Environment.production, state=ApplicationState.pending)
    created = await _request(anon, partner, headers, application_id=str(app.id), product_id=str(product.id),
                             expected_volume="1M/month", custom_fields={"region": "EU", "pilot": True, "seats": 3})
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "pending"
    assert "decided_by" not in created.json()

    answer = await admin.post(f"/admin/api/production-access-requests/{created.json()['id']}/approve",
                              json={"plan_id": str(pro.id), "reason": "welcome"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "approved" and body["plan_id"] == str(pro.id) and body["decided_by"]
    subscription = await session.get(Subscription, uuid.UUID(body["subscription_id"]))
    await session.refresh(subscription)
    assert subscription.state == SubscriptionState.active and subscription.plan_id == pro.id
    await session.refresh(app)
    assert app.state == ApplicationState.live
    assert await session.get(ApplicationSubscription, (app.id, subscription.id)) is not None

    onboarding = (await anon.get(f"/api/partners/{partner.id}/onboarding", headers=headers)).json()
    assert onboarding["stage_key"] == "production_approved"

    [decided] = await events_of(session, partner.id, "production_access.decided")
    assert decided.data["object"]["state"] == "approved" and "decided_by" not in decided.data["object"]
    mails = await planned_emails(session, settings, decided)
    assert email in [m.to for m in mails]
    assert {m.template for m in mails} == {"access_decision"}
    assert mails[0].subject == "Your production access request was approved"


async def test_approval_reuses_the_partners_subscription_and_moves_it_to_the_plan(anon, admin, factory,
                                                                                  session) -> None:
    product, basic, pro = await _catalog(factory)
    partner, headers, _ = await team(factory)
    existing = await factory.subscription(partner, basic)
    created = await _request(anon, partner, headers)
    answer = await admin.post(f"/admin/api/production-access-requests/{created.json()['id']}/approve",
                              json={"plan_id": str(pro.id)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["subscription_id"] == str(existing.id)
    await session.refresh(existing)
    assert existing.plan_id == pro.id and existing.state == SubscriptionState.active
    count = len((await session.scalars(select(Subscription).where(Subscription.partner_id == partner.id))).all())
    assert count == 1


async def test_rejecting_and_asking_for_changes_say_why(anon, admin, factory, session, settings) -> None:
    partner, headers, _ = await team(factory)
    first = (await _request(anon, partner, headers)).json()
    no_reason = await admin.post(f"/admin/api/production-access-requests/{first['id']}/reject", json={"reason": " "})
    assert no_reason.status_code == 422 and "reason" in error_fields(no_reason)
    changes = await admin.post(f"/admin/api/production-access-requests/{first['id']}/request-changes",
                               json={"reason": "Tell us the expected volume"})
    assert changes.status_code == 200 and changes.json()["state"] == "changes_requested"
    [event] = await events_of(session, partner.id, "production_access.decided")
    [mail] = await planned_emails(session, settings, event)
    assert mail.subject == "Changes requested to your production access request"
    assert "Tell us the expected volume" in mail.text_body

    # The partner sees what to do, answers, and the request is back in the queue with a new SLA.
    steps = (await anon.get(f"/api/partners/{partner.id}/onboarding", headers=headers)).json()["next_steps"]
    assert "Tell us the expected volume" in steps[0]["detail"]
    answered_at = utcnow().replace(microsecond=0) + timedelta(minutes=5)
    clock.freeze(answered_at)
    try:
        updated = await anon.patch(f"/api/partners/{partner.id}/production-access-requests/{first['id']}",
                                   headers=headers, json={"expected_volume": "5k a day"})
    finally:
        clock.resume()
    assert updated.status_code == 200, updated.text
    assert updated.json()["state"] == "pending" and updated.json()["expected_volume"] == "5k a day"
    assert datetime.fromisoformat(updated.json()["submitted_at"]) == answered_at

    rejected = await admin.post(f"/admin/api/production-access-requests/{first['id']}/reject",
                                json={"reason": "Not a fit for now"})
    assert rejected.status_code == 200 and rejected.json()["decision_reason"] == "Not a fit for now"
    again = await admin.post(f"/admin/api/production-access-requests/{first['id']}/approve",
                             json={"plan_id": str(uuid.uuid4())})
    assert again.status_code == 409 and again.json()["type"] == "/problems/invalid-state"
    edit = await anon.patch(f"/api/partners/{partner.id}/production-access-requests/{first['id']}",
                            headers=headers, json={"use_case": "x"})
    assert edit.status_code == 409
    decided = await events_of(session, partner.id, "production_access.decided")
    assert [e.data["object"]["state"] for e in decided] == ["changes_requested", "rejected"]
    [mail] = await planned_emails(session, settings, decided[-1])  # a request for no product in particular
    assert "Your request for production access was not approved." in mail.text_body
    assert "Not a fit for now" in mail.text_body and "(production)" not in mail.text_body


async def test_partner_withdraws_and_may_ask_again(anon, factory) -> None:
    partner, headers, _ = await team(factory)
    first = (await _request(anon, partner, headers)).json()
    duplicate = await _request(anon, partner, headers)
    assert duplicate.status_code == 409 and "product_id" in error_fields(duplicate)
    withdrawn = await anon.post(f"/api/partners/{partner.id}/production-access-requests/{first['id']}/withdraw",
                                headers=headers)
    assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "withdrawn"
    assert (await _request(anon, partner, headers)).status_code == 201
    listed = (await anon.get(f"/api/partners/{partner.id}/production-access-requests", headers=headers)).json()
    assert listed["total"] == 2


async def test_invalid_requests_name_the_field(anon, admin, factory) -> None:
    partner, headers, _ = await team(factory)
    other, _, _ = await team(factory)
    sandbox = await factory.application(partner, Environment.sandbox)
    theirs = await factory.application(other, Environment.production)
    hidden_api = await factory.api()
    internal = await factory.product(hidden_api, visibility="internal")
    cases = [
        ({"use_case": ""}, "use_case"),
        ({"custom_fields": {"nested": {"a": 1}}}, "custom_fields.nested"),
        ({"custom_fields": {"list": [1, 2]}}, "custom_fields.list"),
        ({"application_id": str(sandbox.id)}, "application_id"),
        ({"application_id": str(theirs.id)}, "application_id"),
        ({"product_id": str(internal.id)}, "product_id"),
        ({"unknown": 1}, "unknown"),
    ]
    for body, field in cases:
        answer = await _request(anon, partner, headers, **body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in error_fields(answer), (body, answer.text)
    request = (await _request(anon, partner, headers)).json()
    _, basic, _ = await _catalog(factory)
    wrong_product = await factory.product(await factory.api())
    created = (await _request(anon, partner, headers, product_id=str(wrong_product.id))).json()
    answer = await admin.post(f"/admin/api/production-access-requests/{created['id']}/approve",
                              json={"plan_id": str(basic.id)})
    assert answer.status_code == 422 and "plan_id" in error_fields(answer)
    assert request["state"] == "pending"


async def test_the_queue_shows_age_and_sla_and_filters_overdue(anon, admin, factory, settings) -> None:
    sla = timedelta(hours=settings.access_request_sla_hours)
    clock.freeze(T0)  # sessions last a day: each partner signs in when it asks
    try:
        late_partner, late_headers, _ = await team(factory)
        late = (await _request(anon, late_partner, late_headers)).json()
        clock.freeze(T0 + sla - timedelta(hours=1))
        partner, headers, _ = await team(factory)
        fresh = (await _request(anon, partner, headers)).json()
        clock.freeze(T0 + sla + timedelta(hours=2))
        queue = (await admin.get("/admin/api/production-access-requests",
                                 params={"state": "pending", "partner_id": str(late_partner.id)})).json()
        [row] = queue["items"]
        assert row["id"] == late["id"] and row["partner_name"] == late_partner.name
        assert row["age_hours"] == settings.access_request_sla_hours + 2
        assert datetime.fromisoformat(row["sla_due_at"]) == T0 + sla
        assert row["overdue"] is True
        overdue = (await admin.get("/admin/api/production-access-requests", params={"overdue": "true"})).json()
        ids = {r["id"] for r in overdue["items"]}
        assert late["id"] in ids and fresh["id"] not in ids
        old = (await admin.get("/admin/api/production-access-requests", params={"min_age_hours": 10})).json()
        assert late["id"] in {r["id"] for r in old["items"]} and fresh["id"] not in {r["id"] for r in old["items"]}
        # Once decided, the age stops at the decision and it is no longer overdue.
        decided = (await admin.post(f"/admin/api/production-access-requests/{late['id']}/reject",
                                    json={"reason": "no"})).json()
        assert decided["overdue"] is False and decided["age_hours"] == settings.access_request_sla_hours + 2
    finally:
        clock.resume()
