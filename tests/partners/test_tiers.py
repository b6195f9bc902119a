"""Program tiers over real HTTP: admin CRUD, reorder, conflicts and the partner-side list."""
from __future__ import annotations

import httpx

from accord.users.models import StaffRole
from tests.partners.helpers import audit_entries, bearer, error_fields


async def _tier(admin: httpx.AsyncClient, slug: str, rank: int | None = None, **kw) -> dict:
    body = {"name": slug.title(), "slug": slug, **kw}
    if rank is not None:
        body["rank"] = rank
    answer = await admin.post("/admin/api/tiers", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_create_list_get_update_delete_tier_with_audit(admin: httpx.AsyncClient) -> None:
    gold = await _tier(admin, "gold", 30, description="Strategic partners")
    registered = await _tier(admin, "registered", 10)
    # Without a rank a tier goes above the highest one, leaving a gap to slot one in between.
    platinum = await _tier(admin, "platinum")
    assert platinum["rank"] == 40

    listed = (await admin.get("/admin/api/tiers")).json()
    assert [t["slug"] for t in listed["items"]] == ["registered", "gold", "platinum"]
    assert listed["total"] == 3

    got = (await admin.get(f"/admin/api/tiers/{gold['id']}")).json()
    assert got["description"] == "Strategic partners" and got["rank"] == 30

    patched = await admin.patch(f"/admin/api/tiers/{gold['id']}", json={"name": "Gold+", "rank": 35})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Gold+" and patched.json()["rank"] == 35

    entries = await audit_entries(admin, target_id=gold["id"])
    assert [e["action"] for e in entries] == ["tier.created", "tier.updated"]
    assert entries[1]["before"]["name"] == "Gold" and entries[1]["before"]["rank"] == 30
    assert entries[1]["after"]["name"] == "Gold+" and entries[1]["after"]["rank"] == 35

    assert (await admin.delete(f"/admin/api/tiers/{registered['id']}")).status_code == 204
    gone = await admin.get(f"/admin/api/tiers/{registered['id']}")
    assert gone.status_code == 404 and gone.json()["type"] == "/problems/not-found"
    deleted = await audit_entries(admin, target_id=registered["id"])
    assert deleted[-1]["action"] == "tier.deleted" and deleted[-1]["before"]["slug"] == "registered"


async def test_duplicate_slug_or_rank_is_a_conflict_naming_the_field(admin: httpx.AsyncClient) -> None:
    silver = await _tier(admin, "silver", 20)
    gold = await _tier(admin, "gold", 30)

    dup_slug = await admin.post("/admin/api/tiers", json={"name": "Silver 2", "slug": "silver", "rank": 25})
    assert dup_slug.status_code == 409
    assert dup_slug.json()["errors"] == [{"field": "slug", "reason": "a tier with slug 'silver' already exists"}]

    dup_rank = await admin.post("/admin/api/tiers", json={"name": "Bronze", "slug": "bronze", "rank": 20})
    assert dup_rank.status_code == 409 and error_fields(dup_rank) == {"rank"}

    moved_onto = await admin.patch(f"/admin/api/tiers/{gold['id']}", json={"rank": 20})
    assert moved_onto.status_code == 409 and error_fields(moved_onto) == {"rank"}
    renamed_onto = await admin.patch(f"/admin/api/tiers/{gold['id']}", json={"slug": "silver"})
    assert renamed_onto.status_code == 409 and error_fields(renamed_onto) == {"slug"}
    # A tier keeping its own slug and rank is not a conflict with itself.
    same = await admin.patch(f"/admin/api/tiers/{silver['id']}", json={"slug": "silver", "rank": 20})
    assert same.status_code == 200

    bad = await admin.post("/admin/api/tiers", json={"name": "", "slug": "Not A Slug", "rank": -1, "extra": 1})
    assert bad.status_code == 422
    assert error_fields(bad) == {"name", "slug", "rank", "extra"}
    null = await admin.patch(f"/admin/api/tiers/{gold['id']}", json={"name": None})
    assert null.status_code == 422 and error_fields(null) == {"name"}


async def test_a_tier_in_use_cannot_be_deleted(admin: httpx.AsyncClient, factory) -> None:
    used_by_partner = await factory.tier()
    await factory.partner(tier_id=used_by_partner.id)
    answer = await admin.delete(f"/admin/api/tiers/{used_by_partner.id}")
    assert answer.status_code == 409 and "partner" in answer.json()["detail"]

    # Deleting a plan's minimum tier would silently open the plan to every tier.
    used_by_plan = await factory.tier()
    await factory.plan(await factory.product(), min_tier_id=used_by_plan.id)
    answer = await admin.delete(f"/admin/api/tiers/{used_by_plan.id}")
    assert answer.status_code == 409 and "plan" in answer.json()["detail"]

    assert (await admin.get(f"/admin/api/tiers/{used_by_partner.id}")).status_code == 200
    assert (await admin.get(f"/admin/api/tiers/{used_by_plan.id}")).status_code == 200
    assert (await admin.delete("/admin/api/tiers/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_reorder_hands_out_the_existing_ranks_in_the_new_order(admin: httpx.AsyncClient) -> None:
    registered = await _tier(admin, "registered", 10)
    silver = await _tier(admin, "silver", 20)
    gold = await _tier(admin, "gold", 30)

    # Gold becomes the entry tier; every rank is already taken, so a naive update would collide.
    answer = await admin.post("/admin/api/tiers/reorder", json={"tier_ids": [gold["id"], registered["id"],
                                                                              silver["id"]]})
    assert answer.status_code == 200, answer.text
    assert [(t["slug"], t["rank"]) for t in answer.json()] == [("gold", 10), ("registered", 20), ("silver", 30)]

    listed = (await admin.get("/admin/api/tiers")).json()["items"]
    assert [(t["slug"], t["rank"]) for t in listed] == [("gold", 10), ("registered", 20), ("silver", 30)]

    entry = (await audit_entries(admin, action="tier.reordered"))[-1]
    assert [t["slug"] for t in entry["before"]["order"]] == ["registered", "silver", "gold"]
    assert [(t["slug"], t["rank"]) for t in entry["after"]["order"]] == [("gold", 10), ("registered", 20),
                                                                         ("silver", 30)]


async def test_reorder_must_name_every_tier_once(admin: httpx.AsyncClient) -> None:
    a = await _tier(admin, "a", 1)
    b = await _tier(admin, "b", 2)
    c = await _tier(admin, "c", 3)
    unknown = "00000000-0000-0000-0000-000000000001"

    missing = await admin.post("/admin/api/tiers/reorder", json={"tier_ids": [c["id"], a["id"]]})
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{"field": "tier_ids", "reason": "must list every tier; missing: b"}]

    twice = await admin.post("/admin/api/tiers/reorder", json={"tier_ids": [c["id"], a["id"], b["id"], a["id"]]})
    assert twice.status_code == 422 and error_fields(twice) == {"tier_ids.3"}

    stranger = await admin.post("/admin/api/tiers/reorder", json={"tier_ids": [a["id"], b["id"], c["id"], unknown]})
    assert stranger.status_code == 422 and error_fields(stranger) == {"tier_ids.3"}

    not_ids = await admin.post("/admin/api/tiers/reorder", json={"tier_ids": ["gold"]})
    assert not_ids.status_code == 422 and error_fields(not_ids) == {"tier_ids.0"}

    listed = (await admin.get("/admin/api/tiers")).json()["items"]
    assert [(t["slug"], t["rank"]) for t in listed] == [("a", 1), ("b", 2), ("c", 3)]


async def test_only_owner_and_admin_change_tiers(anon: httpx.AsyncClient, factory) -> None:
    manager = bearer(await factory.admin_token(StaffRole.partner_manager))
    viewer = bearer(await factory.admin_token(StaffRole.viewer))
    tier = await factory.tier()
    denied = await anon.post("/admin/api/tiers", json={"name": "X", "slug": "x", "rank": 999}, headers=manager)
    assert denied.status_code == 403 and denied.json()["type"] == "/problems/forbidden"
    assert (await anon.post("/admin/api/tiers/reorder", json={"tier_ids": [str(tier.id)]},
                            headers=manager)).status_code == 403
    assert (await anon.delete(f"/admin/api/tiers/{tier.id}", headers=viewer)).status_code == 403
    assert (await anon.get("/admin/api/tiers", headers=viewer)).status_code == 200
    assert (await anon.get("/admin/api/tiers")).status_code == 401


async def test_signed_in_users_see_the_tiers_without_ids(anon: httpx.AsyncClient, factory) -> None:
    await factory.tier("Gold", rank=30)
    await factory.tier("Registered", rank=10)
    user = await factory.user()
    token = await factory.session_token(user)

    answer = await anon.get("/api/tiers", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [t["name"] for t in items] == ["Registered", "Gold"]
    assert set(items[0]) == {"name", "slug", "rank", "description"}

    assert (await anon.get("/api/tiers")).status_code == 401
    assert (await anon.get("/api/tiers", headers=bearer("acc_sess_nope"))).status_code == 401
