"""A periodic job: emit `credential.expiring_soon` once for each credential expiring within a week.

It runs in the worker (accord.worker) beside the webhook and email dispatchers. The marker `expiry_notified_at` makes it
idempotent, and several workers may run it: each claims rows with
`FOR UPDATE SKIP LOCKED` on PostgreSQL.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import aliased

from accord.apps.models import Application, Credential
from accord.audit import service as audit
from accord.auth.actor import SYSTEM_ACTOR
from accord.core.clock import utcnow
from accord.core.jobs import PeriodicJob

log = logging.getLogger("accord.apps.expiry")

NOTICE = timedelta(days=7)


async def notify_expiring(session, *, limit: int = 500) -> int:
    """Emit the event for credentials expiring within NOTICE that were not told yet; returns how many."""
    now = utcnow()
    successor = aliased(Credential)
    stmt = (select(Credential, Application.partner_id).join(Application, Application.id == Credential.application_id)
            .where(Credential.revoked_at.is_(None), Credential.expires_at.is_not(None),
                   Credential.expires_at > now, Credential.expires_at <= now + NOTICE,
                   Credential.expiry_notified_at.is_(None),
                   # A rotated key's expiry was chosen at rotation; its successor is already in use.
                   ~exists().where(successor.rotated_from_id == Credential.id))
            .order_by(Credential.expires_at).limit(limit))
    if session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=Credential)
    rows = (await session.execute(stmt)).all()
    for credential, partner_id in rows:
        credential.expiry_notified_at = now
        view = audit.snapshot(credential)
        await audit.record(session, SYSTEM_ACTOR, "credential.expiring_soon", credential, partner_id=partner_id,
                           after=view)
    return len(rows)


class ExpiryNotifier(PeriodicJob):
    """A worker dispatcher (see accord.worker): one pass a minute; cheap when nothing is due."""

    job = staticmethod(notify_expiring)
