"""Partners read the agreements binding them and accept them; what they accept is evidence."""
from __future__ import annotations

import httpx
import pytest
from sqlalchemy import delete, select, update

from accord.agreements.models import AgreementAcceptance, ImmutableAcceptance, RequirementScope
from accord.events.models import Event
from accord.teams.models import MemberRole
from tests.agreements.helpers import accepted, agreement, bearer, field_errors, partner_admin


async def test_partner_reads_and_accepts_the_current_version(anon: httpx.AsyncClient, factory, session) -> None:
    partner, headers = await partner_admin(factory)
    terms, (v1, v2) = await agreement(session, published=[{}, {"changes_summary": "New retention rules"}],
                                      scope=RequirementScope.all)
    await agreement(session, "reseller-addendum", "Reseller addendum", published=[{}],
                    scope=RequirementScope.partner_type, partner_type="reseller")  # binds someone else
    await accepted(session, partner, v1)
    base = f"/api/partners/{partner.id}/agreements"

    listed = await anon.get(base, headers=headers)
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert (item["slug"], item["state"], item["version_number"], item["accepted_version_number"],
            item["reasons"]) == ("terms", "overdue", 2, 1, ["all"])
    assert item["current_version"]["number"] == 2 and item["current_version"]["body"] == "# API Terms v2"
    assert item["current_version"]["changes_summary"] == "New retention rules"

    # Accepting a stale version (the one read before a newer one was published) is refused.
    stale = await anon.post(f"{base}/{terms.id}/accept", json={"version_id": str(v1.id)}, headers=headers)
    assert stale.status_code == 409 and "version_id" in field_errors(stale)

    response = await anon.post(f"{base}/{terms.id}/accept", json={"version_id": str(v2.id)},
                               headers={**headers, "User-Agent": "AcmeBrowser/1.0"})
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "accepted" and response.json()["due_at"] is None
    again = await anon.post(f"{base}/{terms.id}/accept", headers=headers)  # no body: the current version
    assert again.status_code == 200 and again.json()["state"] == "accepted"

    rows = (await session.scalars(select(AgreementAcceptance).where(
        AgreementAcceptance.partner_id == partner.id, AgreementAcceptance.version_id == v2.id))).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.ip_address, row.user_agent, row.source.value) == ("127.0.0.1", "AcmeBrowser/1.0", "partner")
    assert row.user_id is not None and row.accepted_by.endswith("@example.com")
    events = (await session.scalars(select(Event).where(Event.type == "agreement.accepted"))).all()
    assert [(e.partner_id, e.data["object"]["version_id"]) for e in events] == [(partner.id, str(v2.id))]

    history = await anon.get(f"{base}/acceptances", headers=headers)
    assert [(h["version_number"], h["agreement_slug"], h["source"]) for h in history.json()["items"]] == \
        [(2, "terms", "partner"), (1, "terms", "import")]

    # The acceptance is immutable evidence: the ORM refuses to change or delete it.
    row.note = "tampered"
    with pytest.raises(ImmutableAcceptance):
        await session.flush()
    await session.rollback()


async def test_deleting_an_acceptance_is_refused(factory, session) -> None:
    partner = await factory.partner()
    _, (v1,) = await agreement(session, published=[{}], scope=RequirementScope.all)
    row = await accepted(session, partner, v1)
    for statement in (update(AgreementAcceptance).values(note="x"), delete(AgreementAcceptance)):
        with pytest.raises(ImmutableAcceptance):
            await session.execute(statement)
    await session.delete(row)
    with pytest.raises(ImmutableAcceptance):
        await session.flush()
    await session.rollback()


async def test_only_partner_admins_accept_and_unbound_agreements_are_not_found(anon, factory, session) -> None:
    partner, headers = await partner_admin(factory, type="developer")
    _, developer_token = await factory.member(partner, MemberRole.developer)
    terms, _ = await agreement(session, published=[{}], scope=RequirementScope.all)
    addendum, _ = await agreement(session, "reseller", "Reseller addendum", published=[{}],
                                  scope=RequirementScope.partner_type, partner_type="reseller")
    draft_only, _ = await agreement(session, "draft", "Draft only", scope=RequirementScope.all)
    base = f"/api/partners/{partner.id}/agreements"

    assert (await anon.get(f"{base}/{terms.id}", headers=bearer(developer_token))).status_code == 200
    assert (await anon.post(f"{base}/{terms.id}/accept", headers=bearer(developer_token))).status_code == 403
    for other in (addendum, draft_only):
        assert (await anon.get(f"{base}/{other.id}", headers=headers)).status_code == 404
        assert (await anon.post(f"{base}/{other.id}/accept", headers=headers)).status_code == 404
    assert [a["slug"] for a in (await anon.get(base, headers=headers)).json()["items"]] == ["terms"]


async def test_product_agreements_bind_subscribers(anon, factory, session) -> None:
    product = await factory.product(slug="maps")
    plan = await factory.plan(product)
    partner, headers = await partner_admin(factory)
    await agreement(session, "maps-terms", "Maps terms", published=[{}], scope=RequirementScope.product,
                    product_id=product.id)
    base = f"/api/partners/{partner.id}/agreements"
    assert (await anon.get(base, headers=headers)).json()["items"] == []
    await factory.subscription(partner, plan)
    [item] = (await anon.get(base, headers=headers)).json()["items"]
    assert item["reasons"] == ["product:maps"]
