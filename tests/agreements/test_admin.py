"""The agreements admin API over real HTTP: CRUD, drafts and publication, requirements, validation."""
from __future__ import annotations

import httpx
from sqlalchemy import select

from accord.audit.models import AuditEntry
from accord.events.models import Event
from accord.users.models import StaffRole
from tests.agreements.helpers import bearer, field_errors

BASE = "/admin/api/agreements"


async def _create(admin: httpx.AsyncClient, slug: str = "terms", **extra) -> dict:
    response = await admin.post(BASE, json={"slug": slug, "title": "API Terms of Service", **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def test_agreement_crud(admin: httpx.AsyncClient, session) -> None:
    created = await _create(admin, description="What every partner signs")
    assert created["versions"] == [] and created["requirements"] == []
    duplicate = await admin.post(BASE, json={"slug": "terms", "title": "Again"})
    assert duplicate.status_code == 409 and field_errors(duplicate) == {"slug": "an agreement with slug 'terms' exists"}

    listed = await admin.get(BASE)
    assert [a["slug"] for a in listed.json()["items"]] == ["terms"]
    changed = await admin.patch(f"{BASE}/{created['id']}", json={"title": "Terms of Service"})
    assert changed.status_code == 200 and changed.json()["title"] == "Terms of Service"
    assert (await admin.patch(f"{BASE}/{created['id']}", json={"title": None})).status_code == 422

    assert (await admin.delete(f"{BASE}/{created['id']}")).status_code == 204
    assert (await admin.get(f"{BASE}/{created['id']}")).status_code == 404
    actions = (await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == created["id"])
                                      .order_by(AuditEntry.seq))).all()
    assert actions == ["agreement.created", "agreement.updated", "agreement.deleted"]


async def test_validation_errors_name_the_field(admin: httpx.AsyncClient) -> None:
    bad = await admin.post(BASE, json={"slug": "Not A Slug", "title": ""})
    assert bad.status_code == 422 and {"slug", "title"} <= set(field_errors(bad))
    created = await _create(admin)
    negative = await admin.post(f"{BASE}/{created['id']}/versions", json={"body": "x", "grace_days": -1})
    assert negative.status_code == 422 and "grace_days" in field_errors(negative)
    unknown = await admin.post(f"{BASE}/{created['id']}/versions", json={"body": "x", "colour": "red"})
    assert unknown.status_code == 422 and "colour" in field_errors(unknown)


async def test_drafts_are_edited_then_published_and_frozen(admin: httpx.AsyncClient, session) -> None:
    agreement = await _create(admin)
    versions = f"{BASE}/{agreement['id']}/versions"
    empty = (await admin.post(versions, json={})).json()
    assert empty["number"] == 1 and empty["published_at"] is None and empty["material"] is True
    second_draft = await admin.post(versions, json={"body": "another"})
    assert second_draft.status_code == 409 and "agreement" in field_errors(second_draft)

    refused = await admin.post(f"{versions}/{empty['id']}/publish")
    assert refused.status_code == 422 and "body" in field_errors(refused)
    edited = await admin.patch(f"{versions}/{empty['id']}", json={"body": "# Terms\n\nBe fair.", "grace_days": 14})
    assert edited.status_code == 200 and edited.json()["grace_days"] == 14

    published = await admin.post(f"{versions}/{empty['id']}/publish")
    assert published.status_code == 200, published.text
    body = published.json()
    assert body["published_at"] is not None and body["effective_at"] == body["published_at"]

    # Published versions never change, and the agreement can no longer be deleted.
    for attempt in (admin.patch(f"{versions}/{empty['id']}", json={"body": "sneaky"}),
                    admin.delete(f"{versions}/{empty['id']}"),
                    admin.post(f"{versions}/{empty['id']}/publish"),
                    admin.delete(f"{BASE}/{agreement['id']}")):
        response = await attempt
        assert response.status_code == 409 and response.json()["type"] == "/problems/invalid-state", response.text
    assert (await admin.get(f"{versions}/{empty['id']}")).json()["body"] == "# Terms\n\nBe fair."

    # The next version is numbered after it; a draft can be deleted.
    draft = (await admin.post(versions, json={"body": "v2", "material": False})).json()
    assert draft["number"] == 2
    listed = await admin.get(versions)
    assert [v["number"] for v in listed.json()] == [2, 1]
    assert (await admin.delete(f"{versions}/{draft['id']}")).status_code == 204

    events = (await session.scalars(select(Event).where(Event.type == "agreement_version.published"))).all()
    assert [(e.subject_id, e.partner_id, e.data["object"]["number"]) for e in events] == [(empty["id"], None, 1)]


async def test_requirements_are_validated(admin: httpx.AsyncClient, factory) -> None:
    agreement = await _create(admin)
    url = f"{BASE}/{agreement['id']}/requirements"
    product = await factory.product()
    tier = await factory.tier()
    ok = [{"scope": "all"}, {"scope": "product", "product_id": str(product.id)},
          {"scope": "tier", "tier_id": str(tier.id)}, {"scope": "partner_type", "partner_type": "reseller"},
          {"scope": "stage", "stage_key": "terms_accepted"}]
    for body in ok:
        response = await admin.post(url, json=body)
        assert response.status_code == 201, response.text
    assert len((await admin.get(url)).json()) == 5

    cases = [
        ({"scope": "product"}, "product_id", "is required for scope product"),
        ({"scope": "product", "product_id": str(tier.id)}, "product_id", "no such product"),
        ({"scope": "tier", "tier_id": str(product.id)}, "tier_id", "no such tier"),
        ({"scope": "partner_type", "partner_type": "pirate"}, "partner_type", None),
        ({"scope": "stage", "stage_key": "nowhere"}, "stage_key", None),
        ({"scope": "all", "tier_id": str(tier.id)}, "tier_id", None),
        ({"scope": "galaxy"}, "scope", None),
    ]
    for body, field, reason in cases:
        response = await admin.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        errors = field_errors(response)
        assert field in errors, (body, errors)
        if reason:
            assert errors[field] == reason
    duplicate = await admin.post(url, json={"scope": "all"})
    assert duplicate.status_code == 409 and "scope" in field_errors(duplicate)

    first = (await admin.get(url)).json()[0]
    assert (await admin.get(f"{url}/{first['id']}")).json() == first
    assert (await admin.delete(f"{url}/{first['id']}")).status_code == 204
    assert (await admin.get(f"{url}/{first['id']}")).status_code == 404
    detail = await admin.get(f"{BASE}/{agreement['id']}")
    assert len(detail.json()["requirements"]) == 4


async def test_a_version_of_another_agreement_is_not_found(admin: httpx.AsyncClient) -> None:
    one, two = await _create(admin, "one"), await _create(admin, "two")
    version = (await admin.post(f"{BASE}/{one['id']}/versions", json={"body": "x"})).json()
    assert (await admin.get(f"{BASE}/{two['id']}/versions/{version['id']}")).status_code == 404
    assert (await admin.post(f"{BASE}/{two['id']}/versions/{version['id']}/publish")).status_code == 404


async def test_partner_managers_and_viewers(base_url: str, factory, admin: httpx.AsyncClient) -> None:
    agreement = await _create(admin)
    async with httpx.AsyncClient(base_url=base_url, headers=bearer(
            await factory.admin_token(StaffRole.partner_manager))) as manager:
        assert (await manager.get(BASE)).status_code == 200
        assert (await manager.post(BASE, json={"slug": "x", "title": "X"})).status_code == 403
        assert (await manager.post(f"{BASE}/{agreement['id']}/versions", json={"body": "x"})).status_code == 403
    async with httpx.AsyncClient(base_url=base_url, headers=bearer(
            await factory.admin_token(StaffRole.viewer))) as viewer:
        assert (await viewer.get(f"{BASE}/{agreement['id']}")).status_code == 200
        assert (await viewer.delete(f"{BASE}/{agreement['id']}")).status_code == 403
