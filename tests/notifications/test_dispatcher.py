"""The dispatcher end to end: real API calls, committed events, a real SMTP server (aiosmtpd)."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from accord.core.clock import utcnow
from accord.events.models import Event
from accord.notifications.dispatcher import NotificationDispatcher
from accord.notifications.models import EmailMessage, EmailStatus
from accord.notifications.service import queue_email
from accord.teams.models import MemberRole
from accord.worker import run_worker
from tests.factories import PASSWORD, Factory
from tests.gateway.harness import committed
from tests.notifications.harness import (
    Inbox,
    accord_api,
    bearer,
    database,
    emails,
    eventually,
    mail_settings,
    smtp_server,
)
from tests.servers import free_port


async def _queue(database_url: str, *addresses: str) -> None:
    """Commit one plain message per address, as any service would queue it."""
    async def build(_factory: Factory, session) -> None:
        for address in addresses:
            await queue_email(session, to=address, template="nudge_inactive",
                              context={"program_name": "P", "base_url": "https://p.example", "partner_name": "Acme",
                                       "days": 30, "last_call_at": utcnow() - timedelta(days=30)})
    await committed(database_url, build)


@pytest.fixture
async def running(fresh_database_url: str):
    """A dispatcher, closed after the test."""
    started: list[NotificationDispatcher] = []

    def make(settings) -> NotificationDispatcher:
        dispatcher = NotificationDispatcher(settings)
        started.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in started:
        await dispatcher.close()


async def test_an_invitation_made_through_the_partner_api_is_mailed_with_a_token_that_works(
        fresh_database_url: str, running) -> None:
    async def build(factory: Factory, session):
        partner = await factory.partner(name="Acme Corp")
        admin, token = await factory.member(partner, MemberRole.partner_admin)
        return partner.id, admin.email, token
    partner_id, inviter, session_token = await committed(fresh_database_url, build)

    with smtp_server() as (inbox, port):
        settings = mail_settings(fresh_database_url, port)
        dispatcher = running(settings)
        async with accord_api(settings) as api:
            created = await api.post(f"/api/partners/{partner_id}/invitations", headers=bearer(session_token),
                                     json={"email": "Newcomer@Example.com", "role": "developer"})
            assert created.status_code == 201, created.text
            assert await dispatcher.run_once() > 0
            [mail] = inbox.to("newcomer@example.com")
            assert "Acme Corp" in mail["Subject"] and mail["From"] == "Program <program@accord.test>"
            token = inbox.token(mail, "invitation")
            assert token == created.json()["token"]
            assert "https://partners.example.com/api/invitations/accept" in Inbox.text(mail)
            assert inviter in Inbox.text(mail) and token in Inbox.html(mail)

            accepted = await api.post("/api/invitations/accept",
                                      json={"token": token, "name": "New Person", "password": "a long password"})
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["membership"]["partner_id"] == str(partner_id)
            await dispatcher.run_once()
            again = await api.post("/api/invitations/accept",
                                   json={"token": token, "name": "Someone", "password": "a long password"})
            assert again.status_code == 409

    # The member.invited and member.joined events were planned, and caused no second mail.
    assert len(inbox.messages) == 1
    [row] = await emails(fresh_database_url)
    assert row.template == "invitation" and row.status == EmailStatus.sent and row.attempts == 1


async def test_suspending_a_partner_emails_its_admins_and_contact_once_each(fresh_database_url: str, running) -> None:
    async def build(factory: Factory, session):
        partner = await factory.partner(name="Globex", contact_email="Boss@Example.com")
        await factory.member(partner, MemberRole.partner_admin, user=await factory.user("boss@example.com"))
        await factory.member(partner, MemberRole.partner_admin, user=await factory.user("second@example.com"))
        await factory.member(partner, MemberRole.developer, user=await factory.user("dev@example.com"))
        gone = await factory.user("gone@example.com")
        gone.is_active = False
        await factory.member(partner, MemberRole.partner_admin, user=gone)
        other = await factory.partner()
        await factory.member(other, MemberRole.partner_admin, user=await factory.user("other@example.com"))
        return partner.id, await factory.admin_token()
    partner_id, admin_token = await committed(fresh_database_url, build)

    with smtp_server() as (inbox, port):
        settings = mail_settings(fresh_database_url, port)
        dispatcher = running(settings)
        async with accord_api(settings) as api:
            suspended = await api.post(f"/admin/api/partners/{partner_id}/suspend", headers=bearer(admin_token),
                                       json={"reason": "unpaid invoices"})
            assert suspended.status_code == 200, suspended.text
        await dispatcher.run_once()
        await dispatcher.run_once()

    assert sorted(m["To"] for m in inbox.messages) == ["boss@example.com", "second@example.com"]
    mail = inbox.messages[0]
    assert "Globex was suspended" in mail["Subject"]
    assert "refused" in Inbox.text(mail)
    assert "unpaid invoices" not in Inbox.text(mail) + Inbox.html(mail)  # the reason is staff-only
    async with database(fresh_database_url) as session:
        event = await session.scalar(select(Event).where(Event.type == "partner.suspended"))
        assert event.notified_at is not None
        assert not (await session.scalars(select(Event).where(Event.notified_at.is_(None)))).all()
    assert {row.event_id for row in await emails(fresh_database_url)} == {event.id}


async def test_smtp_down_is_retried_later_and_delivered_once_when_it_is_back(fresh_database_url: str,
                                                                              running) -> None:
    await _queue(fresh_database_url, "ann@example.com")
    port = free_port()  # nothing listens here yet
    dispatcher = running(mail_settings(fresh_database_url, port, email_retry_base_seconds=2.0))

    before = utcnow()
    assert await dispatcher.run_once() == 1
    assert await dispatcher.run_once() == 0  # not due yet: backing off
    [row] = await emails(fresh_database_url)
    assert row.status == EmailStatus.queued and row.attempts == 1 and row.claimed_by is None
    assert "cannot use the SMTP server" in row.last_error
    assert row.next_attempt_at >= before + timedelta(seconds=2)

    with smtp_server(port) as (inbox, _):
        async def delivered() -> bool:
            await dispatcher.run_once()
            return await _all_sent(fresh_database_url)
        await eventually(delivered)
        for _ in range(3):
            await dispatcher.run_once()
        [mail] = inbox.messages

    assert mail["To"] == "ann@example.com"
    [row] = await emails(fresh_database_url)
    assert row.status == EmailStatus.sent and row.sent_at is not None and row.last_error == ""
    assert mail["Message-ID"] == f"<{row.id}@accord.test>"


async def _all_sent(database_url: str) -> bool:
    return all(row.status == EmailStatus.sent for row in await emails(database_url))


async def test_several_workers_send_each_message_exactly_once(fresh_database_url: str, running) -> None:
    addresses = [f"reader{n}@example.com" for n in range(25)]
    await _queue(fresh_database_url, *addresses)
    with smtp_server() as (inbox, port):
        workers = [running(mail_settings(fresh_database_url, port)) for _ in range(3)]
        for _ in range(6):
            await asyncio.gather(*(w.run_once() for w in workers))
    assert sorted(m["To"] for m in inbox.messages) == sorted(addresses)
    assert all(row.status == EmailStatus.sent and row.attempts == 1 for row in await emails(fresh_database_url))


async def test_a_message_leased_by_a_live_worker_is_left_alone_and_a_dead_workers_lease_runs_out(
        fresh_database_url: str, running) -> None:
    await _queue(fresh_database_url, "held@example.com", "abandoned@example.com")
    async with database(fresh_database_url) as session:
        now = utcnow()
        for row in (await session.scalars(select(EmailMessage))).all():
            row.claimed_by = "another-worker"
            row.attempts = 1
            # One lease still running (its worker is sending), one that ran out (its worker died).
            held = row.to == "held@example.com"
            row.claimed_until = now + timedelta(minutes=5) if held else now - timedelta(seconds=1)
        await session.commit()

    with smtp_server() as (inbox, port):
        dispatcher = running(mail_settings(fresh_database_url, port))
        await dispatcher.run_once()
        await dispatcher.run_once()
    assert [m["To"] for m in inbox.messages] == ["abandoned@example.com"]
    rows = {row.to: row for row in await emails(fresh_database_url)}
    assert rows["held@example.com"].status == EmailStatus.queued
    assert rows["held@example.com"].claimed_by == "another-worker"
    assert rows["abandoned@example.com"].status == EmailStatus.sent and rows["abandoned@example.com"].attempts == 2


async def test_a_permanent_refusal_fails_at_once_and_the_rest_of_the_batch_goes_out(fresh_database_url: str,
                                                                                    running) -> None:
    await _queue(fresh_database_url, "bounce@example.com", "fine@example.com")
    with smtp_server() as (inbox, port):
        await running(mail_settings(fresh_database_url, port)).run_once()
    assert [m["To"] for m in inbox.messages] == ["fine@example.com"]
    rows = {row.to: row for row in await emails(fresh_database_url)}
    bounced = rows["bounce@example.com"]
    assert bounced.status == EmailStatus.failed and bounced.attempts == 1 and "550" in bounced.last_error
    assert rows["fine@example.com"].status == EmailStatus.sent


async def test_after_the_last_attempt_a_message_is_failed_and_no_longer_tried(fresh_database_url: str,
                                                                              running) -> None:
    await _queue(fresh_database_url, "ann@example.com")
    dispatcher = running(mail_settings(fresh_database_url, free_port(), email_max_attempts=2,
                                       email_retry_base_seconds=0.05))

    async def failed() -> bool:
        await dispatcher.run_once()
        return (await emails(fresh_database_url))[0].status == EmailStatus.failed
    await eventually(failed)
    [row] = await emails(fresh_database_url)
    assert row.attempts == 2 and row.last_error
    await asyncio.sleep(0.2)
    assert await dispatcher.run_once() == 0


def test_backoff_doubles_and_ten_attempts_span_most_of_a_day() -> None:
    dispatcher = NotificationDispatcher(mail_settings("sqlite:///unused.db", None, email_retry_base_seconds=180))
    delays = [dispatcher.retry_delay(n).total_seconds() for n in range(1, 10)]
    assert delays[:4] == [180, 360, 720, 1440]
    assert max(delays) == 6 * 3600
    assert 12 * 3600 < sum(delays) < 30 * 3600


async def test_embedded_mode_logs_the_message_and_marks_it_sent(fresh_database_url: str, running,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="accord.notifications")
    await _queue(fresh_database_url, "ann@example.com")
    dispatcher = running(mail_settings(fresh_database_url, None, smtp_password="never-log-this-password"))
    await dispatcher.start()
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop))
    await eventually(lambda: _all_sent(fresh_database_url))
    stop.set()
    await asyncio.wait_for(loop, 5)

    [row] = await emails(fresh_database_url)
    assert row.sent_at is not None and row.attempts == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "accord.notifications")
    assert "To: ann@example.com" in logged and f"Subject: {row.subject}" in logged
    assert "no API calls since" in logged  # the body
    assert "never-log-this-password" not in caplog.text


async def test_the_worker_runs_it_and_sends_what_the_api_queues(fresh_database_url: str) -> None:
    async def build(factory: Factory, session):
        return (await factory.user("lost@example.com")).email
    await committed(fresh_database_url, build)
    with smtp_server() as (inbox, port):
        settings = mail_settings(fresh_database_url, port)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop, factories=[NotificationDispatcher]))
        try:
            async with accord_api(settings) as api:
                answer = await api.post("/api/auth/password-reset/request", json={"email": "lost@example.com"})
                assert answer.status_code == 202
                await eventually(lambda: _has_mail(inbox))
        finally:
            stop.set()
            await asyncio.wait_for(worker, 10)
    assert [m["To"] for m in inbox.messages] == ["lost@example.com"]
    assert PASSWORD not in Inbox.text(inbox.messages[0])


async def _has_mail(inbox: Inbox) -> bool:
    return bool(inbox.messages)
