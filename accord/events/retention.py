"""Retention: the event outbox and what it caused are kept for `retention_days`, then deleted.

Stripe keeps events for 30 days; so does Accord by default (`ACCORD_RETENTION_DAYS`): events (the
event APIs and webhook replays reach that far back), webhook deliveries with their attempts, and
emails. Nothing in flight is touched: a delivery goes once it is finished, an email once it was
sent or given up, an event once both dispatchers are done with it and no delivery of it is left.
Audit entries are the record and are kept for good; usage counts feed the usage reports and are
not touched here. Sign-in failures older than the throttling window go too (accord.users.throttle
deletes them as new ones come, but a quiet system would keep the last ones).

The worker runs this once an hour, in batches: a pass deletes at most `BATCH` rows of each kind
and is run again at once while it finds any, so no transaction holds many rows.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.jobs import PeriodicJob
from accord.events.models import Event
from accord.notifications.models import EmailMessage, EmailStatus
from accord.users import throttle
from accord.webhooks.models import WebhookAttempt, WebhookDelivery

log = logging.getLogger("accord.events.retention")

BATCH = 1000


async def purge(session: AsyncSession, settings: Settings) -> int:
    """One pass: delete what is past retention, at most BATCH rows of each kind; the rows deleted."""
    now = utcnow()
    cutoff = now - timedelta(days=settings.retention_days)

    deliveries = (await session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.finished_at < cutoff)
                                        .limit(BATCH))).all()
    if deliveries:
        await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(deliveries)))

    emails = (await session.scalars(select(EmailMessage.id).where(
        EmailMessage.status.in_([EmailStatus.sent, EmailStatus.failed]), EmailMessage.updated_at < cutoff)
        .limit(BATCH))).all()
    if emails:
        await session.execute(delete(EmailMessage).where(EmailMessage.id.in_(emails)))

    undelivered = exists().where(WebhookDelivery.event_seq == Event.seq)
    events = (await session.scalars(select(Event.seq).where(
        Event.created_at < cutoff, Event.fanned_out_at.is_not(None), Event.notified_at.is_not(None), ~undelivered)
        .limit(BATCH))).all()
    if events:
        await session.execute(delete(Event).where(Event.seq.in_(events)))

    failures = await throttle.prune(session, settings, now)

    removed = len(deliveries) + len(emails) + len(events) + failures
    if removed:
        log.info("retention: deleted %d webhook deliveries, %d emails, %d events, %d sign-in failures",
                 len(deliveries), len(emails), len(events), failures)
    return removed


class RetentionSweeper(PeriodicJob):
    """A worker dispatcher (see accord.worker): a pass an hour, repeated at once while it deletes."""

    poll_interval = 3600.0

    async def job(self, session: AsyncSession) -> int:
        return await purge(session, self.settings)
