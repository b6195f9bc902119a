"""Email verification and password reset: request → email → confirm, end to end and in detail."""
from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import clock, utcnow
from accord.notifications.dispatcher import NotificationDispatcher
from accord.notifications.models import EmailMessage
from accord.users.email_flows import MAX_TOKENS_PER_HOUR
from accord.users.models import User
from tests.factories import PASSWORD, Factory
from tests.gateway.harness import committed
from tests.notifications.harness import Inbox, accord_api, bearer, emails, mail_settings, mailed_token, smtp_server

NEW_PASSWORD = "a completely new passphrase"


async def test_password_reset_end_to_end(fresh_database_url: str) -> None:
    async def build(factory: Factory, session):
        user = await factory.user("ann@example.com")
        return [await factory.session_token(user), await factory.session_token(user)]
    old_sessions = await committed(fresh_database_url, build)

    with smtp_server() as (inbox, port):
        settings = mail_settings(fresh_database_url, port)
        dispatcher = NotificationDispatcher(settings)
        try:
            async with accord_api(settings) as api:
                asked = await api.post("/api/auth/password-reset/request", json={"email": "ANN@example.com"})
                unknown = await api.post("/api/auth/password-reset/request", json={"email": "nobody@example.com"})
                assert asked.status_code == unknown.status_code == 202
                assert asked.content == unknown.content == b""
                await dispatcher.run_once()
                [mail] = inbox.messages
                assert mail["To"] == "ann@example.com" and "Reset your Example Partners password" == mail["Subject"]
                token = inbox.token(mail, "reset")

                confirmed = await api.post("/api/auth/password-reset/confirm",
                                           json={"token": token, "password": NEW_PASSWORD})
                assert confirmed.status_code == 204, confirmed.text
                for old in old_sessions:
                    assert (await api.get("/api/me", headers=bearer(old))).status_code == 401
                old_login = await api.post("/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
                assert old_login.status_code == 401
                login = await api.post("/api/auth/login", json={"email": "ann@example.com", "password": NEW_PASSWORD})
                assert login.status_code == 200
                assert login.json()["user"]["email_verified_at"] is not None  # the token reached the inbox

                reused = await api.post("/api/auth/password-reset/confirm", json={"token": token, "password": "x" * 12})
                assert reused.status_code == 409 and reused.json()["errors"][0]["field"] == "token"
        finally:
            await dispatcher.close()
    assert [m.to for m in await emails(fresh_database_url)] == ["ann@example.com"]  # nothing for nobody@


async def test_email_verification_end_to_end(fresh_database_url: str) -> None:
    async def build(factory: Factory, session):
        return await factory.session_token(await factory.user("bob@example.com"))
    session_token = await committed(fresh_database_url, build)

    with smtp_server() as (inbox, port):
        settings = mail_settings(fresh_database_url, port)
        dispatcher = NotificationDispatcher(settings)
        try:
            async with accord_api(settings) as api:
                me = bearer(session_token)
                assert (await api.get("/api/me", headers=me)).json()["email_verified_at"] is None
                assert (await api.post("/api/auth/verify-email/request", headers=me)).status_code == 202
                await dispatcher.run_once()
                [mail] = inbox.to("bob@example.com")
                token = inbox.token(mail, "verify")
                assert "https://partners.example.com/api/auth/verify-email/confirm" in Inbox.text(mail)

                confirmed = await api.post("/api/auth/verify-email/confirm", json={"token": token})
                assert confirmed.status_code == 200, confirmed.text
                assert confirmed.json()["email"] == "bob@example.com"
                assert (await api.get("/api/me", headers=me)).json()["email_verified_at"] is not None
                assert (await api.post("/api/auth/verify-email/confirm", json={"token": token})).status_code == 409
                again = await api.post("/api/auth/verify-email/request", headers=me)
                assert again.status_code == 409 and again.json()["errors"][0]["field"] == "email"
                assert (await api.post("/api/auth/verify-email/request")).status_code == 401
        finally:
            await dispatcher.close()


# --- the details, in the test's transaction ---------------------------------------------------------

async def _count(session: AsyncSession, to: str) -> int:
    return len((await session.scalars(select(EmailMessage).where(EmailMessage.to == to))).all())


async def test_a_new_request_replaces_the_previous_token(anon: httpx.AsyncClient, factory, session) -> None:
    await factory.user("cat@example.com")
    assert (await anon.post("/api/auth/password-reset/request", json={"email": "cat@example.com"})).status_code == 202
    first = await mailed_token(session, "cat@example.com", "reset")
    assert (await anon.post("/api/auth/password-reset/request", json={"email": "cat@example.com"})).status_code == 202
    second = await mailed_token(session, "cat@example.com", "reset")
    assert first != second
    stale = await anon.post("/api/auth/password-reset/confirm", json={"token": first, "password": NEW_PASSWORD})
    assert stale.status_code == 409
    ok = await anon.post("/api/auth/password-reset/confirm", json={"token": second, "password": NEW_PASSWORD})
    assert ok.status_code == 204


async def test_tokens_expire_and_unknown_or_misused_ones_are_refused(anon: httpx.AsyncClient, factory,
                                                                     session) -> None:
    user = await factory.user("dan@example.com")
    token = await factory.session_token(user)
    await anon.post("/api/auth/password-reset/request", json={"email": "dan@example.com"})
    await anon.post("/api/auth/verify-email/request", headers=bearer(token))
    reset = await mailed_token(session, "dan@example.com", "reset")
    verify = await mailed_token(session, "dan@example.com", "verify")

    # Each token works only for its own purpose; an unknown one is 404.
    wrong = await anon.post("/api/auth/verify-email/confirm", json={"token": reset})
    assert wrong.status_code == 404 and wrong.json()["errors"][0]["field"] == "token"
    assert (await anon.post("/api/auth/password-reset/confirm",
                            json={"token": verify, "password": NEW_PASSWORD})).status_code == 404
    short = await anon.post("/api/auth/password-reset/confirm", json={"token": reset, "password": "short"})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "password"

    clock.freeze(utcnow() + timedelta(minutes=61))  # the reset token lives an hour, the verification 48
    try:
        expired = await anon.post("/api/auth/password-reset/confirm", json={"token": reset, "password": NEW_PASSWORD})
        assert expired.status_code == 409 and expired.json()["errors"] == [{"field": "token", "reason": "has expired"}]
        assert (await anon.post("/api/auth/verify-email/confirm", json={"token": verify})).status_code == 200
    finally:
        clock.resume()


async def test_no_reset_mail_for_unknown_or_deactivated_accounts_and_at_most_five_an_hour(
        anon: httpx.AsyncClient, factory, session) -> None:
    inactive = await factory.user("gone@example.com")
    inactive.is_active = False
    await factory.user("eve@example.com")
    await session.flush()
    for address in ["gone@example.com", "ghost@example.com"] + ["eve@example.com"] * (MAX_TOKENS_PER_HOUR + 2):
        answer = await anon.post("/api/auth/password-reset/request", json={"email": address})
        assert answer.status_code == 202 and answer.content == b""
    assert await _count(session, "gone@example.com") == 0
    assert await _count(session, "ghost@example.com") == 0
    assert await _count(session, "eve@example.com") == MAX_TOKENS_PER_HOUR


async def test_signing_up_sends_a_verification_email(anon: httpx.AsyncClient, session) -> None:
    signup = await anon.post("/api/auth/signup", json={"email": "Fay@Example.com", "name": "Fay",
                                                       "password": "a long password", "organisation": "Fay Labs"})
    assert signup.status_code == 201, signup.text
    token = await mailed_token(session, "fay@example.com", "verify")
    assert (await anon.post("/api/auth/verify-email/confirm", json={"token": token})).status_code == 200
    user = await session.scalar(select(User).where(User.email == "fay@example.com"))
    await session.refresh(user)
    assert user.email_verified_at is not None


async def test_no_answer_or_audit_entry_carries_a_mailed_token(anon: httpx.AsyncClient, admin: httpx.AsyncClient,
                                                               factory, session) -> None:
    user = await factory.user("gil@example.com")
    requested = await anon.post("/api/auth/verify-email/request", headers=bearer(await factory.session_token(user)))
    token = await mailed_token(session, "gil@example.com", "verify")
    confirmed = await anon.post("/api/auth/verify-email/confirm", json={"token": token})
    audit = (await admin.get("/admin/api/audit", params={"limit": 200})).json()["items"]
    actions = {e["action"] for e in audit}
    assert {"user.verify_email_requested", "user_token.used", "user.email_verified"} <= actions
    assert token not in requested.text + confirmed.text + str(audit)


@pytest.mark.parametrize("path", ["/api/auth/verify-email/confirm", "/api/auth/password-reset/confirm"])
async def test_confirm_bodies_are_validated(anon: httpx.AsyncClient, path: str) -> None:
    answer = await anon.post(path, json={"token": "", "extra": 1})
    assert answer.status_code == 422
    assert {"token", "extra"} <= {e["field"] for e in answer.json()["errors"]}
