"""Subscriptions over real HTTP (admin and partner APIs), on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from accord.auth.actor import SYSTEM_ACTOR
from accord.catalog.models import Visibility
from accord.core.clock import utcnow
from accord.partners.models import Audience, PartnerStatus
from accord.subscriptions import service
from accord.subscriptions.models import SubscriptionState
from accord.teams.models import MemberRole

UNAVAILABLE = "no such plan is available to this partner"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def field_errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


async def partner_admin(factory, **partner_kw):
    """A partner and the headers of one of its partner admins."""
    partner = await factory.partner(**partner_kw)
    _, token = await factory.member(partner, MemberRole.partner_admin)
    return partner, bearer(token)


async def test_partner_subscribes_to_published_plan_with_trial(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                               factory) -> None:
    product = await factory.product(visibility=Visibility.partner)
    plan = await factory.plan(product, trial_days=14)
    partner, headers = await partner_admin(factory)

    before = utcnow()
    created = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                              headers=headers)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["state"] == "active"
    assert sub["product_id"] == str(product.id) and sub["plan_id"] == str(plan.id)
    trial_ends = datetime.fromisoformat(sub["trial_ends_at"])
    assert before + timedelta(days=14) <= trial_ends <= utcnow() + timedelta(days=14)
    assert [(h["from_state"], h["to_state"], h["to_plan_id"]) for h in sub["history"]] == \
        [(None, "active", str(plan.id))]
    assert "actor" not in sub["history"][0]  # who did it is for staff only

    detail = (await admin.get(f"/admin/api/subscriptions/{sub['id']}")).json()
    assert detail["history"][0]["actor"].endswith("@example.com")
    audit = (await admin.get("/admin/api/audit", params={"target_id": sub["id"]})).json()
    assert [e["action"] for e in audit["items"]] == ["subscription.created"]
    assert audit["items"][0]["partner_id"] == str(partner.id)

    listed = (await anon.get(f"/api/partners/{partner.id}/subscriptions", headers=headers)).json()
    assert [s["id"] for s in listed["items"]] == [sub["id"]]


async def test_plan_without_trial_has_no_trial_end(anon: httpx.AsyncClient, factory) -> None:
    plan = await factory.plan(await factory.product())
    partner, headers = await partner_admin(factory)
    sub = (await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                           headers=headers)).json()
    assert sub["state"] == "active" and sub["trial_ends_at"] is None and sub["activated_at"] is not None


async def test_approval_required_starts_pending_and_trial_starts_on_approval(
        anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory) -> None:
    plan = await factory.plan(await factory.product(), approval_required=True, trial_days=7)
    partner, headers = await partner_admin(factory)
    sub = (await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                           headers=headers)).json()
    assert sub["state"] == "pending"
    assert sub["activated_at"] is None and sub["trial_ends_at"] is None

    approved = await admin.post(f"/admin/api/subscriptions/{sub['id']}/approve")
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["state"] == "active" and body["activated_at"] is not None
    assert datetime.fromisoformat(body["trial_ends_at"]) - datetime.fromisoformat(body["activated_at"]) == \
        timedelta(days=7)
    assert [(h["from_state"], h["to_state"]) for h in body["history"]] == [(None, "pending"), ("pending", "active")]

    again = await admin.post(f"/admin/api/subscriptions/{sub['id']}/approve")
    assert again.status_code == 409 and again.json()["type"] == "/problems/invalid-state"


async def test_staff_rejects_with_a_reason_the_partner_can_read(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                                factory) -> None:
    plan = await factory.plan(await factory.product(), approval_required=True)
    partner, headers = await partner_admin(factory)
    sub = (await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                           headers=headers)).json()
    rejected = await admin.post(f"/admin/api/subscriptions/{sub['id']}/reject", json={"reason": "not a fit"})
    assert rejected.json()["state"] == "rejected"
    seen = (await anon.get(f"/api/partners/{partner.id}/subscriptions/{sub['id']}", headers=headers)).json()
    assert seen["history"][-1] == {**seen["history"][-1], "from_state": "pending", "to_state": "rejected",
                                   "reason": "not a fit"}
    # A rejected subscription no longer blocks a new request for the product.
    retry = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                            headers=headers)
    assert retry.status_code == 201 and retry.json()["state"] == "pending"


async def test_product_visibility_must_suit_the_partner_audience(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                                 factory) -> None:
    plans = {v: await factory.plan(await factory.product(visibility=v)) for v in Visibility}
    allowed = {
        Audience.internal: {Visibility.internal, Visibility.partner, Visibility.public, Visibility.open},
        Audience.partner: {Visibility.partner, Visibility.public, Visibility.open},
        Audience.public: {Visibility.public, Visibility.open},
    }
    for audience, visible in allowed.items():
        partner, headers = await partner_admin(factory, audience=audience)
        for visibility, plan in plans.items():
            answer = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                                     headers=headers)
            if visibility in visible:
                assert answer.status_code == 201, (audience, visibility, answer.text)
            else:
                assert answer.status_code == 422, (audience, visibility, answer.text)
                # The same words as for a plan that does not exist: nothing hidden leaks.
                assert field_errors(answer) == {"plan_id": UNAVAILABLE}

    # Staff are held to the audience rule too, and are told why.
    outsider = await factory.partner(audience=Audience.public)
    staff = await admin.post("/admin/api/subscriptions", json={"partner_id": str(outsider.id),
                                                               "plan_id": str(plans[Visibility.internal].id)})
    assert staff.status_code == 422 and "public audience" in field_errors(staff)["plan_id"]


async def test_unknown_plan_is_named(anon: httpx.AsyncClient, factory) -> None:
    partner, headers = await partner_admin(factory)
    answer = await anon.post(f"/api/partners/{partner.id}/subscriptions",
                             json={"plan_id": "00000000-0000-0000-0000-000000000000"}, headers=headers)
    assert answer.status_code == 422 and field_errors(answer) == {"plan_id": UNAVAILABLE}
    extra = await anon.post(f"/api/partners/{partner.id}/subscriptions",
                            json={"plan_id": "00000000-0000-0000-0000-000000000000", "state": "active"},
                            headers=headers)
    assert extra.status_code == 422 and "state" in field_errors(extra)


async def test_hidden_plans_only_by_staff(anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory) -> None:
    hidden = await factory.plan(await factory.product(), published=False)
    partner, headers = await partner_admin(factory)
    refused = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(hidden.id)},
                              headers=headers)
    assert refused.status_code == 422 and field_errors(refused) == {"plan_id": UNAVAILABLE}

    assigned = await admin.post("/admin/api/subscriptions", json={"partner_id": str(partner.id),
                                                                  "plan_id": str(hidden.id)})
    assert assigned.status_code == 201, assigned.text
    assert assigned.json()["state"] == "active" and assigned.json()["partner_id"] == str(partner.id)


async def test_tier_rank_must_reach_the_plans_minimum(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                      factory) -> None:
    silver = await factory.tier("Silver", rank=1010)
    gold = await factory.tier("Gold", rank=1020)
    platinum = await factory.tier("Platinum", rank=1030)
    plan = await factory.plan(await factory.product(), min_tier_id=gold.id)

    for tier in (None, silver):
        partner, headers = await partner_admin(factory, tier_id=tier.id if tier else None)
        low = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                              headers=headers)
        assert low.status_code == 422 and field_errors(low) == {"plan_id": "needs the Gold tier or higher"}
        by_staff = await admin.post("/admin/api/subscriptions", json={"partner_id": str(partner.id),
                                                                      "plan_id": str(plan.id)})
        assert by_staff.status_code == 422

    for tier in (gold, platinum):
        partner, headers = await partner_admin(factory, tier_id=tier.id)
        ok = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(plan.id)},
                             headers=headers)
        assert ok.status_code == 201, ok.text


async def test_one_live_subscription_per_partner_and_product(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                             factory) -> None:
    product = await factory.product()
    basic, premium = await factory.plan(product), await factory.plan(product)
    partner, headers = await partner_admin(factory)
    first = (await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(basic.id)},
                             headers=headers)).json()
    duplicate = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(premium.id)},
                                headers=headers)
    assert duplicate.status_code == 409 and duplicate.json()["type"] == "/problems/conflict"
    assert list(field_errors(duplicate)) == ["product"]
    by_staff = await admin.post("/admin/api/subscriptions", json={"partner_id": str(partner.id),
                                                                  "plan_id": str(premium.id)})
    assert by_staff.status_code == 409 and list(field_errors(by_staff)) == ["product"]

    # Suspended still counts; cancelled does not.
    await admin.post(f"/admin/api/subscriptions/{first['id']}/suspend")
    assert (await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(premium.id)},
                            headers=headers)).status_code == 409
    cancelled = await anon.post(f"/api/partners/{partner.id}/subscriptions/{first['id']}/cancel",
                                json={"reason": "moving on"}, headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["cancelled_at"] is not None
    again = await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(premium.id)},
                            headers=headers)
    assert again.status_code == 201

    # Another partner is not blocked by this one's subscription.
    other, other_headers = await partner_admin(factory)
    assert (await anon.post(f"/api/partners/{other.id}/subscriptions", json={"plan_id": str(basic.id)},
                            headers=other_headers)).status_code == 201


async def test_closed_partner_cannot_subscribe(admin: httpx.AsyncClient, factory) -> None:
    plan = await factory.plan(await factory.product())
    partner = await factory.partner(status=PartnerStatus.closed)
    answer = await admin.post("/admin/api/subscriptions", json={"partner_id": str(partner.id),
                                                                "plan_id": str(plan.id)})
    assert answer.status_code == 409 and answer.json()["type"] == "/problems/invalid-state"
    unknown = await admin.post("/admin/api/subscriptions", json={"partner_id": "00000000-0000-0000-0000-000000000000",
                                                                 "plan_id": str(plan.id)})
    assert unknown.status_code == 422 and list(field_errors(unknown)) == ["partner_id"]


async def test_state_machine_and_history(admin: httpx.AsyncClient, factory) -> None:
    partner = await factory.partner()
    plan = await factory.plan(await factory.product())
    sub = (await admin.post("/admin/api/subscriptions", json={"partner_id": str(partner.id),
                                                              "plan_id": str(plan.id)})).json()
    base = f"/admin/api/subscriptions/{sub['id']}"

    for verb in ("approve", "reject", "resume"):
        wrong = await admin.post(f"{base}/{verb}")
        assert wrong.status_code == 409, verb
        assert wrong.json()["type"] == "/problems/invalid-state"
        assert wrong.json()["errors"] == [{"field": "state", "reason": "is active"}]

    assert (await admin.post(f"{base}/suspend", json={"reason": "unpaid invoice"})).json()["state"] == "suspended"
    assert (await admin.post(f"{base}/suspend")).status_code == 409
    assert (await admin.post(f"{base}/resume")).json()["state"] == "active"
    assert (await admin.post(f"{base}/cancel")).json()["state"] == "cancelled"
    for verb in ("approve", "reject", "suspend", "resume", "cancel"):
        assert (await admin.post(f"{base}/{verb}")).status_code == 409, verb
    assert (await admin.post(f"{base}/change-plan", json={"plan_id": str(plan.id)})).status_code == 409

    detail = (await admin.get(base)).json()
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in detail["history"]] == [
        (None, "active", ""), ("active", "suspended", "unpaid invoice"), ("suspended", "active", ""),
        ("active", "cancelled", ""),
    ]
    audit = (await admin.get("/admin/api/audit", params={"target_id": sub["id"]})).json()
    actions = [e["action"] for e in audit["items"]]
    assert actions == ["subscription.cancelled", "subscription.resumed", "subscription.suspended",
                       "subscription.created"]
    assert (await admin.get("/admin/api/subscriptions/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_change_plan_rules(anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory) -> None:
    product = await factory.product()
    basic = await factory.plan(product)
    pro = await factory.plan(product)
    enterprise = await factory.plan(product, approval_required=True)
    secret_deal = await factory.plan(product, published=False)
    elsewhere = await factory.plan(await factory.product())
    partner, headers = await partner_admin(factory)
    sub = (await anon.post(f"/api/partners/{partner.id}/subscriptions", json={"plan_id": str(basic.id)},
                           headers=headers)).json()
    path = f"/api/partners/{partner.id}/subscriptions/{sub['id']}/change-plan"

    moved = await anon.post(path, json={"plan_id": str(pro.id), "reason": "growing"}, headers=headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["plan_id"] == str(pro.id) and moved.json()["state"] == "active"
    last = moved.json()["history"][-1]
    assert (last["from_plan_id"], last["to_plan_id"], last["reason"]) == (str(basic.id), str(pro.id), "growing")

    for plan, reason in ((enterprise, "needs approval"), (secret_deal, UNAVAILABLE),
                         (elsewhere, "subscription's product"),
                         (pro, "already")):
        refused = await anon.post(path, json={"plan_id": str(plan.id)}, headers=headers)
        assert refused.status_code == 422, (plan.slug, refused.text)
        assert reason in field_errors(refused)["plan_id"]

    # Staff may move it to any plan of the product, hidden or needing approval.
    for plan in (enterprise, secret_deal):
        staff = await admin.post(f"/admin/api/subscriptions/{sub['id']}/change-plan", json={"plan_id": str(plan.id)})
        assert staff.status_code == 200 and staff.json()["plan_id"] == str(plan.id)
    assert (await admin.post(f"/admin/api/subscriptions/{sub['id']}/change-plan",
                             json={"plan_id": str(elsewhere.id)})).status_code == 422
    audit = (await admin.get("/admin/api/audit", params={"target_id": sub["id"],
                                                         "action": "subscription.plan_changed"})).json()
    assert audit["total"] == 3
    assert audit["items"][0]["before"]["plan_id"] == str(enterprise.id)
    assert audit["items"][0]["after"]["plan_id"] == str(secret_deal.id)


async def test_admin_list_filters(admin: httpx.AsyncClient, factory) -> None:
    product_a, product_b = await factory.product(), await factory.product()
    plan_a, plan_b = await factory.plan(product_a), await factory.plan(product_b, approval_required=True)
    one, two = await factory.partner(), await factory.partner()
    ids = {}
    for partner in (one, two):
        for plan in (plan_a, plan_b):
            answer = await admin.post("/admin/api/subscriptions", json={"partner_id": str(partner.id),
                                                                        "plan_id": str(plan.id)})
            ids[(partner.id, plan.id)] = answer.json()["id"]

    async def listed(**params) -> set[str]:
        return {s["id"] for s in (await admin.get("/admin/api/subscriptions", params=params)).json()["items"]}

    assert await listed(partner_id=str(one.id)) == {ids[(one.id, plan_a.id)], ids[(one.id, plan_b.id)]}
    assert await listed(product_id=str(product_a.id)) == {ids[(one.id, plan_a.id)], ids[(two.id, plan_a.id)]}
    assert await listed(plan_id=str(plan_b.id), partner_id=str(two.id)) == {ids[(two.id, plan_b.id)]}
    assert await listed(state="pending", partner_id=str(one.id)) == {ids[(one.id, plan_b.id)]}
    assert (await admin.get("/admin/api/subscriptions", params={"state": "gone"})).status_code == 422


async def test_partner_roles(anon: httpx.AsyncClient, factory) -> None:
    plan = await factory.plan(await factory.product())
    partner = await factory.partner()
    subscription = await factory.subscription(partner, plan)
    _, developer = await factory.member(partner, MemberRole.developer)
    _, viewer = await factory.member(partner, MemberRole.viewer)
    base = f"/api/partners/{partner.id}/subscriptions"
    for token in (developer, viewer):
        assert (await anon.get(base, headers=bearer(token))).json()["total"] == 1
        assert (await anon.get(f"{base}/{subscription.id}", headers=bearer(token))).status_code == 200
        for path, body in ((base, {"plan_id": str(plan.id)}), (f"{base}/{subscription.id}/cancel", None)):
            answer = await anon.post(path, json=body, headers=bearer(token))
            assert answer.status_code == 403 and answer.json()["type"] == "/problems/forbidden"
    assert (await anon.get(base)).status_code == 401


async def test_another_partners_ids_are_not_found(anon: httpx.AsyncClient, factory) -> None:
    product = await factory.product()
    plan, other_plan = await factory.plan(product), await factory.plan(product)
    mine, headers = await partner_admin(factory)
    theirs = await factory.partner()
    their_sub = await factory.subscription(theirs, plan)
    await factory.subscription(mine, plan)

    attempts = [
        ("GET", f"/api/partners/{theirs.id}/subscriptions", None),
        ("POST", f"/api/partners/{theirs.id}/subscriptions", {"plan_id": str(plan.id)}),
        ("GET", f"/api/partners/{theirs.id}/subscriptions/{their_sub.id}", None),
        ("GET", f"/api/partners/{mine.id}/subscriptions/{their_sub.id}", None),
        ("POST", f"/api/partners/{mine.id}/subscriptions/{their_sub.id}/cancel", None),
        ("POST", f"/api/partners/{theirs.id}/subscriptions/{their_sub.id}/cancel", None),
        ("POST", f"/api/partners/{mine.id}/subscriptions/{their_sub.id}/change-plan", {"plan_id": str(other_plan.id)}),
        ("POST", f"/api/partners/{theirs.id}/subscriptions/{their_sub.id}/change-plan",
         {"plan_id": str(other_plan.id)}),
    ]
    for method, path, body in attempts:
        answer = await anon.request(method, path, json=body, headers=headers)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["type"] == "/problems/not-found"

    listed = (await anon.get(f"/api/partners/{mine.id}/subscriptions", headers=headers)).json()
    assert str(their_sub.id) not in {s["id"] for s in listed["items"]} and listed["total"] == 1


async def test_subscribe_to_defaults(admin: httpx.AsyncClient, session, factory) -> None:
    """The service function sign-up uses: one default plan per product the partner may see."""
    gold = await factory.tier("Gold", rank=2020)
    open_product = await factory.product(visibility=Visibility.public)
    open_default = await factory.plan(open_product, is_default=True)
    await factory.plan(open_product)  # not a default
    approval_product = await factory.product(visibility=Visibility.partner)
    approval_default = await factory.plan(approval_product, is_default=True, approval_required=True,
                                          published=False)
    internal_product = await factory.product(visibility=Visibility.internal)
    await factory.plan(internal_product, is_default=True)  # not visible to this audience
    gold_product = await factory.product(visibility=Visibility.public)
    await factory.plan(gold_product, is_default=True, min_tier_id=gold.id)  # above the partner's tier
    already_product = await factory.product(visibility=Visibility.public)
    already_default = await factory.plan(already_product, is_default=True)
    partner = await factory.partner(audience=Audience.partner)
    existing = await factory.subscription(partner, await factory.plan(already_product))

    created = await service.subscribe_to_defaults(session, SYSTEM_ACTOR, partner)
    await session.flush()
    by_plan = {s.plan_id: s.state for s in created}
    assert by_plan == {open_default.id: SubscriptionState.active, approval_default.id: SubscriptionState.pending}

    listed = (await admin.get("/admin/api/subscriptions", params={"partner_id": str(partner.id)})).json()
    assert {s["plan_id"] for s in listed["items"]} == {str(open_default.id), str(approval_default.id),
                                                       str(existing.plan_id)}
    assert str(already_default.id) not in {s["plan_id"] for s in listed["items"]}
    # Running it again subscribes to nothing new.
    assert await service.subscribe_to_defaults(session, SYSTEM_ACTOR, partner) == []
