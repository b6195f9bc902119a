"""Changes become events in the same transaction, described by the catalog's schemas."""
from __future__ import annotations

import httpx
import jsonschema

from accord.events.catalog import EVENT_TYPES, payload_schema
from accord.events.service import envelope
from accord.events.models import Event
from sqlalchemy import select


async def test_a_change_and_its_event_commit_together(admin: httpx.AsyncClient, session) -> None:
    created = await admin.post("/admin/api/partners", json={"name": "Acme", "slug": "acme", "type": "technology"})
    assert created.status_code == 201, created.text
    partner = created.json()
    await admin.patch(f"/admin/api/partners/{partner['id']}", json={"contact_name": "Ann"})
    refused = await admin.patch(f"/admin/api/partners/{partner['id']}", json={"contact_email": "not an email"})
    assert refused.status_code == 422

    events = (await admin.get("/admin/api/events", params={"partner_id": partner["id"]})).json()["items"]
    assert [e["type"] for e in events] == ["partner.updated", "partner.created"]  # nothing for the refused change
    updated, first = events
    assert first["data"]["object"]["slug"] == "acme" and first["partner_id"] == partner["id"]
    assert updated["data"]["changes"] == {"contact_name": ["", "Ann"]}
    assert updated["data"]["actor"]["kind"] == "admin-token"
    assert first["seq"] < updated["seq"]

    for row in (await session.scalars(select(Event))).all():
        jsonschema.validate(envelope(row), payload_schema(EVENT_TYPES[row.type]))


async def test_the_catalog_documents_every_type(admin: httpx.AsyncClient) -> None:
    catalog = (await admin.get("/admin/api/event-types")).json()
    names = {t["name"] for t in catalog}
    assert {"partner.created", "member.invited", "application.suspended", "credential.rotated",
            "subscription.requested", "usage.first_call.production"} <= names
    one = (await admin.get("/admin/api/event-types/credential.revoked")).json()
    assert "key_hash" not in one["payload_schema"]["properties"]["data"]["properties"]["object"]["properties"]
    assert (await admin.get("/admin/api/event-types/nope")).status_code == 404


async def test_partners_see_only_their_own_events(anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory) -> None:
    mine, theirs = await factory.partner(), await factory.partner()
    _, token = await factory.member(mine)
    for partner in (mine, theirs):
        app = await admin.post("/admin/api/applications", json={"partner_id": str(partner.id), "name": "App",
                                                                "environment": "sandbox"})
        assert app.status_code == 201, app.text
    seen = (await anon.get(f"/api/partners/{mine.id}/events", headers={"Authorization": f"Bearer {token}"})).json()
    assert [e["type"] for e in seen["items"]] == ["application.created"]
    assert all(e["partner_id"] == str(mine.id) for e in seen["items"])
    other = await anon.get(f"/api/partners/{theirs.id}/events", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 404


async def test_events_never_carry_staff_only_fields(admin: httpx.AsyncClient) -> None:
    field = await admin.post("/admin/api/custom-fields", json={"target": "partner", "key": "crm", "label": "CRM",
                                                               "hidden": True})
    assert field.status_code == 201, field.text
    await admin.post("/admin/api/custom-fields", json={"target": "partner", "key": "region", "label": "Region"})
    partner = (await admin.post("/admin/api/partners", json={
        "name": "Acme", "slug": "acme", "type": "technology", "notes": "difficult customer", "status": "active",
        "custom_fields": {"crm": "ACC-1", "region": "emea"}})).json()
    suspended = await admin.post(f"/admin/api/partners/{partner['id']}/suspend", json={"reason": "unpaid invoices"})
    assert suspended.status_code == 200, suspended.text
    events = (await admin.get("/admin/api/events", params={"partner_id": partner["id"]})).json()["items"]
    assert [e["type"] for e in events] == ["partner.suspended", "partner.created"], events
    text = str(events)
    assert "difficult customer" not in text and "unpaid invoices" not in text and "ACC-1" not in text
    assert events[1]["data"]["object"]["custom_fields"] == {"region": "emea"}
