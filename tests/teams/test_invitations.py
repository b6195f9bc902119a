"""Invitations over real HTTP: invite, accept (new or signed-in account), single use, expiry, revocation."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import clock
from accord.core.config import Settings
from accord.core.security import keyed_hash
from accord.teams.models import Invitation, MemberRole
from tests.factories import PASSWORD, Factory

NEW_PASSWORD = "welcome aboard 42"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _team_with_admin(factory: Factory) -> tuple[object, dict[str, str]]:
    partner = await factory.partner()
    _, token = await factory.member(partner, MemberRole.partner_admin)
    return partner, bearer(token)


async def _invite(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None,
                  **body: object) -> dict:
    answer = await client.post(path, headers=headers or {}, json={"email": "new@example.com", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_invite_accept_as_new_user_login_and_see_membership(
        anon: httpx.AsyncClient, factory: Factory, settings: Settings) -> None:
    partner, headers = await _team_with_admin(factory)
    base = f"/api/partners/{partner.id}/invitations"

    invitation = await _invite(anon, base, headers, email="New@Example.com", role="developer")
    assert invitation["token"].startswith("acc_inv_")
    assert invitation["email"] == "new@example.com" and invitation["status"] == "pending"
    assert invitation["accept_path"] == "/api/invitations/accept"
    expires = datetime.fromisoformat(invitation["expires_at"])
    created = datetime.fromisoformat(invitation["created_at"])
    assert abs(expires - created - timedelta(days=settings.invitation_days)) < timedelta(seconds=5)
    # The token is shown once: never in a listing.
    listed = await anon.get(base, headers=headers)
    assert listed.json()["items"][0]["id"] == invitation["id"]
    assert "token" not in listed.json()["items"][0] and invitation["token"] not in listed.text

    accepted = await anon.post("/api/invitations/accept", json={"token": invitation["token"], "name": "Nia New",
                                                                "password": NEW_PASSWORD})
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["membership"] == {"partner_id": str(partner.id), "partner_name": partner.name,
                                  "partner_slug": partner.slug, "role": "developer"}
    assert body["user"]["email"] == "new@example.com" and body["user"]["email_verified_at"] is not None
    assert body["token"].startswith("acc_sess_")
    assert (await anon.get("/api/me", headers=bearer(body["token"]))).status_code == 200

    login = await anon.post("/api/auth/login", json={"email": "new@example.com", "password": NEW_PASSWORD})
    assert login.status_code == 200
    me = (await anon.get("/api/me", headers=bearer(login.json()["token"]))).json()
    assert me["name"] == "Nia New" and me["memberships"] == [body["membership"]]
    team = await anon.get(f"/api/partners/{partner.id}/members", headers=bearer(login.json()["token"]))
    assert team.status_code == 200 and team.json()["total"] == 2

    after = (await anon.get(base, headers=headers)).json()["items"][0]
    assert after["status"] == "accepted" and after["accepted_at"] is not None


async def test_a_token_works_once(anon: httpx.AsyncClient, factory: Factory) -> None:
    partner, headers = await _team_with_admin(factory)
    token = (await _invite(anon, f"/api/partners/{partner.id}/invitations", headers))["token"]
    first = await anon.post("/api/invitations/accept", json={"token": token, "name": "A", "password": NEW_PASSWORD})
    assert first.status_code == 200
    again = await anon.post("/api/invitations/accept", json={"token": token, "name": "B", "password": NEW_PASSWORD})
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/invalid-state"
    assert again.json()["errors"] == [{"field": "token", "reason": "has already been used"}]
    # Nor can the new account use it again while signed in.
    signed_in = await anon.post("/api/invitations/accept", headers=bearer(first.json()["token"]),
                                json={"token": token})
    assert signed_in.status_code == 409

    unknown = await anon.post("/api/invitations/accept", json={"token": "acc_inv_madeup", "name": "C",
                                                               "password": NEW_PASSWORD})
    assert unknown.status_code == 404 and unknown.json()["type"] == "/problems/not-found"


async def test_invitations_expire(anon: httpx.AsyncClient, admin: httpx.AsyncClient, factory: Factory) -> None:
    partner = await factory.partner()
    early = await _invite(admin, f"/admin/api/partners/{partner.id}/invitations", email="early@example.com")
    late = await _invite(admin, f"/admin/api/partners/{partner.id}/invitations", email="late@example.com")
    expires_at = datetime.fromisoformat(late["expires_at"])
    try:
        clock.freeze(expires_at - timedelta(minutes=1))
        just_in_time = await anon.post("/api/invitations/accept", json={"token": early["token"], "name": "E",
                                                                        "password": NEW_PASSWORD})
        assert just_in_time.status_code == 200, just_in_time.text

        clock.freeze(expires_at + timedelta(seconds=1))
        too_late = await anon.post("/api/invitations/accept", json={"token": late["token"], "name": "L",
                                                                    "password": NEW_PASSWORD})
        assert too_late.status_code == 409
        assert too_late.json()["errors"] == [{"field": "token", "reason": "has expired"}]
        statuses = {i["email"]: i["status"] for i in (await admin.get(
            f"/admin/api/partners/{partner.id}/invitations")).json()["items"]}
        assert statuses == {"early@example.com": "accepted", "late@example.com": "expired"}
        expired = (await admin.get(f"/admin/api/partners/{partner.id}/invitations",
                                   params={"status": "expired"})).json()["items"]
        assert [i["id"] for i in expired] == [late["id"]]
        # An expired invitation no longer blocks a new one to the same email.
        await _invite(admin, f"/admin/api/partners/{partner.id}/invitations", email="late@example.com")
    finally:
        clock.resume()


async def test_revoked_invitations_cannot_be_accepted(anon: httpx.AsyncClient, factory: Factory) -> None:
    partner, headers = await _team_with_admin(factory)
    base = f"/api/partners/{partner.id}/invitations"
    invitation = await _invite(anon, base, headers)
    revoked = await anon.post(f"{base}/{invitation['id']}/revoke", headers=headers)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert (await anon.post(f"{base}/{invitation['id']}/revoke", headers=headers)).json()["status"] == "revoked"

    refused = await anon.post("/api/invitations/accept", json={"token": invitation["token"], "name": "R",
                                                               "password": NEW_PASSWORD})
    assert refused.status_code == 409 and refused.json()["errors"][0]["reason"] == "was revoked"

    # A revoked invitation can be replaced; an accepted one cannot be revoked.
    fresh = await _invite(anon, base, headers)
    assert (await anon.post("/api/invitations/accept", json={"token": fresh["token"], "name": "R",
                                                             "password": NEW_PASSWORD})).status_code == 200
    late_revoke = await anon.post(f"{base}/{fresh['id']}/revoke", headers=headers)
    assert late_revoke.status_code == 409 and late_revoke.json()["type"] == "/problems/invalid-state"
    by_status = {s: [i["id"] for i in (await anon.get(base, headers=headers, params={"status": s})).json()["items"]]
                 for s in ("pending", "accepted", "revoked")}
    assert by_status == {"pending": [], "accepted": [fresh["id"]], "revoked": [invitation["id"]]}


async def test_existing_user_accepts_while_signed_in_as_the_invited_email(anon: httpx.AsyncClient,
                                                                          factory: Factory) -> None:
    partner, headers = await _team_with_admin(factory)
    other_partner = await factory.partner()
    invited, invited_token = await factory.member(other_partner, MemberRole.developer,
                                                  user=await factory.user("lee@example.com"))
    stranger = await factory.user("stranger@example.com")
    stranger_token = await factory.session_token(stranger)
    token = (await _invite(anon, f"/api/partners/{partner.id}/invitations", headers, email="lee@example.com",
                           role="viewer"))["token"]

    anonymous = await anon.post("/api/invitations/accept", json={"token": token, "name": "L",
                                                                 "password": NEW_PASSWORD})
    assert anonymous.status_code == 409 and anonymous.json()["type"] == "/problems/conflict"
    wrong_person = await anon.post("/api/invitations/accept", headers=bearer(stranger_token), json={"token": token})
    assert wrong_person.status_code == 403
    with_password = await anon.post("/api/invitations/accept", headers=bearer(invited_token),
                                    json={"token": token, "password": NEW_PASSWORD})
    assert with_password.status_code == 422 and with_password.json()["errors"][0]["field"] == "password"
    stale = await anon.post("/api/invitations/accept", headers=bearer("acc_sess_stale"), json={"token": token})
    assert stale.status_code == 401

    accepted = await anon.post("/api/invitations/accept", headers=bearer(invited_token), json={"token": token})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["token"] is None and accepted.json()["membership"]["role"] == "viewer"
    me = (await anon.get("/api/me", headers=bearer(invited_token))).json()
    assert {m["partner_id"] for m in me["memberships"]} == {str(partner.id), str(other_partner.id)}
    assert me["id"] == str(invited.id)


async def test_new_account_needs_name_and_password(anon: httpx.AsyncClient, factory: Factory) -> None:
    partner, headers = await _team_with_admin(factory)
    token = (await _invite(anon, f"/api/partners/{partner.id}/invitations", headers))["token"]
    missing = await anon.post("/api/invitations/accept", json={"token": token})
    assert missing.status_code == 422
    assert {e["field"] for e in missing.json()["errors"]} == {"name", "password"}
    short = await anon.post("/api/invitations/accept", json={"token": token, "name": "N", "password": "short"})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "password"
    # Failed attempts do not use the token up.
    ok = await anon.post("/api/invitations/accept", json={"token": token, "name": "N", "password": NEW_PASSWORD})
    assert ok.status_code == 200


async def test_invitation_rules(anon: httpx.AsyncClient, factory: Factory) -> None:
    partner, headers = await _team_with_admin(factory)
    member, _ = await factory.member(partner, MemberRole.developer, user=await factory.user("dev@example.com"))
    _, dev_token = await factory.member(partner, MemberRole.developer)
    base = f"/api/partners/{partner.id}/invitations"

    already = await anon.post(base, headers=headers, json={"email": "DEV@example.com"})
    assert already.status_code == 409 and already.json()["errors"][0]["field"] == "email"
    await _invite(anon, base, headers)
    twice = await anon.post(base, headers=headers, json={"email": "new@example.com"})
    assert twice.status_code == 409 and "pending invitation" in twice.json()["errors"][0]["reason"]
    bad = await anon.post(base, headers=headers, json={"email": "nope", "role": "king"})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"email", "role"}

    for method, path in (("GET", base), ("POST", base), ("POST", f"{base}/{uuid.uuid4()}/revoke")):
        answer = await anon.request(method, path, headers=bearer(dev_token),
                                    json={"email": "x@example.com"} if method == "POST" else None)
        assert answer.status_code == 403, (method, path)
    assert (await anon.post(f"{base}/{uuid.uuid4()}/revoke", headers=headers)).status_code == 404


async def test_an_invitation_id_of_another_partner_is_not_found(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                                factory: Factory) -> None:
    mine, headers = await _team_with_admin(factory)
    theirs = await factory.partner()
    theirs_invitation = await _invite(admin, f"/admin/api/partners/{theirs.id}/invitations")
    revoke = await anon.post(f"/api/partners/{mine.id}/invitations/{theirs_invitation['id']}/revoke", headers=headers)
    assert revoke.status_code == 404
    wrong_partner = await admin.post(f"/admin/api/partners/{mine.id}/invitations/{theirs_invitation['id']}/revoke")
    assert wrong_partner.status_code == 404
    listed = (await admin.get(f"/admin/api/partners/{theirs.id}/invitations")).json()
    assert listed["items"][0]["status"] == "pending"


async def test_staff_invite_a_partners_first_admin(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                   factory: Factory) -> None:
    partner = await factory.partner()
    base = f"/admin/api/partners/{partner.id}/invitations"
    invitation = await _invite(admin, base, email="boss@example.com", role="partner-admin")
    assert invitation["invited_by_user_id"] is None  # an admin token, not a person
    accepted = (await anon.post("/api/invitations/accept", json={"token": invitation["token"], "name": "Boss",
                                                                 "password": NEW_PASSWORD})).json()
    boss = bearer(accepted["token"])
    # The new partner-admin now runs their own team.
    second = await _invite(anon, f"/api/partners/{partner.id}/invitations", boss, email="two@example.com")
    assert second["invited_by_user_id"] == accepted["user"]["id"]
    staff = await admin.get(base)
    assert staff.json()["total"] == 2
    assert (await admin.post(f"/admin/api/partners/{uuid.uuid4()}/invitations",
                             json={"email": "x@example.com"})).status_code == 404
    assert (await admin.get(f"/admin/api/partners/{uuid.uuid4()}/invitations")).status_code == 404
    assert (await admin.post(f"{base}/{second['id']}/revoke")).json()["status"] == "revoked"


async def test_tokens_are_stored_hashed_and_never_leak(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                       factory: Factory, session: AsyncSession,
                                                       settings: Settings) -> None:
    partner, headers = await _team_with_admin(factory)
    base = f"/api/partners/{partner.id}/invitations"
    created = await anon.post(base, headers=headers, json={"email": "new@example.com"})
    token = created.json()["token"]
    row = await session.scalar(select(Invitation).where(Invitation.id == uuid.UUID(created.json()["id"])))
    assert row.token_hash == keyed_hash(token, settings.secret_key) and token not in row.token_hash

    accepted = await anon.post("/api/invitations/accept", json={"token": token, "name": "N",
                                                                "password": NEW_PASSWORD})
    revoke_other = await anon.post(f"{base}/{(await _invite(anon, base, headers, email='o@example.com'))['id']}/revoke",
                                   headers=headers)
    audit = (await admin.get("/admin/api/audit", params={"partner_id": str(partner.id), "limit": 200})).json()
    actions = [e["action"] for e in audit["items"]]
    assert {"invitation.created", "invitation.accepted", "invitation.revoked", "membership.created"} <= set(actions)
    answers = [created.text, accepted.text, revoke_other.text, (await anon.get(base, headers=headers)).text,
               json.dumps(audit)]
    session_hash = keyed_hash(accepted.json()["token"], settings.secret_key)
    for text in answers:
        assert row.token_hash not in text and session_hash not in text
        assert "token_hash" not in text and "password_hash" not in text and "$argon2" not in text
    assert token not in json.dumps(audit) and NEW_PASSWORD not in json.dumps(audit)
    assert PASSWORD not in accepted.text
