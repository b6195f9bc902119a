"""The background worker: the dispatchers that carry the event outbox to the outside world.

`accord worker` runs them alone; `accord serve` and `accord demo` run them next to the
control plane (unless `--no-worker`). Every dispatcher is safe to run in several
processes at once, so a deployment can run as many workers as it needs.

A dispatcher is built from the settings by a factory listed in `DISPATCHERS` and has:

- `async start()` and `async close()` (open and release its connections);
- `async run_once() -> int`: one pass, returning how much work it did (0: idle);
- optionally `async run(stop: asyncio.Event)`: its own loop, returning once `stop` is
  set and its work in flight is finished. Without it, the worker calls `run_once()`
  in a loop, pausing `poll_interval` seconds (attribute; default 0.5) when idle.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from accord.core.config import Settings

log = logging.getLogger("accord.worker")

_DEFAULT_POLL_INTERVAL = 0.5
_MAX_ERROR_BACKOFF = 30.0


class Dispatcher(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def run_once(self) -> int: ...


DispatcherFactory = Callable[[Settings], Dispatcher]


def _webhooks(settings: Settings) -> Dispatcher:
    from accord.webhooks.dispatcher import WebhookDispatcher

    return WebhookDispatcher(settings)


def _notifications(settings: Settings) -> Dispatcher:
    from accord.notifications.dispatcher import NotificationDispatcher

    return NotificationDispatcher(settings)


def _credential_expiry(settings: Settings) -> Dispatcher:
    from accord.apps.expiry import ExpiryNotifier

    return ExpiryNotifier(settings)


def _agreement_deadlines(settings: Settings) -> Dispatcher:
    from accord.agreements.jobs import DeadlineNotifier

    return DeadlineNotifier(settings)


def _onboarding(settings: Settings) -> Dispatcher:
    from accord.onboarding.sweeper import OnboardingSweeper

    return OnboardingSweeper(settings)


def _retention(settings: Settings) -> Dispatcher:
    from accord.events.retention import RetentionSweeper

    return RetentionSweeper(settings)


# Every dispatcher the worker runs, in one place.
DISPATCHERS: list[DispatcherFactory] = [_webhooks, _notifications, _credential_expiry, _agreement_deadlines,
                                        _onboarding, _retention]


async def run_worker(settings: Settings, stop: asyncio.Event,
                     factories: Sequence[DispatcherFactory] | None = None) -> None:
    """Run the dispatchers until `stop` is set, then let each finish its work in flight and close."""
    dispatchers = [factory(settings) for factory in (DISPATCHERS if factories is None else factories)]
    started: list[Dispatcher] = []
    try:
        for dispatcher in dispatchers:
            await dispatcher.start()
            started.append(dispatcher)
        log.info("worker running %s", ", ".join(type(d).__name__ for d in started) or "no dispatchers")
        await asyncio.gather(*(_run(dispatcher, stop) for dispatcher in started))
    finally:
        for dispatcher in reversed(started):
            try:
                await dispatcher.close()
            except Exception:
                log.exception("closing %s failed", type(dispatcher).__name__)
        log.info("worker stopped")


async def _run(dispatcher: Dispatcher, stop: asyncio.Event) -> None:
    own_loop = getattr(dispatcher, "run", None)
    if own_loop is not None:
        await own_loop(stop)
        return
    interval = float(getattr(dispatcher, "poll_interval", _DEFAULT_POLL_INTERVAL))
    errors = 0
    while not stop.is_set():
        try:
            worked = await dispatcher.run_once()
            errors = 0
        except Exception:
            errors += 1
            log.exception("%s pass failed (%d in a row)", type(dispatcher).__name__, errors)
            worked = 0
        if not worked:
            pause = interval if not errors else min(_MAX_ERROR_BACKOFF, interval * 2 ** errors)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except asyncio.TimeoutError:
                pass


async def run_until_signalled(settings: Settings) -> None:
    """`accord worker`: run until SIGTERM or SIGINT, then drain and exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_worker(settings, stop)
