"""Staff write, publish, edit, archive and delete announcements over the admin API."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jsonschema
from sqlalchemy import select

from accord.core.clock import clock
from accord.events.catalog import EVENT_TYPES, payload_schema
from accord.events.models import Event
from accord.events.service import envelope
from accord.users.models import StaffRole
from tests.announcements.helpers import archive, create, publish, published
from tests.factories import Factory

BASE = "/admin/api/announcements"


async def test_a_draft_is_written_published_edited_and_archived(admin: httpx.AsyncClient, factory: Factory) -> None:
    gold = await factory.tier("Gold")
    draft = await create(admin, "Spring release", body="# New\n\n* faster & <safer>", tier_ids=[str(gold.id)],
                         partner_types=["agency", "agency"], audiences=["partner"])
    assert draft["status"] == "draft" and draft["published_at"] is None
    assert draft["body"] == "# New\n\n* faster & <safer>"  # Markdown stored as given
    assert draft["tier_ids"] == [str(gold.id)]
    assert draft["partner_types"] == ["agency"]  # duplicates dropped
    assert draft["author"].startswith("token ")

    # A draft can change anything, its audience included.
    changed = await admin.patch(f"{BASE}/{draft['id']}", json={"partner_types": [], "title": "Spring release 2"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["partner_types"] == [] and changed.json()["title"] == "Spring release 2"

    published_at = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
    try:
        clock.freeze(published_at)
        live = await publish(admin, draft)
        clock.freeze(published_at + timedelta(hours=2))
        edited = await admin.patch(f"{BASE}/{draft['id']}", json={"body": "Fixed a typo."})
    finally:
        clock.resume()
    assert live["status"] == "published"
    assert datetime.fromisoformat(live["published_at"]) == published_at
    # Published announcements can still be edited; updated_at says when.
    assert edited.status_code == 200, edited.text
    assert edited.json()["body"] == "Fixed a typo."
    assert datetime.fromisoformat(edited.json()["published_at"]) == published_at
    assert datetime.fromisoformat(edited.json()["updated_at"]) == published_at + timedelta(hours=2)

    # ...but not whom it is for: the event and the emails have said that already.
    retarget = await admin.patch(f"{BASE}/{draft['id']}", json={"tier_ids": [], "audiences": ["partner"]})
    assert retarget.status_code == 409 and retarget.json()["type"] == "/problems/invalid-state"
    assert [e["field"] for e in retarget.json()["errors"]] == ["tier_ids"]  # audiences is unchanged, so allowed
    again = await admin.post(f"{BASE}/{draft['id']}/publish")
    assert again.status_code == 409 and again.json()["type"] == "/problems/invalid-state"
    assert (await admin.delete(f"{BASE}/{draft['id']}")).status_code == 409

    archived = await archive(admin, draft)
    assert archived["status"] == "archived" and archived["archived_at"] is not None
    assert (await admin.post(f"{BASE}/{draft['id']}/archive")).status_code == 409
    frozen = await admin.patch(f"{BASE}/{draft['id']}", json={"title": "Too late"})
    assert frozen.status_code == 409 and frozen.json()["type"] == "/problems/invalid-state"
    assert (await admin.get(f"{BASE}/{draft['id']}")).json()["title"] == "Spring release 2"

    audit = (await admin.get("/admin/api/audit", params={"target_id": draft["id"]})).json()["items"]
    assert [e["action"] for e in audit] == ["announcement.archived", "announcement.updated",
                                            "announcement.published", "announcement.updated", "announcement.created"]
    assert audit[-1]["actor_label"] == draft["author"]


async def test_drafts_can_be_deleted(admin: httpx.AsyncClient) -> None:
    draft = await create(admin, "Oops")
    assert (await admin.delete(f"{BASE}/{draft['id']}")).status_code == 204
    gone = await admin.get(f"{BASE}/{draft['id']}")
    assert gone.status_code == 404 and gone.json()["type"] == "/problems/not-found"
    assert (await admin.post(f"{BASE}/{draft['id']}/publish")).status_code == 404


async def test_list_filters_by_status_and_search(admin: httpx.AsyncClient) -> None:
    await create(admin, "Maintenance window", body="Saturday night")
    live = await published(admin, "New payments API", body="Refunds are **here**")
    gone = await archive(admin, await published(admin, "Old news"))

    everything = (await admin.get(BASE)).json()
    assert everything["total"] == 3
    assert [a["title"] for a in everything["items"]] == ["Old news", "New payments API", "Maintenance window"]
    by_status = {s: [a["id"] for a in (await admin.get(BASE, params={"status": s})).json()["items"]]
                 for s in ("draft", "published", "archived")}
    assert by_status["published"] == [live["id"]] and by_status["archived"] == [gone["id"]]
    assert len(by_status["draft"]) == 1
    assert [a["id"] for a in (await admin.get(BASE, params={"q": "REFUNDS"})).json()["items"]] == [live["id"]]
    assert [a["title"] for a in (await admin.get(BASE, params={"q": "window"})).json()["items"]] == [
        "Maintenance window"]
    assert (await admin.get(BASE, params={"q": "%"})).json()["total"] == 0  # a literal %, not a wildcard
    assert (await admin.get(BASE, params={"status": "gone"})).status_code == 422


async def test_invalid_input_names_the_field(admin: httpx.AsyncClient, factory: Factory) -> None:
    tier = await factory.tier()
    unknown = "00000000-0000-4000-8000-000000000000"
    bad_tier = await admin.post(BASE, json={"title": "T", "tier_ids": [str(tier.id), unknown]})
    assert bad_tier.status_code == 422
    assert bad_tier.json()["errors"] == [{"field": "tier_ids.1", "reason": f"no tier {unknown!r}"}]

    bad = await admin.post(BASE, json={"title": " ", "body": "bell \x07", "partner_types": ["pirate"],
                                       "audiences": ["everyone"], "pinned": True})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in bad.json()["errors"]} == {"title", "body", "partner_types.0", "audiences.0", "pinned"}

    draft = await create(admin, "Fine")
    null = await admin.patch(f"{BASE}/{draft['id']}", json={"title": None})
    assert null.status_code == 422 and null.json()["errors"][0]["field"] == "title"
    retier = await admin.patch(f"{BASE}/{draft['id']}", json={"tier_ids": [unknown]})
    assert retier.status_code == 422 and retier.json()["errors"][0]["field"] == "tier_ids.0"


async def test_viewers_read_but_do_not_write(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                             factory: Factory) -> None:
    draft = await create(admin, "Staff only")
    viewer = {"Authorization": f"Bearer {await factory.admin_token(StaffRole.viewer)}"}
    assert (await anon.get(f"{BASE}/{draft['id']}", headers=viewer)).status_code == 200
    assert (await anon.post(BASE, json={"title": "No"}, headers=viewer)).status_code == 403
    assert (await anon.post(f"{BASE}/{draft['id']}/publish", headers=viewer)).status_code == 403
    assert (await anon.get(BASE)).status_code == 401


async def test_publishing_emits_an_event_carrying_the_audience_filter(admin: httpx.AsyncClient, factory: Factory,
                                                                      session) -> None:
    gold = await factory.tier("Gold")
    draft = await create(admin, "Gold news", tier_ids=[str(gold.id)], partner_types=["reseller"],
                         audiences=["partner", "internal"])
    events = (await admin.get("/admin/api/events", params={"type": "announcement.published"})).json()["items"]
    assert events == []  # writing a draft announces nothing

    await publish(admin, draft)
    events = (await admin.get("/admin/api/events", params={"type": "announcement.published"})).json()["items"]
    assert len(events) == 1
    event = events[0]
    assert event["partner_id"] is None and event["subject_id"] == draft["id"]
    announced = event["data"]["object"]
    assert (announced["tier_ids"], announced["partner_types"], announced["audiences"]) == (
        [str(gold.id)], ["reseller"], ["partner", "internal"])
    assert announced["status"] == "published" and announced["title"] == "Gold news"
    assert event["data"]["changes"]["status"] == ["draft", "published"]

    row = await session.scalar(select(Event).where(Event.id == event["id"]))
    jsonschema.validate(envelope(row), payload_schema(EVENT_TYPES["announcement.published"]))
    catalog = (await admin.get("/admin/api/event-types/announcement.published")).json()
    assert "tier_ids" in catalog["payload_schema"]["properties"]["data"]["properties"]["object"]["properties"]
