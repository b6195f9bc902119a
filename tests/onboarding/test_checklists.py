"""Checklists: items per tier or partner type, evidence (text, link, file) from the partner, checks by staff."""
from __future__ import annotations

import uuid

from accord.partners.models import PartnerType
from tests.onboarding.helpers import error_fields, team


async def _item(admin, **body) -> dict:
    body.setdefault("label", "Integration plan")
    answer = await admin.post("/admin/api/checklist-items", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_items_apply_by_tier_and_partner_type(admin, anon, factory) -> None:
    gold = await factory.tier("Gold")
    everyone = await _item(admin, label="Contact named")
    for_gold = await _item(admin, label="Training done", tier_id=str(gold.id))
    for_resellers = await _item(admin, label="Reseller addendum", partner_type="reseller")
    both = await _item(admin, label="Gold reseller plan", tier_id=str(gold.id), partner_type="reseller")
    gold_reseller, gold_headers, _ = await team(factory, tier_id=gold.id, type=PartnerType.reseller)
    plain, plain_headers, _ = await team(factory, type=PartnerType.technology)

    def labels(answer) -> set[str]:
        assert answer.status_code == 200, answer.text
        return {line["label"] for line in answer.json()}

    assert labels(await anon.get(f"/api/partners/{gold_reseller.id}/checklist", headers=gold_headers)) == {
        everyone["label"], for_gold["label"], for_resellers["label"], both["label"]}
    assert labels(await anon.get(f"/api/partners/{plain.id}/checklist", headers=plain_headers)) == {
        everyone["label"]}
    # An item that is not on the partner's checklist is "not found" for it, like a random id.
    for item_id in (for_gold["id"], str(uuid.uuid4())):
        answer = await anon.put(f"/api/partners/{plain.id}/checklist/{item_id}", headers=plain_headers,
                                json={"text": "x"})
        assert answer.status_code == 404
    bad = await admin.post("/admin/api/checklist-items", json={"label": "x", "tier_id": str(uuid.uuid4())})
    assert bad.status_code == 422 and "tier_id" in error_fields(bad)
    bad = await admin.post("/admin/api/checklist-items", json={"label": "x", "evidence_kind": "video"})
    assert bad.status_code == 422 and "evidence_kind" in error_fields(bad)

    changed = await admin.patch(f"/admin/api/checklist-items/{everyone['id']}", json={"label": "Contact"})
    assert changed.status_code == 200 and changed.json()["label"] == "Contact"
    assert (await admin.delete(f"/admin/api/checklist-items/{for_resellers['id']}")).status_code == 204
    assert (await admin.get(f"/admin/api/checklist-items/{for_resellers['id']}")).status_code == 404


async def test_evidence_is_what_the_item_asks_for_and_staff_check_it(admin, anon, factory) -> None:
    text_item = await _item(admin, label="Use case", evidence_kind="text")
    link_item = await _item(admin, label="Status page", evidence_kind="link")
    partner, headers, email = await team(factory)
    base = f"/api/partners/{partner.id}/checklist"

    wrong = await anon.put(f"{base}/{text_item['id']}", headers=headers, json={"link": "https://x.example"})
    assert wrong.status_code == 422 and "link" in error_fields(wrong)
    not_a_link = await anon.put(f"{base}/{link_item['id']}", headers=headers, json={"link": "ftp://x"})
    assert not_a_link.status_code == 422 and "link" in error_fields(not_a_link)
    empty = await anon.put(f"{base}/{text_item['id']}", headers=headers, json={})
    assert empty.status_code == 422 and "text" in error_fields(empty)

    sent = await anon.put(f"{base}/{link_item['id']}", headers=headers, json={"link": "https://status.example"})
    assert sent.status_code == 200, sent.text
    assert sent.json()["link"] == "https://status.example" and sent.json()["submitted_at"]
    assert "submitted_by" not in sent.json()

    checked = await admin.post(f"/admin/api/partners/{partner.id}/checklist/{link_item['id']}/check")
    assert checked.status_code == 200, checked.text
    assert checked.json()["checked_at"] and checked.json()["checked_by"] and checked.json()["submitted_by"] == email
    mine = (await anon.get(base, headers=headers)).json()
    assert next(line for line in mine if line["item_id"] == link_item["id"])["checked_at"]
    again = await admin.post(f"/admin/api/partners/{partner.id}/checklist/{link_item['id']}/check")
    assert (again.json()["checked_at"], again.json()["checked_by"]) == \
        (checked.json()["checked_at"], checked.json()["checked_by"])  # the first check is kept

    # New evidence needs a new look; staff may uncheck too.
    resent = await anon.put(f"{base}/{link_item['id']}", headers=headers, json={"link": "https://status2.example"})
    assert resent.json()["checked_at"] is None
    await admin.post(f"/admin/api/partners/{partner.id}/checklist/{link_item['id']}/check")
    unchecked = await admin.post(f"/admin/api/partners/{partner.id}/checklist/{link_item['id']}/uncheck")
    assert unchecked.json()["checked_at"] is None and unchecked.json()["checked_by"] == ""

    actions = [e["action"] for e in (await admin.get("/admin/api/audit",
                                                    params={"partner_id": str(partner.id)})).json()["items"]]
    assert {"checklist.submitted", "checklist.checked", "checklist.unchecked"} <= set(actions)
    steps = (await anon.get(f"/api/partners/{partner.id}/onboarding", headers=headers)).json()["next_steps"]
    assert {s["title"] for s in steps if s["kind"] == "checklist"} == {"Use case", "Status page"}


async def test_file_evidence_is_kept_in_the_database_and_downloaded_by_both_sides(admin, anon, factory) -> None:
    item = await _item(admin, label="Signed NDA", evidence_kind="file")
    partner, headers, _ = await team(factory)
    other, other_headers, _ = await team(factory)
    url = f"/api/partners/{partner.id}/checklist/{item['id']}/file"
    content = b"%PDF-1.7 signed" + bytes(range(256)) * 100

    assert (await anon.get(url, headers=headers)).status_code == 404  # nothing sent yet
    as_text = await anon.put(f"/api/partners/{partner.id}/checklist/{item['id']}", headers=headers,
                             json={"text": "see attachment"})
    assert as_text.status_code == 422 and "text" in error_fields(as_text)
    sent = await anon.put(url, headers=headers, files={"file": ("nda.pdf", content, "application/pdf")})
    assert sent.status_code == 200, sent.text
    assert sent.json()["file_name"] == "nda.pdf" and sent.json()["file_size"] == len(content)

    for client_url, client_headers in ((url, headers),
                                       (f"/admin/api/partners/{partner.id}/checklist/{item['id']}/file", {})):
        downloaded = await (admin if not client_headers else anon).get(client_url, headers=client_headers)
        assert downloaded.status_code == 200, downloaded.text
        assert downloaded.content == content
        assert downloaded.headers["content-disposition"].startswith("attachment;")
        assert downloaded.headers["x-content-type-options"] == "nosniff"

    # Another partner sees only its own (empty) line, and never this file.
    assert (await anon.get(f"/api/partners/{other.id}/checklist/{item['id']}/file",
                           headers=other_headers)).status_code == 404
    assert (await anon.get(url, headers=other_headers)).status_code == 404

    too_big = await anon.put(url, headers=headers,
                             files={"file": ("big.bin", b"x" * (5 * 1024 * 1024 + 1), "application/octet-stream")})
    assert too_big.status_code == 422 and "file" in error_fields(too_big)
    still = await anon.get(url, headers=headers)
    assert still.content == content
