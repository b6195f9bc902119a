"""A partner's team over real HTTP: listing, roles, removal, the last partner-admin, isolation."""
from __future__ import annotations

import json
import uuid

import httpx

from accord.teams.models import MemberRole
from accord.users.models import StaffRole
from tests.factories import Factory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_members_list_their_team(anon: httpx.AsyncClient, factory: Factory) -> None:
    partner = await factory.partner()
    admin_user, _ = await factory.member(partner, MemberRole.partner_admin)
    viewer, viewer_token = await factory.member(partner, MemberRole.viewer)
    await factory.member(await factory.partner())  # someone else's team

    listed = await anon.get(f"/api/partners/{partner.id}/members", headers=bearer(viewer_token))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total"] == 2
    assert {(m["user_id"], m["role"]) for m in body["items"]} == {(str(admin_user.id), "partner-admin"),
                                                                 (str(viewer.id), "viewer")}
    assert all(m["partner_id"] == str(partner.id) and m["is_active"] for m in body["items"])
    admins = await anon.get(f"/api/partners/{partner.id}/members", headers=bearer(viewer_token),
                            params={"role": "partner-admin"})
    assert [m["user_id"] for m in admins.json()["items"]] == [str(admin_user.id)]
    assert (await anon.get(f"/api/partners/{partner.id}/members")).status_code == 401


async def test_partner_admin_changes_roles_and_removes_members(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                               factory: Factory) -> None:
    partner = await factory.partner()
    _, admin_token = await factory.member(partner, MemberRole.partner_admin)
    dev, dev_token = await factory.member(partner, MemberRole.developer)
    base = f"/api/partners/{partner.id}/members"

    promoted = await anon.patch(f"{base}/{dev.id}", headers=bearer(admin_token), json={"role": "viewer"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "viewer"
    bad = await anon.patch(f"{base}/{dev.id}", headers=bearer(admin_token), json={"role": "owner"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "role"

    removed = await anon.delete(f"{base}/{dev.id}", headers=bearer(admin_token))
    assert removed.status_code == 204
    # The removed member no longer sees the partner at all.
    assert (await anon.get(base, headers=bearer(dev_token))).status_code == 404
    assert (await anon.delete(f"{base}/{dev.id}", headers=bearer(admin_token))).status_code == 404

    audit = (await admin.get("/admin/api/audit", params={"partner_id": str(partner.id)})).json()["items"]
    assert [e["action"] for e in audit] == ["membership.deleted", "membership.updated"]
    assert audit[1]["before"]["role"] == "developer" and audit[1]["after"]["role"] == "viewer"
    assert audit[0]["before"]["user_id"] == str(dev.id)


async def test_only_partner_admins_manage_the_team(anon: httpx.AsyncClient, factory: Factory) -> None:
    partner = await factory.partner()
    admin_user, _ = await factory.member(partner, MemberRole.partner_admin)
    _, dev_token = await factory.member(partner, MemberRole.developer)
    _, viewer_token = await factory.member(partner, MemberRole.viewer)
    base = f"/api/partners/{partner.id}/members/{admin_user.id}"
    for token in (dev_token, viewer_token):
        assert (await anon.patch(base, headers=bearer(token), json={"role": "viewer"})).status_code == 403
        assert (await anon.delete(base, headers=bearer(token))).status_code == 403


async def test_the_last_partner_admin_can_be_neither_demoted_nor_removed(anon: httpx.AsyncClient,
                                                                         admin: httpx.AsyncClient,
                                                                         factory: Factory) -> None:
    partner = await factory.partner()
    first, first_token = await factory.member(partner, MemberRole.partner_admin)
    base = f"/api/partners/{partner.id}/members"

    demote = await anon.patch(f"{base}/{first.id}", headers=bearer(first_token), json={"role": "developer"})
    assert demote.status_code == 409
    assert demote.json()["type"] == "/problems/invalid-state"
    assert demote.json()["errors"] == [{"field": "role", "reason": "last partner-admin"}]
    leave = await anon.delete(f"{base}/{first.id}", headers=bearer(first_token))
    assert leave.status_code == 409 and leave.json()["type"] == "/problems/invalid-state"
    # Staff are held to the same rule.
    assert (await admin.delete(f"/admin/api/partners/{partner.id}/members/{first.id}")).status_code == 409
    # Setting the role it already has is not a demotion.
    same = await anon.patch(f"{base}/{first.id}", headers=bearer(first_token), json={"role": "partner-admin"})
    assert same.status_code == 200

    second, _ = await factory.member(partner, MemberRole.developer)
    assert (await anon.patch(f"{base}/{second.id}", headers=bearer(first_token),
                             json={"role": "partner-admin"})).status_code == 200
    # With two admins, one may step down; then the other is the last again.
    assert (await anon.patch(f"{base}/{first.id}", headers=bearer(first_token),
                             json={"role": "developer"})).status_code == 200
    last = await admin.patch(f"/admin/api/partners/{partner.id}/members/{second.id}", json={"role": "viewer"})
    assert last.status_code == 409
    roles = {m["user_id"]: m["role"] for m in (await admin.get(f"/admin/api/partners/{partner.id}/members")).json()["items"]}
    assert roles == {str(first.id): "developer", str(second.id): "partner-admin"}


async def test_other_partners_ids_answer_404_on_every_partner_route(anon: httpx.AsyncClient,
                                                                    factory: Factory) -> None:
    mine = await factory.partner()
    theirs = await factory.partner()
    _, token = await factory.member(mine, MemberRole.partner_admin)
    their_admin, _ = await factory.member(theirs, MemberRole.partner_admin)
    their_dev, _ = await factory.member(theirs, MemberRole.developer)
    headers = bearer(token)

    calls = [
        ("GET", f"/api/partners/{theirs.id}/members", None),
        ("PATCH", f"/api/partners/{theirs.id}/members/{their_dev.id}", {"role": "viewer"}),
        ("DELETE", f"/api/partners/{theirs.id}/members/{their_dev.id}", None),
        ("GET", f"/api/partners/{theirs.id}/invitations", None),
        ("POST", f"/api/partners/{theirs.id}/invitations", {"email": "x@example.com"}),
        ("POST", f"/api/partners/{theirs.id}/invitations/{uuid.uuid4()}/revoke", None),
        # Their member's id under my own partner is just as unknown.
        ("PATCH", f"/api/partners/{mine.id}/members/{their_dev.id}", {"role": "viewer"}),
        ("DELETE", f"/api/partners/{mine.id}/members/{their_admin.id}", None),
        ("GET", f"/api/partners/{uuid.uuid4()}/members", None),
    ]
    for method, path, body in calls:
        answer = await anon.request(method, path, headers=headers, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["type"] == "/problems/not-found"
    # A real but foreign partner and a made-up one answer identically.
    foreign = await anon.get(f"/api/partners/{theirs.id}/members", headers=headers)
    made_up = await anon.get(f"/api/partners/{uuid.uuid4()}/members", headers=headers)
    assert foreign.json() == made_up.json()


async def test_staff_manage_any_team(admin: httpx.AsyncClient, anon: httpx.AsyncClient, factory: Factory) -> None:
    partner = await factory.partner()
    existing = await factory.user("kim@example.com")
    base = f"/admin/api/partners/{partner.id}/members"

    added = await admin.post(base, json={"email": "KIM@example.com", "role": "partner-admin"})
    assert added.status_code == 201, added.text
    assert added.json()["user_id"] == str(existing.id) and added.json()["role"] == "partner-admin"
    again = await admin.post(base, json={"email": "kim@example.com"})
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "email"
    nobody = await admin.post(base, json={"email": "nobody@example.com"})
    assert nobody.status_code == 422 and nobody.json()["errors"][0]["field"] == "email"

    other = await factory.user()
    assert (await admin.post(base, json={"email": other.email})).json()["role"] == "developer"
    changed = await admin.patch(f"{base}/{other.id}", json={"role": "viewer"})
    assert changed.status_code == 200 and changed.json()["role"] == "viewer"
    listed = (await admin.get(base)).json()
    assert listed["total"] == 2
    assert (await admin.delete(f"{base}/{other.id}")).status_code == 204
    assert (await admin.get(base)).json()["total"] == 1

    me = (await anon.post("/api/auth/login", json={"email": "kim@example.com",
                                                   "password": "correct horse battery staple"})).json()
    assert me["user"]["memberships"][0]["role"] == "partner-admin"

    audit = (await admin.get("/admin/api/audit", params={"partner_id": str(partner.id)})).json()["items"]
    assert [e["action"] for e in audit] == ["membership.deleted", "membership.updated", "membership.created",
                                            "membership.created"]
    assert audit[0]["actor_kind"] == "admin-token"
    assert "hash" not in json.dumps(audit)

    missing = f"/admin/api/partners/{uuid.uuid4()}/members"
    assert (await admin.get(missing)).status_code == 404
    assert (await admin.post(missing, json={"email": "kim@example.com"})).status_code == 404
    assert (await admin.patch(f"{base}/{uuid.uuid4()}", json={"role": "viewer"})).status_code == 404


async def test_read_only_staff_cannot_change_teams(anon: httpx.AsyncClient, factory: Factory) -> None:
    partner = await factory.partner()
    member, _ = await factory.member(partner, MemberRole.developer)
    viewer = bearer(await factory.admin_token(StaffRole.viewer))
    base = f"/admin/api/partners/{partner.id}/members"
    assert (await anon.get(base, headers=viewer)).status_code == 200
    assert (await anon.patch(f"{base}/{member.id}", headers=viewer, json={"role": "viewer"})).status_code == 403
    assert (await anon.delete(f"{base}/{member.id}", headers=viewer)).status_code == 403
    manager = bearer(await factory.admin_token(StaffRole.partner_manager))
    assert (await anon.patch(f"{base}/{member.id}", headers=manager, json={"role": "viewer"})).status_code == 200
