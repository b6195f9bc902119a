"""The admin API's `/admin/api/users` over real HTTP: staff users, roles, deactivation."""
from __future__ import annotations

import json

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.teams.models import MemberRole
from accord.users.models import StaffRole, User
from tests.factories import PASSWORD, Factory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _staff(**kw: object) -> dict[str, object]:
    body: dict[str, object] = {"email": "Sam@Example.com", "name": "Sam Staff", "password": "staff password 1",
                               "staff_role": "partner-manager"}
    body.update(kw)
    return body


async def test_owner_creates_a_staff_user_who_can_sign_in_to_the_admin_api(
        admin: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    created = await admin.post("/admin/api/users", json=_staff())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == "sam@example.com" and body["staff_role"] == "partner-manager"
    assert body["is_active"] is True and body["memberships"] == []
    assert "password" not in json.dumps(body)

    login = await anon.post("/api/auth/login", json={"email": "sam@example.com", "password": "staff password 1"})
    assert login.status_code == 200
    # A staff user's session works on the admin API with their staff role.
    listed = await anon.get("/admin/api/users", headers=bearer(login.json()["token"]))
    assert listed.status_code == 200 and "sam@example.com" in [u["email"] for u in listed.json()["items"]]
    refused = await anon.post("/admin/api/users", headers=bearer(login.json()["token"]), json=_staff(email="x@example.com"))
    assert refused.status_code == 403

    audit = (await admin.get("/admin/api/audit", params={"target_id": body["id"]})).json()["items"]
    assert [e["action"] for e in audit][-1] == "user.created"
    assert "password_hash" not in json.dumps(audit) and "$argon2" not in json.dumps(audit)


async def test_create_staff_user_checks_input_and_permissions(admin: httpx.AsyncClient, anon: httpx.AsyncClient,
                                                              factory: Factory) -> None:
    await factory.user("taken@example.com")
    dup = await admin.post("/admin/api/users", json=_staff(email="TAKEN@example.com"))
    assert dup.status_code == 409 and dup.json()["errors"][0]["field"] == "email"
    bad = await admin.post("/admin/api/users", json=_staff(staff_role="janitor", password="short"))
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"staff_role", "password"}

    admin_token = await factory.admin_token(StaffRole.admin)
    as_admin = await anon.post("/admin/api/users", headers=bearer(admin_token), json=_staff(staff_role="owner"))
    assert as_admin.status_code == 403
    assert (await anon.post("/admin/api/users", headers=bearer(admin_token), json=_staff())).status_code == 201
    for role in (StaffRole.partner_manager, StaffRole.viewer):
        token = await factory.admin_token(role)
        answer = await anon.post("/admin/api/users", headers=bearer(token), json=_staff(email=f"{role}@example.com"))
        assert answer.status_code == 403, role
    assert (await anon.get("/admin/api/users")).status_code == 401


async def test_list_filters_and_get_with_memberships(admin: httpx.AsyncClient, factory: Factory,
                                                     session: AsyncSession) -> None:
    partner = await factory.partner(name="Initech", slug="initech")
    member, _ = await factory.member(partner, MemberRole.developer)
    staff = await factory.user("zoe@example.com", staff_role=StaffRole.viewer)
    gone = await factory.user("gone@example.com")
    gone.is_active = False
    await session.flush()

    by_partner = (await admin.get("/admin/api/users", params={"partner_id": str(partner.id)})).json()
    assert by_partner["total"] == 1 and by_partner["items"][0]["id"] == str(member.id)
    by_role = (await admin.get("/admin/api/users", params={"staff_role": "viewer"})).json()
    assert [u["id"] for u in by_role["items"]] == [str(staff.id)]
    by_text = (await admin.get("/admin/api/users", params={"q": "ZOE"})).json()
    assert [u["email"] for u in by_text["items"]] == ["zoe@example.com"]
    inactive = (await admin.get("/admin/api/users", params={"is_active": "false"})).json()
    assert [u["email"] for u in inactive["items"]] == ["gone@example.com"]
    paged = (await admin.get("/admin/api/users", params={"limit": 1})).json()
    assert paged["total"] == 3 and len(paged["items"]) == 1

    detail = (await admin.get(f"/admin/api/users/{member.id}")).json()
    assert detail["memberships"] == [{"partner_id": str(partner.id), "partner_name": "Initech",
                                      "partner_slug": "initech", "role": "developer"}]
    missing = await admin.get("/admin/api/users/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/not-found"


async def test_deactivating_signs_out_and_refuses_login(admin: httpx.AsyncClient, anon: httpx.AsyncClient,
                                                        factory: Factory) -> None:
    user = await factory.user("leo@example.com")
    token = await factory.session_token(user)
    off = await admin.patch(f"/admin/api/users/{user.id}", json={"is_active": False})
    assert off.status_code == 200 and off.json()["is_active"] is False
    assert (await anon.get("/api/me", headers=bearer(token))).status_code == 401
    login = await anon.post("/api/auth/login", json={"email": "leo@example.com", "password": PASSWORD})
    assert login.status_code == 401

    on = await admin.patch(f"/admin/api/users/{user.id}", json={"is_active": True})
    assert on.status_code == 200
    # The old session stays ended; a new login works again.
    assert (await anon.get("/api/me", headers=bearer(token))).status_code == 401
    assert (await anon.post("/api/auth/login", json={"email": "leo@example.com",
                                                     "password": PASSWORD})).status_code == 200
    audit = (await admin.get("/admin/api/audit", params={"target_id": str(user.id),
                                                         "action": "user.updated"})).json()["items"]
    assert [(e["before"]["is_active"], e["after"]["is_active"]) for e in audit] == [(False, True), (True, False)]


async def test_staff_roles_change_with_owner_rules(admin: httpx.AsyncClient, anon: httpx.AsyncClient,
                                                   factory: Factory, session: AsyncSession) -> None:
    user = await factory.user(staff_role=StaffRole.viewer)
    promoted = await admin.patch(f"/admin/api/users/{user.id}", json={"staff_role": "admin", "name": "Al"})
    assert promoted.status_code == 200
    assert promoted.json()["staff_role"] == "admin" and promoted.json()["name"] == "Al"
    demoted = await admin.patch(f"/admin/api/users/{user.id}", json={"staff_role": None})
    assert demoted.status_code == 200 and demoted.json()["staff_role"] is None
    assert (await admin.patch(f"/admin/api/users/{user.id}", json={"is_active": None})).status_code == 422

    admin_token = await factory.admin_token(StaffRole.admin)
    owner = await factory.user(staff_role=StaffRole.owner)
    for change in ({"staff_role": "owner"},):
        answer = await anon.patch(f"/admin/api/users/{user.id}", headers=bearer(admin_token), json=change)
        assert answer.status_code == 403
    for change in ({"staff_role": "admin"}, {"is_active": False}):
        answer = await anon.patch(f"/admin/api/users/{owner.id}", headers=bearer(admin_token), json=change)
        assert answer.status_code == 403, change
    manager = await factory.admin_token(StaffRole.partner_manager)
    assert (await anon.patch(f"/admin/api/users/{user.id}", headers=bearer(manager),
                             json={"name": "X"})).status_code == 403
    await session.refresh(owner)
    assert owner.staff_role == StaffRole.owner and owner.is_active


async def test_staff_cannot_lock_themselves_out(anon: httpx.AsyncClient, factory: Factory) -> None:
    me = await factory.user(staff_role=StaffRole.owner)
    token = await factory.session_token(me)
    for change, field in (({"is_active": False}, "is_active"), ({"staff_role": "viewer"}, "staff_role")):
        answer = await anon.patch(f"/admin/api/users/{me.id}", headers=bearer(token), json=change)
        assert answer.status_code == 409, answer.text
        assert answer.json()["type"] == "/problems/invalid-state"
        assert answer.json()["errors"][0]["field"] == field
    renamed = await anon.patch(f"/admin/api/users/{me.id}", headers=bearer(token), json={"name": "Still Me"})
    assert renamed.status_code == 200


async def test_staff_set_user_custom_fields_including_hidden(admin: httpx.AsyncClient, factory: Factory,
                                                             session: AsyncSession) -> None:
    for field in ({"target": "user", "key": "tshirt", "label": "T-shirt", "type": "choice",
                   "choices": ["S", "M", "L"]},
                  {"target": "user", "key": "risk", "label": "Risk", "hidden": True}):
        assert (await admin.post("/admin/api/custom-fields", json=field)).status_code == 201
    user = await factory.user()
    bad = await admin.patch(f"/admin/api/users/{user.id}", json={"custom_fields": {"tshirt": "XXL"}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "custom_fields.tshirt"
    ok = await admin.patch(f"/admin/api/users/{user.id}", json={"custom_fields": {"tshirt": "M", "risk": "low"}})
    assert ok.status_code == 200 and ok.json()["custom_fields"] == {"tshirt": "M", "risk": "low"}
    stored = await session.scalar(select(User).where(User.id == user.id).execution_options(populate_existing=True))
    assert stored.custom_fields == {"tshirt": "M", "risk": "low"}
    created = await admin.post("/admin/api/users", json=_staff(custom_fields={"nope": 1}))
    assert created.status_code == 422 and created.json()["errors"][0]["field"] == "custom_fields.nope"
