"""The partner's own view of its organisation (`/api/partners/{id}`) over real HTTP."""
from __future__ import annotations

import httpx

from accord.partners.models import PartnerStatus
from accord.teams.models import MemberRole
from tests.partners.helpers import audit_entries, bearer, define_partner_fields, error_fields


async def _partner_with_secrets(factory, session, **kw):
    await define_partner_fields(session)
    tier = await factory.tier("Gold", rank=30)
    return await factory.partner(
        name="Acme", tier_id=tier.id, notes="churn risk; do not upsell", website="https://acme.example",
        contact_email="alice@acme.example", custom_fields={"region": "emea", "crm_account": "ACC-1001"}, **kw)


async def test_members_see_their_partner_without_staff_only_data(anon: httpx.AsyncClient, factory, session) -> None:
    partner = await _partner_with_secrets(factory, session)
    _, token = await factory.member(partner, MemberRole.viewer)

    answer = await anon.get(f"/api/partners/{partner.id}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["name"] == "Acme" and body["website"] == "https://acme.example"
    assert body["tier"] == {"name": "Gold", "slug": body["tier"]["slug"], "rank": 30, "description": ""}
    assert body["custom_fields"] == {"region": "emea"}
    assert "notes" not in body and "status_reason" not in body and "tier_id" not in body
    assert "churn risk" not in answer.text and "ACC-1001" not in answer.text


async def test_another_partners_id_looks_like_a_missing_one(anon: httpx.AsyncClient, factory) -> None:
    mine = await factory.partner()
    theirs = await factory.partner()
    _, token = await factory.member(mine, MemberRole.partner_admin)

    for url in (f"/api/partners/{theirs.id}", "/api/partners/00000000-0000-0000-0000-000000000000"):
        got = await anon.get(url, headers=bearer(token))
        assert got.status_code == 404 and got.json()["type"] == "/problems/not-found"
        patched = await anon.patch(url, json={"name": "Mine now"}, headers=bearer(token))
        assert patched.status_code == 404
    assert (await anon.get(f"/api/partners/{theirs.id}", headers=bearer(token))).json() == \
        (await anon.get("/api/partners/00000000-0000-0000-0000-000000000000", headers=bearer(token))).json()
    assert (await anon.get(f"/api/partners/{mine.id}")).status_code == 401


async def test_only_partner_admins_may_patch(anon: httpx.AsyncClient, factory) -> None:
    partner = await factory.partner(name="Acme")
    for role in (MemberRole.viewer, MemberRole.developer):
        _, token = await factory.member(partner, role)
        denied = await anon.patch(f"/api/partners/{partner.id}", json={"name": "Renamed"}, headers=bearer(token))
        assert denied.status_code == 403 and denied.json()["type"] == "/problems/forbidden", role
    _, admin_token = await factory.member(partner, MemberRole.partner_admin)
    assert (await anon.get(f"/api/partners/{partner.id}", headers=bearer(admin_token))).json()["name"] == "Acme"


async def test_partner_admin_updates_details_and_visible_custom_fields(
        anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory, session) -> None:
    partner = await _partner_with_secrets(factory, session)
    user, token = await factory.member(partner, MemberRole.partner_admin)
    url = f"/api/partners/{partner.id}"

    patched = await anon.patch(url, headers=bearer(token), json={
        "name": "Acme Analytics", "contact_name": "Bob", "contact_email": "Bob@Acme.Example",
        "contact_phone": "+1 555 0100", "website": "https://acme.io", "country": "us",
        "custom_fields": {"region": "americas", "employees": 12}})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["contact_email"], body["country"]) == ("Acme Analytics", "bob@acme.example", "US")
    assert body["custom_fields"] == {"region": "americas", "employees": 12}

    # Staff see that the hidden field survived the partner's merge.
    staff_view = (await admin.get(f"/admin/api/partners/{partner.id}")).json()
    assert staff_view["custom_fields"] == {"region": "americas", "employees": 12, "crm_account": "ACC-1001"}
    assert staff_view["notes"] == "churn risk; do not upsell"

    entry = (await audit_entries(admin, target_id=str(partner.id)))[-1]
    assert entry["action"] == "partner.updated" and entry["actor_kind"] == "user"
    assert entry["actor_id"] == str(user.id)
    assert (entry["before"]["name"], entry["after"]["name"]) == ("Acme", "Acme Analytics")

    hidden = await anon.patch(url, headers=bearer(token), json={"custom_fields": {"crm_account": "MINE"}})
    assert hidden.status_code == 422
    assert hidden.json()["errors"] == [{"field": "custom_fields.crm_account", "reason": "no such custom field"}]
    bad = await anon.patch(url, headers=bearer(token), json={"contact_email": "bob", "website": "javascript:x"})
    assert bad.status_code == 422 and error_fields(bad) == {"contact_email", "website"}
    bad_custom = await anon.patch(url, headers=bearer(token), json={"custom_fields": {"region": "mars"}})
    assert bad_custom.status_code == 422 and error_fields(bad_custom) == {"custom_fields.region"}


async def test_partner_cannot_change_program_fields(anon: httpx.AsyncClient, factory) -> None:
    partner = await factory.partner(slug="acme")
    _, token = await factory.member(partner, MemberRole.partner_admin)
    for field, value in {"slug": "acme-2", "tier": "gold", "tier_id": None, "status": "active",
                         "audience": "internal", "notes": "vip", "type": "agency", "status_reason": ""}.items():
        answer = await anon.patch(f"/api/partners/{partner.id}", json={field: value}, headers=bearer(token))
        assert answer.status_code == 422, field
        assert error_fields(answer) == {field}
    assert (await anon.get(f"/api/partners/{partner.id}", headers=bearer(token))).json()["slug"] == "acme"


async def test_a_closed_partner_is_read_only_for_its_members(anon: httpx.AsyncClient, factory) -> None:
    closed = await factory.partner(status=PartnerStatus.closed)
    _, token = await factory.member(closed, MemberRole.partner_admin)
    refused = await anon.patch(f"/api/partners/{closed.id}", json={"name": "Back"}, headers=bearer(token))
    assert refused.status_code == 409 and refused.json()["type"] == "/problems/invalid-state"
    assert (await anon.get(f"/api/partners/{closed.id}", headers=bearer(token))).json()["status"] == "closed"

    # A suspended partner may still fix its contact details.
    suspended = await factory.partner(status=PartnerStatus.suspended)
    _, token = await factory.member(suspended, MemberRole.partner_admin)
    fixed = await anon.patch(f"/api/partners/{suspended.id}", json={"contact_email": "billing@x.example"},
                             headers=bearer(token))
    assert fixed.status_code == 200 and fixed.json()["contact_email"] == "billing@x.example"
