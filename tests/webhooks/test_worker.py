"""The worker: runs its dispatchers until stopped, survives failing passes, and drains before closing."""
from __future__ import annotations

import asyncio
import time

from accord.core.config import Settings
from accord.webhooks.dispatcher import WebhookDispatcher
from accord.worker import DISPATCHERS, run_worker
from tests.webhooks.harness import Receiver, live
from tests.webhooks.processes import wait_for


class PollingDispatcher:
    """The smallest dispatcher `accord.worker` accepts: start, run_once, close (no loop of its own)."""

    poll_interval = 0.01

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.calls: list[str] = []
        self.passes = 0

    async def start(self) -> None:
        self.calls.append("start")

    async def run_once(self) -> int:
        self.passes += 1
        if self.passes == 3:
            raise RuntimeError("the database went away")  # one failed pass must not end the worker
        return 1 if self.passes < 5 else 0

    async def close(self) -> None:
        self.calls.append("close")


async def test_run_worker_polls_each_dispatcher_until_stopped_then_closes_it(settings: Settings) -> None:
    made: list[PollingDispatcher] = []

    def factory(s: Settings) -> PollingDispatcher:
        made.append(PollingDispatcher(s))
        return made[-1]

    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop, [factory, factory]))
    await wait_for(lambda: len(made) == 2 and all(d.passes >= 8 for d in made), 10, "passes", interval=0.01)
    assert not worker.done()
    stop.set()
    await asyncio.wait_for(worker, 5)
    assert [d.calls for d in made] == [["start", "close"], ["start", "close"]]
    assert all(d.settings is settings for d in made)


def test_the_worker_runs_every_dispatcher(settings: Settings) -> None:
    from accord.agreements.jobs import DeadlineNotifier
    from accord.apps.expiry import ExpiryNotifier
    from accord.events.retention import RetentionSweeper
    from accord.notifications.dispatcher import NotificationDispatcher
    from accord.onboarding.sweeper import OnboardingSweeper

    assert [type(factory(settings)) for factory in DISPATCHERS] == [
        WebhookDispatcher, NotificationDispatcher, ExpiryNotifier, DeadlineNotifier, OnboardingSweeper,
        RetentionSweeper]


async def test_stopping_the_loop_finishes_and_records_the_attempts_in_flight(fresh_database_url: str) -> None:
    async with Receiver(delay=0.8) as receiver, live(fresh_database_url) as env:
        endpoint = await env.endpoint(receiver.url())
        for slug in ("one", "two", "three"):
            await env.partner(slug)
        stop = asyncio.Event()
        loop = asyncio.create_task(env.dispatcher.run(stop))
        await wait_for(lambda: receiver.answering == 3, 10, "three attempts in flight", interval=0.01)
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(loop, 10)
        assert time.monotonic() - started >= 0.3  # it waited for the answers rather than dropping them
        deliveries = (await env.admin.get("/admin/api/webhooks/deliveries",
                                          params={"endpoint_id": endpoint["id"]})).json()["items"]
        assert [(d["status"], d["attempts"]) for d in deliveries] == [("succeeded", 1)] * 3
        assert len(receiver.requests) == 3
