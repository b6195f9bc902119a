"""Retention: what is past `retention_days` and done with is deleted; nothing in flight is touched."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.events import retention
from accord.events.models import Event
from accord.events.service import new_event_id
from accord.notifications.models import EmailMessage, EmailStatus
from accord.users.models import LoginFailure
from accord.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint


async def _world(session: AsyncSession, settings: Settings) -> dict[str, object]:
    now = utcnow()
    old, recent = now - timedelta(days=settings.retention_days + 5), now - timedelta(days=settings.retention_days - 5)
    endpoint = WebhookEndpoint(url="https://hooks.example.com/in")
    session.add(endpoint)
    await session.flush()

    def event(name: str, created: datetime, *, done: bool = True) -> Event:
        row = Event(id=new_event_id(), type="partner.updated", data={"name": name}, created_at=created,
                    fanned_out_at=created if done else None, notified_at=created if done else None)
        session.add(row)
        return row

    events = {"old": event("old", old), "old, delivery pending": event("old, delivery pending", old),
              "old, not fanned out": event("old, not fanned out", old, done=False), "recent": event("recent", recent)}
    await session.flush()

    def delivery(of: Event, finished: datetime | None) -> WebhookDelivery:
        row = WebhookDelivery(endpoint_id=endpoint.id, event_seq=of.seq, event_id=of.id, event_type=of.type,
                              status=DeliveryStatus.succeeded if finished else DeliveryStatus.pending,
                              finished_at=finished, next_attempt_at=None if finished else now)
        session.add(row)
        return row

    deliveries = {"old": delivery(events["old"], old + timedelta(hours=1)),
                  "pending": delivery(events["old, delivery pending"], None),
                  "recent": delivery(events["recent"], recent)}
    await session.flush()
    for number, of in enumerate([deliveries["old"], deliveries["old"], deliveries["pending"], deliveries["recent"]]):
        session.add(WebhookAttempt(delivery_id=of.id, endpoint_id=endpoint.id, number=number + 1))

    def email(name: str, status: EmailStatus, at: datetime) -> None:
        session.add(EmailMessage(to=f"{name}@example.com", subject=name, text_body=name, template="t",
                                 status=status, created_at=at, updated_at=at))

    email("old-sent", EmailStatus.sent, old)
    email("old-failed", EmailStatus.failed, old)
    email("old-queued", EmailStatus.queued, old)
    email("recent-sent", EmailStatus.sent, recent)
    window = timedelta(seconds=settings.login_failure_window_seconds)
    session.add(LoginFailure(account_key="a" * 64, address="192.0.2.1", failed_at=now - window - timedelta(seconds=1)))
    session.add(LoginFailure(account_key="b" * 64, address="192.0.2.1", failed_at=now - window + timedelta(seconds=5)))
    await session.flush()
    return {"events": events, "deliveries": deliveries}


async def _left(session: AsyncSession) -> dict[str, list[str]]:
    events = {e.seq: e.data["name"] for e in await session.scalars(select(Event))}
    return {
        "events": sorted(events.values()),
        "deliveries": sorted(events.get(d.event_seq, "?") for d in await session.scalars(select(WebhookDelivery))),
        "attempts": sorted(str(a.number) for a in await session.scalars(select(WebhookAttempt))),
        "emails": sorted(m.subject for m in await session.scalars(select(EmailMessage))),
        "failures": sorted(f.account_key[0] for f in await session.scalars(select(LoginFailure))),
    }


EXPECTED = {
    "events": ["old, delivery pending", "old, not fanned out", "recent"],
    "deliveries": ["old, delivery pending", "recent"],
    "attempts": ["3", "4"],  # the old finished delivery's two attempts went with it
    "emails": ["old-queued", "recent-sent"],
    "failures": ["b"],
}


async def test_what_is_past_retention_and_done_with_goes(session: AsyncSession, settings: Settings) -> None:
    await _world(session, settings)
    assert await retention.purge(session, settings) == 5  # a delivery, two emails, an event, a failure
    session.expire_all()
    assert await _left(session) == EXPECTED
    assert await retention.purge(session, settings) == 0


async def test_a_pass_deletes_in_batches(session: AsyncSession, settings: Settings,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    await _world(session, settings)
    monkeypatch.setattr(retention, "BATCH", 1)
    passes = []
    while removed := await retention.purge(session, settings):
        passes.append(removed)
    assert passes == [4, 1]  # one delivery, email, event and failure; then the second email
    session.expire_all()
    assert await _left(session) == EXPECTED


async def test_a_longer_retention_keeps_more(session: AsyncSession, settings: Settings) -> None:
    await _world(session, settings)
    longer = settings.model_copy(update={"retention_days": settings.retention_days + 10})
    assert await retention.purge(session, longer) == 1  # only the sign-in failure, which has its own window
