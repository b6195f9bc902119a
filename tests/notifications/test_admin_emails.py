"""The outbox in the admin API: lists, filters, tokens shown only to owners and admins, retrying failures."""
from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from accord.notifications.models import EmailStatus
from accord.notifications.service import queue_email
from accord.users.models import StaffRole

TOKEN = "acc_inv_" + "Zq7" * 13 + "x"


async def _invitation(session: AsyncSession, to: str = "bob@example.com"):
    message = await queue_email(session, to=to, template="invitation", context={
        "program_name": "P", "base_url": "https://p.example", "partner_name": "Acme", "role": "developer",
        "inviter": "ann@acme.example", "email": to, "token": TOKEN, "expires_at": "2026-12-01T00:00:00Z",
        "accept_url": "https://p.example/api/invitations/accept"})
    await session.flush()
    return message


async def _client(admin: httpx.AsyncClient, factory, role: StaffRole) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=admin.base_url, timeout=30,
                             headers={"Authorization": f"Bearer {await factory.admin_token(role)}"})


async def test_owners_and_admins_see_tokens_other_roles_see_them_redacted(admin: httpx.AsyncClient, factory,
                                                                         session: AsyncSession) -> None:
    message = await _invitation(session)
    shown = (await admin.get(f"/admin/api/emails/{message.id}")).json()
    assert shown["redacted"] is False and TOKEN in shown["text_body"] and TOKEN in shown["html_body"]
    for role, sees in [(StaffRole.admin, True), (StaffRole.partner_manager, False), (StaffRole.viewer, False)]:
        async with await _client(admin, factory, role) as client:
            body = (await client.get(f"/admin/api/emails/{message.id}")).json()
        assert body["redacted"] is not sees
        assert (TOKEN in body["text_body"] + body["html_body"]) is sees, role
        if not sees:
            assert "acc_inv_…redacted" in body["text_body"] and "acc_inv_…redacted" in body["html_body"]
            assert body["subject"] == shown["subject"]


async def test_the_list_filters_and_leaves_bodies_out(admin: httpx.AsyncClient, session: AsyncSession) -> None:
    first = await _invitation(session, "bob@example.com")
    await _invitation(session, "carol@example.com")
    first.status = EmailStatus.sent
    await session.flush()

    everything = (await admin.get("/admin/api/emails")).json()
    assert everything["total"] == 2 and "text_body" not in everything["items"][0]
    assert all(TOKEN not in str(item) for item in everything["items"])
    by_address = (await admin.get("/admin/api/emails", params={"to": "Bob@Example.com"})).json()["items"]
    assert [m["id"] for m in by_address] == [str(first.id)]
    queued = (await admin.get("/admin/api/emails", params={"status": "queued"})).json()["items"]
    assert [m["to"] for m in queued] == ["carol@example.com"]
    assert (await admin.get("/admin/api/emails", params={"template": "password_reset"})).json()["total"] == 0
    assert (await admin.get("/admin/api/emails", params={"status": "lost"})).status_code == 422
    missing = await admin.get("/admin/api/emails/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


async def test_a_failed_email_can_be_queued_again_by_an_admin(admin: httpx.AsyncClient, factory,
                                                              session: AsyncSession) -> None:
    message = await _invitation(session)
    not_failed = await admin.post(f"/admin/api/emails/{message.id}/retry")
    assert not_failed.status_code == 409 and not_failed.json()["errors"][0]["field"] == "status"

    message.status, message.attempts, message.last_error = EmailStatus.failed, 10, "421 try later"
    await session.flush()
    async with await _client(admin, factory, StaffRole.partner_manager) as manager:
        assert (await manager.post(f"/admin/api/emails/{message.id}/retry")).status_code == 403
    retried = await admin.post(f"/admin/api/emails/{message.id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued" and retried.json()["attempts"] == 0
    audit = (await admin.get("/admin/api/audit", params={"action": "email.retried"})).json()["items"]
    assert audit[0]["target_id"] == str(message.id) and TOKEN not in str(audit)
