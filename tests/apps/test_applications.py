"""Applications and the subscriptions they use, over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import httpx

from accord.apps.models import ApplicationState, ApplicationSubscription, Environment
from accord.subscriptions.models import SubscriptionState
from accord.teams.models import MemberRole
from accord.users.models import StaffRole


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def field_errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


async def member_of(factory, role: MemberRole = MemberRole.developer, partner=None):
    partner = partner or await factory.partner()
    _, token = await factory.member(partner, role)
    return partner, bearer(token)


async def test_sandbox_is_live_and_production_waits_for_staff(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                              factory) -> None:
    partner, headers = await member_of(factory)
    base = f"/api/partners/{partner.id}/applications"

    sandbox = await anon.post(base, json={"name": "Tester"}, headers=headers)
    assert sandbox.status_code == 201, sandbox.text
    assert sandbox.json()["environment"] == "sandbox" and sandbox.json()["state"] == "live"

    prod = await anon.post(base, json={"name": "Shop", "description": "Our shop", "environment": "production"},
                           headers=headers)
    app = prod.json()
    assert app["state"] == "pending" and app["description"] == "Our shop"
    assert len(app["app_id"]) >= 24 and app["app_id"] != sandbox.json()["app_id"]

    # Staff approve, suspend and resume; a partner cannot resume.
    assert (await admin.post(f"/admin/api/applications/{app['id']}/resume")).status_code == 409
    assert (await admin.post(f"/admin/api/applications/{app['id']}/suspend")).status_code == 409
    approved = await admin.post(f"/admin/api/applications/{app['id']}/approve")
    assert approved.status_code == 200 and approved.json()["state"] == "live"
    again = await admin.post(f"/admin/api/applications/{app['id']}/approve")
    assert again.status_code == 409 and again.json()["type"] == "/problems/invalid-state"
    assert (await admin.post(f"/admin/api/applications/{app['id']}/suspend")).json()["state"] == "suspended"
    partner_resume = await anon.post(f"{base}/{app['id']}/resume", headers=headers)
    assert partner_resume.status_code in {404, 405}
    assert (await anon.get(f"{base}/{app['id']}", headers=headers)).json()["state"] == "suspended"
    assert (await admin.post(f"/admin/api/applications/{app['id']}/resume")).json()["state"] == "live"

    audit = (await admin.get("/admin/api/audit", params={"target_id": app["id"]})).json()
    actions = [e["action"] for e in audit["items"]]
    assert actions == ["application.resumed", "application.suspended", "application.approved", "application.created"]


async def test_staff_created_production_app_is_live(admin: httpx.AsyncClient, factory) -> None:
    partner = await factory.partner()
    created = await admin.post("/admin/api/applications", json={"partner_id": str(partner.id), "name": "Ops",
                                                                "environment": "production"})
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "live" and created.json()["partner_id"] == str(partner.id)
    unknown = await admin.post("/admin/api/applications", json={"partner_id": "00000000-0000-0000-0000-000000000000",
                                                                "name": "Ops"})
    assert unknown.status_code == 422 and list(field_errors(unknown)) == ["partner_id"]


async def test_environment_is_fixed_and_updates_are_audited(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                            factory) -> None:
    partner, headers = await member_of(factory)
    app = (await anon.post(f"/api/partners/{partner.id}/applications", json={"name": "One"}, headers=headers)).json()
    path = f"/api/partners/{partner.id}/applications/{app['id']}"
    moved = await anon.patch(path, json={"environment": "production"}, headers=headers)
    assert moved.status_code == 422 and "environment" in field_errors(moved)
    renamed = await anon.patch(path, json={"name": "Two", "description": "Renamed"}, headers=headers)
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["environment"]) == ("Two", "sandbox")
    assert (await anon.patch(path, json={"name": None}, headers=headers)).status_code == 422
    bad_env = await anon.post(f"/api/partners/{partner.id}/applications", json={"name": "X", "environment": "qa"},
                              headers=headers)
    assert bad_env.status_code == 422 and "environment" in field_errors(bad_env)

    audit = (await admin.get("/admin/api/audit", params={"target_id": app["id"],
                                                         "action": "application.updated"})).json()
    assert audit["items"][0]["before"]["name"] == "One" and audit["items"][0]["after"]["name"] == "Two"


async def test_custom_fields_are_validated_and_hidden_ones_stay_with_staff(
        anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory) -> None:
    for definition in ({"target": "application", "key": "platform", "label": "Platform", "type": "choice",
                        "choices": ["ios", "android", "web"], "required": True},
                       {"target": "application", "key": "risk", "label": "Risk", "type": "number",
                        "hidden": True}):
        assert (await admin.post("/admin/api/custom-fields", json=definition)).status_code == 201
    partner, headers = await member_of(factory)
    base = f"/api/partners/{partner.id}/applications"

    missing = await anon.post(base, json={"name": "A"}, headers=headers)
    assert missing.status_code == 422 and field_errors(missing) == {"custom_fields.platform": "is required"}
    wrong = await anon.post(base, json={"name": "A", "custom_fields": {"platform": "tv"}}, headers=headers)
    assert wrong.status_code == 422 and "custom_fields.platform" in field_errors(wrong)
    hidden = await anon.post(base, json={"name": "A", "custom_fields": {"platform": "web", "risk": 1}},
                             headers=headers)
    assert hidden.status_code == 422 and field_errors(hidden) == {"custom_fields.risk": "no such custom field"}

    app = (await anon.post(base, json={"name": "A", "custom_fields": {"platform": "web"}}, headers=headers)).json()
    assert app["custom_fields"] == {"platform": "web"}
    staff = await admin.patch(f"/admin/api/applications/{app['id']}", json={"custom_fields": {"risk": 3}})
    assert staff.json()["custom_fields"] == {"platform": "web", "risk": 3}

    # The partner changes its field, never sees the hidden one, and does not lose it either.
    changed = await anon.patch(f"{base}/{app['id']}", json={"custom_fields": {"platform": "ios"}}, headers=headers)
    assert changed.json()["custom_fields"] == {"platform": "ios"}
    listed = (await anon.get(base, headers=headers)).json()
    assert listed["items"][0]["custom_fields"] == {"platform": "ios"}
    assert (await admin.get(f"/admin/api/applications/{app['id']}")).json()["custom_fields"] == \
        {"platform": "ios", "risk": 3}


async def test_attach_and_detach_subscriptions(anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory) -> None:
    partner, headers = await member_of(factory)
    product_a, product_b, product_c = await factory.product(), await factory.product(), await factory.product()
    active = await factory.subscription(partner, await factory.plan(product_a))
    pending = await factory.subscription(partner, await factory.plan(product_b), SubscriptionState.pending)
    cancelled = await factory.subscription(partner, await factory.plan(product_c), SubscriptionState.cancelled)
    suspended = await factory.subscription(partner, await factory.plan(product_c), SubscriptionState.suspended)
    theirs = await factory.subscription(await factory.partner(), await factory.plan(product_a))
    app = await factory.application(partner)
    path = f"/api/partners/{partner.id}/applications/{app.id}/subscriptions"

    for sub in (active, pending):
        attached = await anon.post(path, json={"subscription_id": str(sub.id)}, headers=headers)
        assert attached.status_code == 200, attached.text
    assert sorted(attached.json()["subscription_ids"]) == sorted([str(active.id), str(pending.id)])
    twice = await anon.post(path, json={"subscription_id": str(active.id)}, headers=headers)
    assert twice.status_code == 200 and len(twice.json()["subscription_ids"]) == 2

    for sub, reason in ((cancelled, "is cancelled"), (suspended, "is suspended"),
                        (theirs, "no such subscription of this partner")):
        refused = await anon.post(path, json={"subscription_id": str(sub.id)}, headers=headers)
        assert refused.status_code == 422, refused.text
        assert reason in field_errors(refused)["subscription_id"]

    detached = await anon.delete(f"{path}/{pending.id}", headers=headers)
    assert detached.status_code == 200 and detached.json()["subscription_ids"] == [str(active.id)]
    not_attached = await anon.delete(f"{path}/{pending.id}", headers=headers)
    assert not_attached.status_code == 422 and list(field_errors(not_attached)) == ["subscription_id"]

    # A subscription cancelled while attached can still be detached.
    await admin.post(f"/admin/api/subscriptions/{active.id}/cancel")
    assert (await admin.delete(f"/admin/api/applications/{app.id}/subscriptions/{active.id}")).json()[
        "subscription_ids"] == []
    audit = (await admin.get("/admin/api/audit", params={"target_id": str(app.id)})).json()
    assert [e["action"] for e in audit["items"]].count("application.subscription_attached") == 2
    assert [e["action"] for e in audit["items"]].count("application.subscription_detached") == 2


async def test_admin_list_filters(admin: httpx.AsyncClient, factory) -> None:
    one, two = await factory.partner(), await factory.partner()
    a = await factory.application(one, name="Mobile banking")
    b = await factory.application(one, Environment.production, name="Web shop", state=ApplicationState.pending)
    c = await factory.application(two, Environment.production, name="Mobile shop")

    async def listed(**params) -> set[str]:
        answer = await admin.get("/admin/api/applications", params=params)
        assert answer.status_code == 200, answer.text
        return {x["id"] for x in answer.json()["items"]}

    assert await listed(partner_id=str(one.id)) == {str(a.id), str(b.id)}
    assert await listed(environment="production", partner_id=str(two.id)) == {str(c.id)}
    assert await listed(state="pending", partner_id=str(one.id)) == {str(b.id)}
    assert {str(a.id), str(c.id)} <= await listed(q="MOBILE")
    assert str(b.id) not in await listed(q="mobile")
    assert await listed(q=c.app_id) == {str(c.id)}


async def test_roles(anon: httpx.AsyncClient, factory) -> None:
    partner = await factory.partner()
    _, viewer = await factory.member(partner, MemberRole.viewer)
    _, developer = await factory.member(partner, MemberRole.developer)
    _, partner_admin = await factory.member(partner, MemberRole.partner_admin)
    base = f"/api/partners/{partner.id}/applications"

    denied = await anon.post(base, json={"name": "V"}, headers=bearer(viewer))
    assert denied.status_code == 403 and denied.json()["type"] == "/problems/forbidden"
    for token in (developer, partner_admin):
        app = await anon.post(base, json={"name": "D"}, headers=bearer(token))
        assert app.status_code == 201
        cred = await anon.post(f"{base}/{app.json()['id']}/credentials", json={"name": "k"}, headers=bearer(token))
        assert cred.status_code == 201
    app_id = app.json()["id"]
    assert (await anon.get(base, headers=bearer(viewer))).json()["total"] == 2
    assert (await anon.get(f"{base}/{app_id}/credentials", headers=bearer(viewer))).json()["total"] == 1
    assert (await anon.post(f"{base}/{app_id}/credentials", json={"name": "v"},
                            headers=bearer(viewer))).status_code == 403
    assert (await anon.delete(f"{base}/{app_id}", headers=bearer(viewer))).status_code == 403
    assert (await anon.get(base)).status_code == 401

    # Staff viewers read but do not write.
    staff_viewer = bearer(await factory.admin_token(StaffRole.viewer))
    assert (await anon.get("/admin/api/applications", headers=staff_viewer)).status_code == 200
    assert (await anon.post(f"/admin/api/applications/{app_id}/suspend", headers=staff_viewer)).status_code == 403


async def test_delete_application_takes_its_credentials(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                        factory) -> None:
    partner, headers = await member_of(factory)
    app = await factory.application(partner)
    credential, _ = await factory.credential(app)
    gone = await anon.delete(f"/api/partners/{partner.id}/applications/{app.id}", headers=headers)
    assert gone.status_code == 204
    assert (await admin.get(f"/admin/api/applications/{app.id}")).status_code == 404
    assert (await admin.get(f"/admin/api/applications/{app.id}/credentials/{credential.id}")).status_code == 404
    audit = (await admin.get("/admin/api/audit", params={"target_id": str(app.id)})).json()
    assert audit["items"][0]["action"] == "application.deleted"
    assert audit["items"][0]["before"]["name"] == app.name


async def test_another_partners_ids_are_not_found(anon: httpx.AsyncClient, factory) -> None:
    mine, headers = await member_of(factory, MemberRole.partner_admin)
    theirs = await factory.partner()
    my_app = await factory.application(mine)
    my_cred, _ = await factory.credential(my_app)
    their_app = await factory.application(theirs)
    their_cred, _ = await factory.credential(their_app)
    their_sub = await factory.subscription(theirs, await factory.plan(await factory.product()))
    factory.session.add(ApplicationSubscription(application_id=their_app.id, subscription_id=their_sub.id))
    await factory.session.flush()

    mine_base = f"/api/partners/{mine.id}/applications"
    theirs_base = f"/api/partners/{theirs.id}/applications"
    attempts = [
        ("GET", theirs_base, None),
        ("POST", theirs_base, {"name": "x"}),
        ("GET", f"{theirs_base}/{their_app.id}", None),
        ("GET", f"{theirs_base}/{my_app.id}", None),
    ]
    for app_base in (f"{mine_base}/{their_app.id}", f"{theirs_base}/{their_app.id}"):
        attempts += [
            ("GET", app_base, None),
            ("PATCH", app_base, {"name": "stolen"}),
            ("DELETE", app_base, None),
            ("POST", f"{app_base}/subscriptions", {"subscription_id": str(their_sub.id)}),
            ("DELETE", f"{app_base}/subscriptions/{their_sub.id}", None),
            ("GET", f"{app_base}/credentials", None),
            ("POST", f"{app_base}/credentials", {"name": "x"}),
            ("GET", f"{app_base}/credentials/{their_cred.id}", None),
            ("POST", f"{app_base}/credentials/{their_cred.id}/rotate", None),
            ("POST", f"{app_base}/credentials/{their_cred.id}/revoke", None),
        ]
    # Their credential id under my own application.
    my_app_base = f"{mine_base}/{my_app.id}"
    attempts += [
        ("GET", f"{my_app_base}/credentials/{their_cred.id}", None),
        ("POST", f"{my_app_base}/credentials/{their_cred.id}/rotate", None),
        ("POST", f"{my_app_base}/credentials/{their_cred.id}/revoke", None),
    ]
    for method, path, body in attempts:
        answer = await anon.request(method, path, json=body, headers=headers)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
        assert answer.json()["type"] == "/problems/not-found"

    # Their subscription id cannot be attached to my application either.
    attach = await anon.post(f"{my_app_base}/subscriptions", json={"subscription_id": str(their_sub.id)},
                             headers=headers)
    assert attach.status_code == 422 and list(field_errors(attach)) == ["subscription_id"]

    # Nothing of theirs changed, and my own credential is still reachable.
    await factory.session.refresh(their_app)
    await factory.session.refresh(their_cred)
    assert their_app.name != "stolen" and their_cred.revoked_at is None and their_cred.expires_at is None
    assert (await anon.get(f"{my_app_base}/credentials/{my_cred.id}", headers=headers)).status_code == 200
