"""A periodic job: tell partners their agreement deadline is near, then that it passed.

Once per partner × required version (an `AgreementNotice` row each):
- `agreement.due_soon` when the deadline is less than `REMINDER` away (an `agreement_deadline`
  email), unless the partner's obligation started less than a day ago: the publication
  email, sent then, already named the deadline;
- `agreement.overdue` once the deadline has passed (the gateway refuses the partner's
  production traffic that needs the agreement from that moment; this only tells).

It runs in the worker (accord.worker). One pass reads the statuses of every partner in
bulk (a few queries). Several workers may run it: on PostgreSQL a transaction-scoped
advisory lock lets one of them work at a time; on SQLite writers queue anyway.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from accord.agreements.models import AgreementNotice, AgreementVersion, NoticeKind
from accord.agreements.service import status_payload, statuses
from accord.audit import service as audit
from accord.auth.actor import SYSTEM_ACTOR
from accord.core.clock import utcnow
from accord.core.jobs import PeriodicJob

log = logging.getLogger("accord.agreements.jobs")

REMINDER = timedelta(days=3)
QUIET_START = timedelta(days=1)
_LOCK_KEY = 0x61677265656D  # "agreem": the advisory lock this job takes on PostgreSQL


def _notice_due(kind: NoticeKind, due_at: datetime, grace_days: int, now: datetime) -> bool:
    if kind == NoticeKind.overdue:
        return due_at <= now
    started = due_at - timedelta(days=grace_days)
    return now < due_at <= now + REMINDER and now - started >= QUIET_START


async def notify_deadlines(session: AsyncSession, *, limit: int = 500) -> int:
    """Emit the due-soon and overdue events not emitted yet (at most `limit`); returns how many."""
    if session.bind.dialect.name == "postgresql":
        if not await session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK_KEY}):
            return 0
    now = utcnow()
    pending = [s for s in await statuses(session, now=now) if s.state != "accepted"]
    if not pending:
        return 0
    versions = {v.id: v for v in (await session.scalars(select(AgreementVersion).where(
        AgreementVersion.id.in_({s.version_id for s in pending})))).all()}
    sent = {(n.partner_id, n.version_id, n.kind) for n in (await session.scalars(select(AgreementNotice).where(
        AgreementNotice.version_id.in_(list(versions))))).all()}
    emitted = 0
    for status in sorted(pending, key=lambda s: s.due_at):  # type: ignore[arg-type, return-value]
        version = versions[status.version_id]  # type: ignore[index]
        kind = NoticeKind.overdue if status.due_at <= now else NoticeKind.due_soon  # type: ignore[operator]
        if (status.partner_id, version.id, kind) in sent:
            continue
        if not _notice_due(kind, status.due_at, version.grace_days, now):  # type: ignore[arg-type]
            continue
        session.add(AgreementNotice(partner_id=status.partner_id, version_id=version.id, kind=kind, at=now))
        await audit.record(session, SYSTEM_ACTOR, f"agreement.{kind.value}", version, partner_id=status.partner_id,
                           after=status_payload(status))
        emitted += 1
        if emitted >= limit:
            break
    return emitted


class DeadlineNotifier(PeriodicJob):
    """A worker dispatcher (see accord.worker): one pass a minute; cheap when nothing is pending."""

    job = staticmethod(notify_deadlines)
