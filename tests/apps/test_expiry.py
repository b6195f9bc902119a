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


async def test_the_worker_job_commits_each_pass(fresh_database_url: str) -> None:
    import asyncio

    from accord.apps.expiry import ExpiryNotifier
    from accord.worker import run_worker
    from accord.core.config import Settings
    from accord.core.db import create_engine, session_factory, session_scope
    from tests.conftest import TEST_SECRET
    from tests.factories import Factory

    engine = create_engine(fresh_database_url)
    try:
        async with session_scope(session_factory(engine)) as session:
            factory = Factory(session, TEST_SECRET)
            app = await factory.application(await factory.partner())
            await factory.credential(app, expires_at=utcnow() + timedelta(days=2))
        job = ExpiryNotifier(Settings(database_url=fresh_database_url, secret_key=TEST_SECRET))
        await job.start()
        try:
            assert (await job.run_once(), await job.run_once()) == (1, 0)  # the first pass was committed
        finally:
            await job.close()
        # And the way the worker runs it (its protocol: start, run_once in a loop, close).
        async with session_scope(session_factory(engine)) as session:
            factory = Factory(session, TEST_SECRET)
            await factory.credential(app, expires_at=utcnow() + timedelta(days=1))
        stop = asyncio.Event()
        running = asyncio.create_task(run_worker(job.settings, stop, factories=[ExpiryNotifier]))
        try:
            for _ in range(100):
                async with session_scope(session_factory(engine)) as session:
                    if len((await session.scalars(select(Event.id).where(
                            Event.type == "credential.expiring_soon"))).all()) == 2:
                        break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await running
        async with session_scope(session_factory(engine)) as session:
            assert len((await session.scalars(select(Event.id).where(
                Event.type == "credential.expiring_soon"))).all()) == 2
    finally:
        await engine.dispose()
