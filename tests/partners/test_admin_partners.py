"""The partners admin API over real HTTP: CRUD, validation, custom fields, filters, status and tier actions."""
from __future__ import annotations

from datetime import UTC, datetime

import httpx

from accord.partners.models import Audience, PartnerStatus, PartnerType
from accord.teams.models import MemberRole
from accord.users.models import StaffRole
from tests.partners.helpers import audit_entries, bearer, define_partner_fields, error_fields


def _partner(**kw) -> dict:
    body = {"name": "Acme Analytics", "slug": "acme", "type": "technology",
            "contact_name": "Alice Archer", "contact_email": "Alice@Acme.Example",
            "contact_phone": "+49 30 1234567", "website": "https://acme.example/", "country": "de",
            "notes": "met at the Berlin meetup"}
    body.update(kw)
    return body


async def test_create_defaults_to_the_lowest_tier_and_is_audited(admin: httpx.AsyncClient, factory) -> None:
    await factory.tier("Gold", rank=30)
    registered = await factory.tier("Registered", rank=10)

    created = await admin.post("/admin/api/partners", json=_partner())
    assert created.status_code == 201, created.text
    partner = created.json()
    assert partner["tier_id"] == str(registered.id)
    assert partner["tier"] == {"name": "Registered", "slug": registered.slug, "rank": 10, "description": ""}
    assert partner["status"] == "pending" and partner["audience"] == "public"
    # Contact details come back normalised.
    assert partner["contact_email"] == "alice@acme.example"
    assert partner["website"] == "https://acme.example" and partner["country"] == "DE"
    assert partner["notes"] == "met at the Berlin meetup"

    got = (await admin.get(f"/admin/api/partners/{partner['id']}")).json()
    assert got == partner

    entries = await audit_entries(admin, partner_id=partner["id"])
    assert [e["action"] for e in entries] == ["partner.created"]
    assert entries[0]["after"]["slug"] == "acme" and entries[0]["target_id"] == partner["id"]


async def test_create_with_a_named_tier_or_without_any_tiers(admin: httpx.AsyncClient, factory) -> None:
    no_tiers = await admin.post("/admin/api/partners", json=_partner(slug="early", status="active",
                                                                      audience="partner"))
    assert no_tiers.status_code == 201, no_tiers.text
    assert no_tiers.json()["tier"] is None and no_tiers.json()["tier_id"] is None
    assert no_tiers.json()["status"] == "active" and no_tiers.json()["audience"] == "partner"

    await factory.tier("Registered", rank=10)
    gold = await factory.tier("Gold", rank=30)
    by_slug = await admin.post("/admin/api/partners", json=_partner(slug="by-slug", tier=gold.slug))
    assert by_slug.json()["tier_id"] == str(gold.id)
    by_id = await admin.post("/admin/api/partners", json=_partner(slug="by-id", tier=str(gold.id)))
    assert by_id.json()["tier_id"] == str(gold.id)
    unknown = await admin.post("/admin/api/partners", json=_partner(slug="unknown", tier="diamond"))
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [{"field": "tier", "reason": "no tier 'diamond'"}]


async def test_validation_names_each_bad_field(admin: httpx.AsyncClient) -> None:
    bad = await admin.post("/admin/api/partners", json=_partner(
        slug="Bad Slug", type="pirate", contact_email="alice-at-acme", website="ftp://acme.example",
        country="XX", contact_phone="call me", status="closed", audience="everyone", tier=""))
    assert bad.status_code == 422
    assert error_fields(bad) == {"slug", "type", "contact_email", "website", "country", "contact_phone", "status",
                                 "audience", "tier"}
    email_error = next(e for e in bad.json()["errors"] if e["field"] == "contact_email")
    assert "email" in email_error["reason"]

    missing = await admin.post("/admin/api/partners", json={"slug": "nameless"})
    assert missing.status_code == 422 and error_fields(missing) == {"name"}

    # Contact details are optional: empty strings are accepted.
    blank = await admin.post("/admin/api/partners", json=_partner(contact_email="", website="", country="",
                                                                  contact_phone=""))
    assert blank.status_code == 201, blank.text


async def test_duplicate_slug_is_a_conflict(admin: httpx.AsyncClient) -> None:
    first = (await admin.post("/admin/api/partners", json=_partner())).json()
    dup = await admin.post("/admin/api/partners", json=_partner(name="Other"))
    assert dup.status_code == 409
    assert dup.json()["errors"] == [{"field": "slug", "reason": "a partner with slug 'acme' already exists"}]

    other = (await admin.post("/admin/api/partners", json=_partner(slug="other"))).json()
    clash = await admin.patch(f"/admin/api/partners/{other['id']}", json={"slug": "acme"})
    assert clash.status_code == 409 and error_fields(clash) == {"slug"}
    own = await admin.patch(f"/admin/api/partners/{first['id']}", json={"slug": "acme"})
    assert own.status_code == 200


async def test_custom_fields_are_validated_and_merged(admin: httpx.AsyncClient, session) -> None:
    await define_partner_fields(session)

    bad = await admin.post("/admin/api/partners", json=_partner(custom_fields={
        "region": "mars", "employees": "many", "favourite_colour": "blue"}))
    assert bad.status_code == 422
    assert error_fields(bad) == {"custom_fields.region", "custom_fields.employees",
                                 "custom_fields.favourite_colour"}

    created = await admin.post("/admin/api/partners", json=_partner(custom_fields={
        "region": "emea", "employees": 40, "crm_account": "ACC-1"}))
    assert created.status_code == 201, created.text
    partner = created.json()
    assert partner["custom_fields"] == {"region": "emea", "employees": 40, "crm_account": "ACC-1"}

    patched = await admin.patch(f"/admin/api/partners/{partner['id']}",
                                json={"custom_fields": {"employees": None, "region": "apac"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["custom_fields"] == {"region": "apac", "crm_account": "ACC-1"}

    rejected = await admin.patch(f"/admin/api/partners/{partner['id']}", json={"custom_fields": {"region": 7}})
    assert rejected.status_code == 422 and error_fields(rejected) == {"custom_fields.region"}
    assert (await admin.get(f"/admin/api/partners/{partner['id']}")).json()["custom_fields"] == {
        "region": "apac", "crm_account": "ACC-1"}

    updated = (await audit_entries(admin, partner_id=partner["id"], action="partner.updated"))[-1]
    assert updated["before"]["custom_fields"] == {"region": "emea", "employees": 40, "crm_account": "ACC-1"}
    assert updated["after"]["custom_fields"] == {"region": "apac", "crm_account": "ACC-1"}


async def test_patch_updates_details_but_not_status_or_tier(admin: httpx.AsyncClient, factory) -> None:
    gold = await factory.tier("Gold")
    partner = (await admin.post("/admin/api/partners", json=_partner())).json()
    url = f"/admin/api/partners/{partner['id']}"

    patched = await admin.patch(url, json={"name": "Acme Inc", "type": "agency", "audience": "internal",
                                           "contact_email": "ops@acme.example", "country": "FR",
                                           "website": "", "notes": "now a reseller"})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["type"], body["audience"]) == ("Acme Inc", "agency", "internal")
    assert (body["contact_email"], body["country"], body["website"]) == ("ops@acme.example", "FR", "")
    assert body["contact_name"] == "Alice Archer"  # untouched fields stay

    entry = (await audit_entries(admin, target_id=partner["id"]))[-1]
    assert entry["action"] == "partner.updated"
    assert (entry["before"]["name"], entry["after"]["name"]) == ("Acme Analytics", "Acme Inc")
    assert (entry["before"]["audience"], entry["after"]["audience"]) == ("public", "internal")

    for field, value in {"status": "active", "tier": gold.slug, "tier_id": str(gold.id)}.items():
        refused = await admin.patch(url, json={field: value})
        assert refused.status_code == 422 and error_fields(refused) == {field}
    for field in ("name", "contact_email"):
        null = await admin.patch(url, json={field: None})
        assert null.status_code == 422 and error_fields(null) == {field}
    bad = await admin.patch(url, json={"contact_email": "nope", "country": "Germany"})
    assert bad.status_code == 422 and error_fields(bad) == {"contact_email", "country"}
    assert (await admin.patch("/admin/api/partners/00000000-0000-0000-0000-000000000000",
                              json={"name": "X"})).status_code == 404


async def test_status_transitions(admin: httpx.AsyncClient) -> None:
    partner = (await admin.post("/admin/api/partners", json=_partner())).json()
    url = f"/admin/api/partners/{partner['id']}"

    not_yet = await admin.post(f"{url}/suspend", json={"reason": "late payment"})
    assert not_yet.status_code == 409 and not_yet.json()["type"] == "/problems/invalid-state"

    activated = await admin.post(f"{url}/activate")
    assert activated.status_code == 200 and activated.json()["status"] == "active"
    again = await admin.post(f"{url}/activate")
    assert again.status_code == 409 and again.json()["type"] == "/problems/invalid-state"
    assert "active" in again.json()["detail"]

    no_reason = await admin.post(f"{url}/suspend", json={})
    assert no_reason.status_code == 422 and error_fields(no_reason) == {"reason"}
    blank_reason = await admin.post(f"{url}/suspend", json={"reason": "   "})
    assert blank_reason.status_code == 422 and error_fields(blank_reason) == {"reason"}
    suspended = await admin.post(f"{url}/suspend", json={"reason": "late payment"})
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended" and suspended.json()["status_reason"] == "late payment"

    resumed = await admin.post(f"{url}/activate")
    assert resumed.json()["status"] == "active" and resumed.json()["status_reason"] == ""

    closed = await admin.post(f"{url}/close", json={"reason": "contract ended"})
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert closed.json()["status_reason"] == "contract ended"
    for action, body in (("activate", None), ("suspend", {"reason": "x"}), ("close", None)):
        refused = await admin.post(f"{url}/{action}", json=body)
        assert refused.status_code == 409 and refused.json()["type"] == "/problems/invalid-state", action
    assert (await admin.get(url)).json()["status"] == "closed"

    entries = await audit_entries(admin, target_id=partner["id"])
    assert [e["action"] for e in entries] == ["partner.created", "partner.activated", "partner.suspended",
                                              "partner.activated", "partner.closed"]
    assert [(e["before"]["status"], e["after"]["status"]) for e in entries[1:]] == [
        ("pending", "active"), ("active", "suspended"), ("suspended", "active"), ("active", "closed")]
    assert entries[2]["after"]["status_reason"] == "late payment"


async def test_a_pending_partner_can_be_turned_down_without_a_body(admin: httpx.AsyncClient) -> None:
    partner = (await admin.post("/admin/api/partners", json=_partner())).json()
    closed = await admin.post(f"/admin/api/partners/{partner['id']}/close")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    missing = await admin.post("/admin/api/partners/00000000-0000-0000-0000-000000000000/activate")
    assert missing.status_code == 404


async def test_tier_change_is_audited_with_before_and_after(admin: httpx.AsyncClient, factory) -> None:
    registered = await factory.tier("Registered", rank=10)
    gold = await factory.tier("Gold", rank=30)
    partner = (await admin.post("/admin/api/partners", json=_partner())).json()
    url = f"/admin/api/partners/{partner['id']}/tier"

    moved = await admin.post(url, json={"tier": gold.slug})
    assert moved.status_code == 200, moved.text
    assert moved.json()["tier_id"] == str(gold.id) and moved.json()["tier"]["name"] == "Gold"

    changes = await audit_entries(admin, target_id=partner["id"], action="partner.tier_changed")
    assert len(changes) == 1
    assert (changes[0]["before"]["tier"], changes[0]["after"]["tier"]) == (registered.slug, gold.slug)
    assert (changes[0]["before"]["tier_id"], changes[0]["after"]["tier_id"]) == (str(registered.id), str(gold.id))
    assert changes[0]["partner_id"] == partner["id"]

    by_id = await admin.post(url, json={"tier": str(registered.id)})
    assert by_id.json()["tier_id"] == str(registered.id)
    unchanged = await admin.post(url, json={"tier": str(registered.id)})
    assert unchanged.status_code == 200
    assert len(await audit_entries(admin, target_id=partner["id"], action="partner.tier_changed")) == 2

    unknown = await admin.post(url, json={"tier": "diamond"})
    assert unknown.status_code == 422 and error_fields(unknown) == {"tier"}
    assert (await admin.post(url, json={})).status_code == 422


async def test_delete_only_a_partner_with_nothing_attached(admin: httpx.AsyncClient, factory) -> None:
    empty = (await admin.post("/admin/api/partners", json=_partner())).json()
    assert (await admin.delete(f"/admin/api/partners/{empty['id']}")).status_code == 204
    assert (await admin.get(f"/admin/api/partners/{empty['id']}")).status_code == 404
    deleted = (await audit_entries(admin, target_id=empty["id"]))[-1]
    assert deleted["action"] == "partner.deleted" and deleted["before"]["slug"] == "acme"

    with_member = await factory.partner()
    await factory.member(with_member, MemberRole.developer)
    with_app = await factory.partner()
    await factory.application(with_app)
    with_subscription = await factory.partner()
    await factory.subscription(with_subscription, await factory.plan(await factory.product()))
    for partner, what in ((with_member, "member"), (with_app, "application"),
                          (with_subscription, "subscription")):
        refused = await admin.delete(f"/admin/api/partners/{partner.id}")
        assert refused.status_code == 409, what
        assert what in refused.json()["detail"] and "close" in refused.json()["detail"]
        assert (await admin.get(f"/admin/api/partners/{partner.id}")).status_code == 200


async def test_filters_search_sort_and_pagination(admin: httpx.AsyncClient, factory) -> None:
    silver = await factory.tier("Silver", rank=20)
    gold = await factory.tier("Gold", rank=30)
    day = lambda d: datetime(2025, 1, d, 12, tzinfo=UTC)  # noqa: E731
    await factory.partner(name="Acme", slug="acme", type=PartnerType.agency, tier_id=gold.id,
                          contact_email="ops@acme.example", created_at=day(1))
    await factory.partner(name="bright", slug="bright", type=PartnerType.technology, tier_id=silver.id,
                          status=PartnerStatus.pending, audience=Audience.public, created_at=day(2))
    await factory.partner(name="Cobalt 100%", slug="cobalt", type=PartnerType.agency,
                          status=PartnerStatus.suspended, contact_email="cto@bright-labs.example",
                          created_at=day(3))
    await factory.partner(name="Delta", slug="delta", type=PartnerType.technology, tier_id=silver.id,
                          audience=Audience.internal, created_at=day(4))

    async def slugs(**params) -> list[str]:
        answer = await admin.get("/admin/api/partners", params=params)
        assert answer.status_code == 200, answer.text
        return [p["slug"] for p in answer.json()["items"]]

    assert await slugs() == ["acme", "bright", "cobalt", "delta"]  # by name, case-insensitively
    assert await slugs(type="agency") == ["acme", "cobalt"]
    assert await slugs(tier=silver.slug) == ["bright", "delta"]
    assert await slugs(tier=str(gold.id)) == ["acme"]
    assert await slugs(tier="no-such-tier") == []
    assert await slugs(status="pending") == ["bright"]
    assert await slugs(audience="internal") == ["delta"]
    assert await slugs(q="BRIGHT") == ["bright", "cobalt"]  # name/slug, and a contact email
    assert await slugs(q="acme.example") == ["acme"]
    assert await slugs(q="100%") == ["cobalt"]  # `%` is a character, not a wildcard
    assert await slugs(q="%") == ["cobalt"]
    assert await slugs(created_after="2025-01-02T12:00:00Z", created_before="2025-01-04T00:00:00Z") == [
        "bright", "cobalt"]
    assert await slugs(created_after="2025-01-03T12:00:00") == ["cobalt", "delta"]  # no zone: UTC
    assert await slugs(type="technology", audience="public") == ["bright"]

    assert await slugs(sort="-created_at") == ["delta", "cobalt", "bright", "acme"]
    assert await slugs(sort="-name") == ["delta", "cobalt", "bright", "acme"]
    assert await slugs(sort="tier") == ["cobalt", "bright", "delta", "acme"]  # no tier first, then by rank
    assert await slugs(sort="-tier") == ["acme", "bright", "delta", "cobalt"]

    page = (await admin.get("/admin/api/partners", params={"limit": 3, "offset": 0, "sort": "slug"})).json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 3, 0)
    assert [p["slug"] for p in page["items"]] == ["acme", "bright", "cobalt"]
    rest = (await admin.get("/admin/api/partners", params={"limit": 3, "offset": 3, "sort": "slug"})).json()
    assert [p["slug"] for p in rest["items"]] == ["delta"] and rest["total"] == 4
    filtered = (await admin.get("/admin/api/partners", params={"type": "agency", "limit": 1})).json()
    assert filtered["total"] == 2 and len(filtered["items"]) == 1

    listed = (await admin.get("/admin/api/partners", params={"q": "acme"})).json()["items"][0]
    assert listed["tier"]["name"] == "Gold"

    bad = await admin.get("/admin/api/partners", params={"sort": "colour", "status": "asleep", "limit": 0})
    assert bad.status_code == 422 and error_fields(bad) == {"query.sort", "query.status", "query.limit"}


async def test_staff_roles(anon: httpx.AsyncClient, factory) -> None:
    viewer = bearer(await factory.admin_token(StaffRole.viewer))
    manager = bearer(await factory.admin_token(StaffRole.partner_manager))
    partner = await factory.partner()

    assert (await anon.get("/admin/api/partners", headers=viewer)).status_code == 200
    assert (await anon.post("/admin/api/partners", json=_partner(), headers=viewer)).status_code == 403
    assert (await anon.post(f"/admin/api/partners/{partner.id}/suspend", json={"reason": "x"},
                            headers=viewer)).status_code == 403
    created = await anon.post("/admin/api/partners", json=_partner(), headers=manager)
    assert created.status_code == 201
    entry = (await anon.get("/admin/api/audit", params={"target_id": created.json()["id"]},
                            headers=manager)).json()["items"][0]
    assert entry["actor_kind"] == "admin-token"
    assert (await anon.get("/admin/api/partners")).status_code == 401
