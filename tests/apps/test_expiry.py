"""`credential.expiring_soon` is emitted once per credential that expires within a week."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from accord.apps.expiry import notify_expiring
from accord.core.clock import utcnow
from accord.events.models import Event


async def test_expiring_credentials_are_announced_once(factory, session) -> None:
    partner = await factory.partner()
    app = await factory.application(partner)
    soon, _ = await factory.credential(app, name="soon", expires_at=utcnow() + timedelta(days=3))
    await factory.credential(app, name="later", expires_at=utcnow() + timedelta(days=30))
    await factory.credential(app, name="never")
    await factory.credential(app, name="revoked", expires_at=utcnow() + timedelta(days=1), revoked_at=utcnow())

    assert await notify_expiring(session) == 1
    assert await notify_expiring(session) == 0
    events = (await session.scalars(select(Event).where(Event.type == "credential.expiring_soon"))).all()
    assert [(e.subject_id, e.partner_id) for e in events] == [(str(soon.id), partner.id)]
    assert "key_hash" not in events[0].data["object"]
