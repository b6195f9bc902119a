"""At-least-once delivery across crashes, and no duplicates when several workers share the work.

These run real processes: `accord serve --no-worker` for the API, `accord worker` as the
dispatcher (killed with SIGKILL mid-way), and a receiver on loopback that goes down and
comes back on the same port.
"""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
from sqlalchemy import func, select
from standardwebhooks import Webhook

from accord.auth.actor import CLI_ACTOR
from accord.core.db import create_engine, session_factory, session_scope
from accord.events import service as events
from accord.events.models import Event
from accord.webhooks import service as webhooks
from accord.webhooks.models import WebhookAttempt
from accord.webhooks.schemas import EndpointCreate
from tests.servers import accord_serve
from tests.conftest import TEST_SECRET
from tests.webhooks.harness import Receiver, committed, webhook_settings
from tests.webhooks.processes import WORKER_ENV, serve_without_worker, wait_for, worker


# The endpoint takes the partner changes the test makes, not what the worker's own jobs add meanwhile
# (the onboarding sweeper's partner.stage_changed), so the set of events to expect is known.
SUBSCRIBED = ("partner.created", "partner.updated")


async def _all_event_ids(admin: httpx.AsyncClient) -> set[str]:
    ids: set[str] = set()
    seen = 0
    while True:
        page = (await admin.get("/admin/api/events", params={"limit": 200, "offset": seen})).json()
        seen += len(page["items"])
        ids |= {e["id"] for e in page["items"] if e["type"] in SUBSCRIBED}
        if seen >= page["total"] or not page["items"]:
            return ids


async def test_every_event_arrives_despite_a_killed_worker_and_a_receiver_outage(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url)
    token = await committed(engine, lambda f: f.admin_token())
    receiver = await Receiver(delay=1.0).start()  # slow: attempts are in flight when the worker dies
    serve, base = await serve_without_worker(fresh_database_url)
    first = worker(fresh_database_url, ACCORD_WEBHOOKS_CONCURRENCY="4")
    second = None
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as admin:
            created = await admin.post("/admin/api/webhooks/endpoints",
                                       json={"url": receiver.url(), "event_types": list(SUBSCRIBED)})
            assert created.status_code == 201, created.text
            secret = created.json()["secret"]

            # 1. Changes while everything runs; mid-way, with requests in flight, the worker is killed
            #    and the receiver goes down.
            partners = []
            for n in range(25):
                response = await admin.post("/admin/api/partners", json={"name": f"P{n}", "slug": f"p-{n}",
                                                                         "type": "technology"})
                assert response.status_code == 201, response.text
                partners.append(response.json()["id"])
            await wait_for(lambda: len(receiver.ids()) >= 6 and receiver.answering > 0, 30, "the first deliveries")
            first.kill()
            answering = receiver.answering  # received, not answered: the dead worker never learns the result
            assert answering > 0
            in_flight_at_kill = {r.webhook_id for r in receiver.requests[-answering:]}
            await receiver.stop()
            assert len(receiver.ids()) < 25, "the kill came too late to be mid-way"

            # 2. More changes while neither the worker nor the receiver runs: they wait in the outbox.
            for partner_id in partners[:15]:
                response = await admin.patch(f"/admin/api/partners/{partner_id}", json={"notes": "while down"})
                assert response.status_code == 200, response.text
            async with session_factory(engine)() as session:
                waiting = await session.scalar(select(func.count()).select_from(Event)
                                               .where(Event.fanned_out_at.is_(None)))
            assert waiting == 15  # `accord serve --no-worker` sent nothing

            # 3. A worker comes back first and meets the outage (failed attempts, retries scheduled),
            #    then the receiver comes back on the same port; every event arrives.
            second = worker(fresh_database_url)

            async def failed_attempts() -> int:
                async with session_factory(engine)() as session:
                    return await session.scalar(select(func.count()).select_from(WebhookAttempt)
                                                .where(WebhookAttempt.error.like("cannot connect%"))) or 0

            for _ in range(300):
                if await failed_attempts():
                    break
                await asyncio.sleep(0.05)
            assert await failed_attempts() > 0
            receiver.delay = 0
            await receiver.start()
            expected = await _all_event_ids(admin)
            assert len(expected) == 40
            await wait_for(lambda: set(receiver.ids()) >= expected, 90, "every event after the restart")

            # What was in flight when the worker died was sent again (its result was never recorded).
            assert all(receiver.ids()[event_id] >= 2 for event_id in in_flight_at_kill)
            assert set(receiver.ids()) == expected  # nothing lost, nothing invented
            unique = {}
            for request in receiver.requests:
                payload = Webhook(secret).verify(request.body, request.headers)
                assert payload["id"] == request.webhook_id
                assert isinstance(payload["seq"], int) and datetime.fromisoformat(
                    payload["created_at"].replace("Z", "+00:00"))
                if request.webhook_id in unique:
                    assert unique[request.webhook_id] == payload  # a resend is the same message
                unique[request.webhook_id] = payload
            assert len(unique) == 40
            assert sorted(p["seq"] for p in unique.values()) == sorted({p["seq"] for p in unique.values()})

            # The last results are recorded just after their requests arrived.
            for _ in range(100):
                succeeded = (await admin.get("/admin/api/webhooks/deliveries", params={"status": "succeeded"})).json()
                if succeeded["total"] == 40:
                    break
                await asyncio.sleep(0.1)
            assert succeeded["total"] == 40
            assert await second.terminate() == 0  # SIGTERM: drains and exits cleanly
    finally:
        for process in (first, second, serve):
            if process is not None:
                process.close()
        await receiver.stop()
        await engine.dispose()


async def test_two_workers_never_send_an_event_twice(fresh_database_url: str) -> None:
    settings = webhook_settings(fresh_database_url)
    engine = create_engine(fresh_database_url)
    receiver = await Receiver(delay=0.02).start()  # counts every request: no deduplication
    workers = []
    try:
        async with session_scope(session_factory(engine)) as session:
            _, secret = await webhooks.create_endpoint(session, CLI_ACTOR, settings,
                                                       EndpointCreate(url=receiver.url(), event_types=["partner.updated"]),
                                                       partner_id=None)
        workers = [worker(fresh_database_url, ACCORD_WEBHOOKS_CONCURRENCY="4") for _ in range(2)]
        total = 300
        for batch in range(10):
            async with session_scope(session_factory(engine)) as session:
                for n in range(total // 10):
                    await events.emit(session, "partner.updated", data={"object": {"n": batch * 100 + n}},
                                      partner_id=uuid.uuid4())
            await asyncio.sleep(0.05)
        await wait_for(lambda: len(receiver.ids()) >= total, 90, "every event")
        await asyncio.sleep(1.0)  # time for a second copy, if one were coming

        counts = receiver.ids()
        assert len(counts) == total and set(counts.values()) == {1}, counts.most_common(3)
        for request in receiver.requests[:20]:
            Webhook(secret).verify(request.body, request.headers)
        async with session_factory(engine)() as session:
            by_worker = dict((await session.execute(
                select(WebhookAttempt.worker, func.count()).group_by(WebhookAttempt.worker))).all())
        assert len(by_worker) == 2 and sum(by_worker.values()) == total, by_worker  # both shared the work
        for process in workers:
            assert await process.terminate() == 0
    finally:
        for process in workers:
            process.close()
        await receiver.stop()
        await engine.dispose()


async def test_accord_serve_runs_the_worker_by_default(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url)
    token = await committed(engine, lambda f: f.admin_token())
    await engine.dispose()
    async with Receiver() as receiver:
        with accord_serve(fresh_database_url, TEST_SECRET, extra_env=WORKER_ENV) as base:
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as admin:
                endpoint = await admin.post("/admin/api/webhooks/endpoints",
                                            json={"url": receiver.url(), "event_types": ["partner.created"]})
                assert endpoint.status_code == 201, endpoint.text
                await admin.post("/admin/api/partners", json={"name": "Acme", "slug": "acme", "type": "technology"})
                await wait_for(lambda: len(receiver.requests) == 1, 30, "the delivery from accord serve")
        Webhook(endpoint.json()["secret"]).verify(receiver.requests[0].body, receiver.requests[0].headers)
