"""Remediation from the integration audit: revoking stale credentials (events, audit, email) and
asking partners to accept agreements again. Same program as test_audit."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.apps.models import Credential
from accord.audit.models import AuditEntry
from accord.core.clock import clock
from accord.core.config import Settings
from accord.events.models import Event
from accord.notifications.models import EmailMessage
from accord.notifications.planning import queue_emails_for
from tests.factories import Factory
from tests.integrations.test_audit import AUDIT, NOW, build


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.resume()


@pytest.fixture
async def program(session: AsyncSession, factory: Factory, frozen: None) -> dict:
    return await build(session, factory)


async def _revoked(session: AsyncSession) -> set[str]:
    return {c.name for c in await session.scalars(select(Credential).where(Credential.revoked_at.is_not(None)))}


async def test_a_dry_run_lists_the_stale_credentials_and_revokes_nothing(admin: httpx.AsyncClient,
                                                                         session: AsyncSession, program: dict) -> None:
    response = await admin.post(f"{AUDIT}/revoke-stale", json={"dry_run": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["stale_credential_days"] == 90
    assert {(c["partner"], c["unused_days"]) for c in body["credentials"]} == {("stale", 100), ("stale", 95)}
    assert await _revoked(session) == {"revoked"}
    assert await session.scalar(select(Event.id).where(Event.type.like("credential.%revoked"))) is None


async def test_revoking_stale_credentials_revokes_only_those_audits_notifies_and_clears_the_flag(
        admin: httpx.AsyncClient, session: AsyncSession, settings: Settings, program: dict) -> None:
    response = await admin.post(f"{AUDIT}/revoke-stale", json={})
    assert response.status_code == 200, response.text
    ids = {c["credential_id"] for c in response.json()["credentials"]}
    stale_1, stale_partner = str(program["stale_1"].id), program["stale"].id
    assert ids == {stale_1, str(program["stale_2"].id)}
    session.expire_all()
    # The expired, the fresh and the closed partner's credentials are untouched.
    assert await _revoked(session) == {"revoked", "default", "never used"}
    for credential_id in ids:
        actions = list(await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == credential_id)
                                             .order_by(AuditEntry.seq)))
        assert actions == ["credential.revoked", "credential.stale_revoked"]
        types = set(await session.scalars(select(Event.type).where(Event.subject_id == credential_id)))
        assert types == {"credential.revoked", "credential.stale_revoked"}
    event = await session.scalar(select(Event).where(Event.type == "credential.stale_revoked",
                                                     Event.subject_id == stale_1))
    assert event.partner_id == stale_partner
    assert event.data["object"]["reason"] == "stale" and event.data["object"]["unused_days"] == 100
    assert event.data["actor"]["kind"] == "admin-token"

    # The notification dispatcher plans the partner's email from that event.
    assert await queue_emails_for(session, settings, event) >= 1
    mail = await session.scalar(select(EmailMessage).where(EmailMessage.event_id == event.id,
                                                           EmailMessage.to == "contact@stale.example"))
    assert mail.template == "credential_revoked" and "100 days" in mail.text_body

    again = (await admin.get(AUDIT, params={"flag": "stale-credential"})).json()
    assert again["total"] == 0
    assert (await admin.post(f"{AUDIT}/revoke-stale")).json()["credentials"] == []  # the body is optional


async def test_revoking_for_one_partner(admin: httpx.AsyncClient, session: AsyncSession, program: dict) -> None:
    body = (await admin.post(f"{AUDIT}/revoke-stale", json={"partner_id": str(program["clean"].id)})).json()
    assert body["credentials"] == []
    assert await _revoked(session) == {"revoked"}


async def test_requesting_reacceptance(admin: httpx.AsyncClient, session: AsyncSession, program: dict) -> None:
    dry = (await admin.post(f"{AUDIT}/request-reacceptance", json={"dry_run": True})).json()
    assert [(r["partner"], r["agreement"], r["state"]) for r in dry["requests"]] == \
        [("unsigned", "reseller-terms", "missing")]
    assert await session.scalar(select(Event.id).where(Event.type == "agreement.reacceptance_requested")) is None

    response = await admin.post(f"{AUDIT}/request-reacceptance")  # no body: every partner
    assert response.status_code == 200, response.text
    assert len(response.json()["requests"]) == 1
    events = list(await session.scalars(select(Event).where(Event.type == "agreement.reacceptance_requested")))
    assert [e.partner_id for e in events] == [program["unsigned"].id]
    assert await session.scalar(select(AuditEntry.seq).where(
        AuditEntry.action == "agreement.reacceptance_requested", AuditEntry.partner_id == program["unsigned"].id))

    other = await admin.post(f"{AUDIT}/request-reacceptance", json={"partner_id": str(program["clean"].id)})
    assert other.json()["requests"] == []


async def test_remediation_refuses_unknown_fields(admin: httpx.AsyncClient) -> None:
    response = await admin.post(f"{AUDIT}/revoke-stale", json={"dryrun": True})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "dryrun"
