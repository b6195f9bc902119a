"""A decided production access request refuses another decision in plain words, naming its state."""
from __future__ import annotations

from tests.onboarding.helpers import error_fields, team


async def test_a_decided_request_says_what_it_is(anon, admin, factory) -> None:
    product = await factory.product(await factory.api())
    plan = await factory.plan(product, slug="basic")
    partner, headers, _ = await team(factory)
    created = await anon.post(f"/api/partners/{partner.id}/production-access-requests", headers=headers,
                              json={"use_case": "Sync orders", "product_id": str(product.id)})
    assert created.status_code == 201, created.text
    base = f"/admin/api/production-access-requests/{created.json()['id']}"
    assert (await admin.post(f"{base}/approve", json={"plan_id": str(plan.id)})).status_code == 200
    again = await admin.post(f"{base}/reject", json={"reason": "changed our mind"})
    assert again.status_code == 409
    assert again.json()["detail"] == "an approved request cannot be rejected"
    assert error_fields(again) == {"state": "is approved"}
    back = await admin.post(f"{base}/request-changes", json={"reason": "more detail"})
    assert back.json()["detail"] == "an approved request cannot be sent back for changes"
