"""The webhook dispatcher: from the event outbox to signed HTTP deliveries, at least once.

Two steps, each its own short transaction, so any number of dispatchers (in `accord
worker`, `accord serve`, several hosts) can run against one database:

1. Fan-out. Claim events with `fanned_out_at IS NULL` in seq order (PostgreSQL:
   `FOR UPDATE SKIP LOCKED`, so two dispatchers take different events; SQLite has a
   single writer), add one delivery per enabled endpoint that receives the event (its
   owner's events, of its types, created since the endpoint was), and set
   `fanned_out_at` — all in one transaction: an event is fanned out exactly once.

2. Delivery. Claim due deliveries (pending, `next_attempt_at <= now`, no live lease)
   and lease them to this worker (`claimed_by`, `claimed_until` = now + timeout +
   margin), again with SKIP LOCKED; commit; POST each (see `sender.py`) outside any
   transaction; then record every attempt and its consequence in one transaction:
   2xx → succeeded; otherwise retried after a backoff with full jitter (`retries.py`)
   until `webhooks_retry_hours` after the delivery was made, when the delivery fails,
   the endpoint is disabled and `webhook_endpoint.disabled` is emitted for its owner.

Durability: a worker killed at any point loses nothing. Unfanned events stay unfanned;
a leased delivery whose result was never recorded becomes claimable again when its lease
runs out and is sent again — with the same `webhook-id`, so receivers that deduplicate
see it once. In normal running (no crash, leases longer than an attempt) each delivery
is attempted by one worker at a time, so no event is sent twice.

`run_once()` does one pass of both steps and waits for its attempts (tests, tools).
`run(stop)` is the worker loop: it keeps up to `webhooks_concurrency` attempts in flight,
claims more as slots free up, records finished attempts in batches, polls every
`webhooks_poll_interval` when idle, and on `stop` drains: no new claims, in-flight
attempts finish and are recorded, then it returns.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accord.auth.actor import SYSTEM_ACTOR
from accord.core.clock import utcnow
from accord.core.config import Settings
from accord.core.db import create_engine, session_factory, session_scope
from accord.events.models import Event
from accord.events.service import envelope
from accord.webhooks import service
from accord.webhooks.models import (
    DeliveryKind,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from accord.webhooks.retries import retry_delay
from accord.webhooks.sealing import UnreadableSecret, unseal
from accord.webhooks.sender import Outcome, Sender
from accord.webhooks.signing import signature_headers

log = logging.getLogger("accord.webhooks.dispatcher")

FAN_OUT_BATCH = 500  # events per fan-out transaction
# The loop claims and records in batches, not one delivery per transaction: it claims once a
# quarter of its slots are free (or none is busy), and records once a quarter of its slots
# have finished, nothing is in flight, or the oldest result has waited RECORD_DELAY seconds.
RECORD_DELAY = 0.05
_MAX_BACKOFF_ON_ERRORS = 30.0  # seconds between passes while the database keeps failing


@dataclass(frozen=True)
class Job:
    """A claimed delivery, with all it needs to be attempted outside any transaction."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    url: str
    body: str
    secrets: tuple[str, ...]
    secret_error: str  # why it cannot be signed, if so: the attempt fails without a request
    give_up_at: datetime


@dataclass(frozen=True)
class Result:
    job: Job
    attempted_at: datetime
    outcome: Outcome


@dataclass
class _Loop:
    """The worker loop's state: attempts in flight and results not yet recorded."""

    in_flight: set[asyncio.Task[Result]] = field(default_factory=set)
    finished: list[Result] = field(default_factory=list)
    first_finished_at: float = 0.0  # monotonic time the oldest unrecorded result came in
    next_fan_out: float = 0.0  # monotonic time the outbox is looked at next
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:200]


def _body(event: Event) -> str:
    return json.dumps(envelope(event), separators=(",", ":"), ensure_ascii=False)


def _receives(endpoint: WebhookEndpoint, event: Any) -> bool:
    """Whether the endpoint gets this event (an Event, or a row with its seq, id, type, partner_id, created_at)."""
    if endpoint.partner_id is not None and event.partner_id != endpoint.partner_id:
        return False
    if endpoint.event_types and event.type not in endpoint.event_types:
        return False
    # An endpoint gets the events from its registration on; older ones only by a replay.
    return event.created_at >= endpoint.created_at


class WebhookDispatcher:
    name = "webhooks"

    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None,
                 worker_name: str | None = None) -> None:
        self.settings = settings
        self.worker_name = worker_name or _worker_name()
        self.concurrency = settings.webhooks_concurrency
        self._engine = engine
        self._own_engine = engine is None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._sender = Sender(timeout=settings.webhooks_timeout, connect_timeout=settings.webhooks_connect_timeout,
                              allow_http=settings.webhooks_allow_http,
                              allow_private=settings.webhooks_allow_private, concurrency=self.concurrency)

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        if self._engine is None:
            self._engine = create_engine(self.settings.database_url)
        self._sessions = session_factory(self._engine)
        await self._sender.start()
        log.info("webhook dispatcher %s started", self.worker_name)

    async def close(self) -> None:
        await self._sender.close()
        if self._own_engine and self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    # --- one pass ---------------------------------------------------------

    async def run_once(self) -> int:
        """Fan out one batch of events, attempt one batch of due deliveries and record them.

        Returns the events fanned out plus the attempts made: 0 when there was nothing to do.
        """
        fanned = await self.fan_out()
        jobs = await self.claim(self.concurrency)
        results = await asyncio.gather(*(self.attempt(job) for job in jobs))
        await self.record(results)
        return fanned + len(jobs)

    # --- the worker loop ----------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set, then drain (see the module docstring)."""
        state = _Loop()
        errors = 0
        while not stop.is_set():
            state.wakeup.clear()
            try:
                worked = await self._step(state)
                errors = 0
            except Exception:  # the database is away, a bug in one batch …: keep the worker alive
                errors += 1
                delay = min(_MAX_BACKOFF_ON_ERRORS, 0.5 * 2 ** errors)
                log.exception("webhook dispatcher pass failed (%d in a row); next try in %.1f s", errors, delay)
                await _wait(stop, delay)
                continue
            if not worked:
                # Idle, or waiting for attempts: wake when one finishes, else look again soon.
                await _wait(state.wakeup, RECORD_DELAY if state.finished else self.settings.webhooks_poll_interval)
        await self._drain(state)

    async def _step(self, state: _Loop) -> int:
        worked = 0
        if time.monotonic() >= state.next_fan_out:
            fanned = await self.fan_out()
            # While there is a backlog, fan out on every step; otherwise poll.
            state.next_fan_out = time.monotonic() + (0 if fanned else self.settings.webhooks_poll_interval)
            worked += fanned
        quarter = max(1, self.concurrency // 4)
        free = self.concurrency - len(state.in_flight)
        if free >= quarter or (free and not state.in_flight):
            for job in await self.claim(free):
                task = asyncio.create_task(self.attempt(job))
                state.in_flight.add(task)
                task.add_done_callback(lambda t: self._finished(state, t))
                worked += 1
        if state.finished and (len(state.finished) >= quarter or not state.in_flight
                               or time.monotonic() - state.first_finished_at >= RECORD_DELAY):
            batch, state.finished = state.finished, []
            try:
                await self.record(batch)
            except Exception:
                state.finished = batch + state.finished  # recorded on the next step (or retried after a lease)
                raise
            worked += len(batch)
        return worked

    @staticmethod
    def _finished(state: _Loop, task: asyncio.Task[Result]) -> None:
        state.in_flight.discard(task)
        if task.cancelled():
            pass
        elif task.exception() is not None:
            # A bug, not a failed delivery (those are Outcomes): the lease runs out and it is tried again.
            log.error("webhook attempt crashed", exc_info=task.exception())
        else:
            if not state.finished:
                state.first_finished_at = time.monotonic()
            state.finished.append(task.result())
        state.wakeup.set()

    async def _drain(self, state: _Loop) -> None:
        if state.in_flight:
            log.info("webhook dispatcher draining %d attempts in flight", len(state.in_flight))
            await asyncio.gather(*list(state.in_flight), return_exceptions=True)
        if state.finished:
            try:
                await self.record(state.finished)
            except Exception:
                # Not lost: the leases run out and another pass sends these again (same webhook-id).
                log.exception("could not record %d finished attempts while stopping", len(state.finished))
            state.finished = []

    # --- fan-out ------------------------------------------------------------

    async def fan_out(self) -> int:
        """One transaction: deliveries for up to FAN_OUT_BATCH unfanned events, which are then marked."""
        assert self._sessions is not None, "start() the dispatcher first"
        async with session_scope(self._sessions) as session:
            # The columns matching needs, not the payloads: those are read when a delivery is sent.
            events = (await session.execute(
                select(Event.seq, Event.id, Event.type, Event.partner_id, Event.created_at)
                .where(Event.fanned_out_at.is_(None)).order_by(Event.seq).limit(FAN_OUT_BATCH)
                .with_for_update(skip_locked=True))).all()
            if not events:
                return 0
            now = utcnow()
            endpoints = list(await session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))))
            rows = [{"id": uuid.uuid4(), "endpoint_id": endpoint.id, "event_seq": event.seq, "event_id": event.id,
                     "event_type": event.type, "kind": DeliveryKind.event, "status": DeliveryStatus.pending,
                     "attempts": 0, "next_attempt_at": now, "last_error": "", "created_at": now, "updated_at": now}
                    for event in events for endpoint in endpoints if _receives(endpoint, event)]
            if rows:
                await session.execute(insert(WebhookDelivery), rows)
            await session.execute(update(Event).where(Event.seq.in_([event.seq for event in events]))
                                  .values(fanned_out_at=now).execution_options(synchronize_session=False))
        return len(events)

    # --- claiming -----------------------------------------------------------

    async def claim(self, limit: int) -> list[Job]:
        """Lease up to `limit` due deliveries to this worker; committed before any request is made."""
        assert self._sessions is not None, "start() the dispatcher first"
        async with session_scope(self._sessions) as session:
            now = utcnow()
            deliveries = list(await session.scalars(
                select(WebhookDelivery)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.status == DeliveryStatus.pending, WebhookDelivery.next_attempt_at <= now,
                       or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until <= now),
                       WebhookEndpoint.enabled.is_(True))
                .order_by(WebhookDelivery.next_attempt_at).limit(limit)
                .with_for_update(of=WebhookDelivery, skip_locked=True)))
            if not deliveries:
                return []
            lease = now + timedelta(seconds=self.settings.webhooks_timeout + self.settings.webhooks_lease_margin)
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id.in_([d.id for d in deliveries]))
                .values(claimed_by=self.worker_name, claimed_until=lease)
                .execution_options(synchronize_session=False))
            endpoint_ids = {d.endpoint_id for d in deliveries}
            endpoints = {e.id: e for e in await session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoint_ids)))}
            events = {e.seq: e for e in await session.scalars(
                select(Event).where(Event.seq.in_({d.event_seq for d in deliveries})))}
            sealed = await service.signing_secrets(session, endpoint_ids, now)
        secrets = {endpoint_id: self._unseal_all(rows) for endpoint_id, rows in sealed.items()}
        retry_window = timedelta(hours=self.settings.webhooks_retry_hours)
        return [Job(delivery_id=d.id, endpoint_id=d.endpoint_id, event_id=d.event_id,
                    url=endpoints[d.endpoint_id].url, body=_body(events[d.event_seq]),
                    secrets=secrets[d.endpoint_id][0], secret_error=secrets[d.endpoint_id][1],
                    give_up_at=d.created_at + retry_window)
                for d in deliveries]

    def _unseal_all(self, rows: Sequence) -> tuple[tuple[str, ...], str]:
        try:
            secrets = tuple(unseal(row.sealed, self.settings.secret_key) for row in rows)
        except UnreadableSecret as exc:
            return (), str(exc)
        return (secrets, "") if secrets else ((), "the endpoint has no signing secret; rotate its secret")

    # --- one attempt ----------------------------------------------------------

    async def attempt(self, job: Job) -> Result:
        attempted_at = utcnow()
        if job.secret_error:
            return Result(job, attempted_at, Outcome(False, None, 0, error=f"cannot sign: {job.secret_error}"))
        headers = signature_headers(job.event_id, attempted_at, job.body, list(job.secrets))
        outcome = await self._sender.post(job.url, job.body.encode(), headers)
        return Result(job, attempted_at, outcome)

    # --- recording --------------------------------------------------------------

    async def record(self, results: Sequence[Result]) -> None:
        """One transaction: every attempt logged, each delivery moved on, endpoints that gave up disabled.

        Written as two bulk statements (attempts inserted, deliveries updated), not row by row.
        """
        if not results:
            return
        assert self._sessions is not None, "start() the dispatcher first"
        async with session_scope(self._sessions) as session:
            now = utcnow()
            deliveries = {row.id: _DeliveryState(**row._mapping) for row in await session.execute(
                select(*(getattr(WebhookDelivery, name) for name in _DeliveryState.__dataclass_fields__))
                .where(WebhookDelivery.id.in_({r.job.delivery_id for r in results})))}
            attempts: list[dict[str, Any]] = []
            give_up: dict[uuid.UUID, str] = {}
            for result in results:
                delivery = deliveries.get(result.job.delivery_id)
                if delivery is None:
                    continue  # the endpoint was deleted meanwhile, with its deliveries
                attempts.append(self._log_attempt(delivery, result))
                reason = self._move_on(delivery, result, now)
                if reason:
                    give_up[delivery.endpoint_id] = reason
            if attempts:
                await session.execute(insert(WebhookAttempt), attempts)
                await session.execute(_UPDATE_DELIVERY, [
                    {f"new_{k}": v for k, v in asdict(d).items() if k != "endpoint_id"} | {"updated_at_now": now}
                    for d in deliveries.values()])
            for endpoint_id, reason in give_up.items():
                endpoint = await session.get(WebhookEndpoint, endpoint_id)
                if endpoint is not None:
                    await service.disable_for_failures(session, SYSTEM_ACTOR, endpoint, reason)
                    log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)

    def _log_attempt(self, delivery: _DeliveryState, result: Result) -> dict[str, Any]:
        """The attempt's row; the delivery's counters and last outcome updated."""
        outcome = result.outcome
        delivery.attempts += 1
        if delivery.last_attempt_at is None or result.attempted_at >= delivery.last_attempt_at:
            delivery.last_attempt_at = result.attempted_at
            delivery.last_status_code = outcome.status_code
            delivery.last_error = outcome.error
        return {"id": uuid.uuid4(), "delivery_id": delivery.id, "endpoint_id": delivery.endpoint_id,
                "number": delivery.attempts, "attempted_at": result.attempted_at, "succeeded": outcome.succeeded,
                "status_code": outcome.status_code, "latency_ms": outcome.latency_ms,
                "response_excerpt": outcome.response_excerpt, "error": outcome.error, "worker": self.worker_name}

    def _move_on(self, delivery: _DeliveryState, result: Result, now: datetime) -> str | None:
        """The delivery's next state after this attempt; the reason to disable its endpoint, if it gave up."""
        if delivery.status != DeliveryStatus.pending:
            return None  # already settled (another worker took it over after this one's lease ran out)
        if result.outcome.succeeded:
            delivery.status = DeliveryStatus.succeeded
            delivery.finished_at = now
            delivery.next_attempt_at = None
        elif delivery.claimed_by not in (None, self.worker_name):
            return None  # another worker holds it now; its own attempt decides what comes next
        elif now >= result.job.give_up_at:
            delivery.status = DeliveryStatus.failed
            delivery.finished_at = now
            delivery.next_attempt_at = None
            hours = self.settings.webhooks_retry_hours
            return (f"deliveries failed for {hours:g} hours; the last attempt: "
                    f"{result.outcome.error or 'no answer'}")[:500]
        else:
            delivery.next_attempt_at = min(now + retry_delay(delivery.attempts), result.job.give_up_at)
        delivery.claimed_by = None
        delivery.claimed_until = None
        return None


@dataclass
class _DeliveryState:
    """A delivery's columns that an attempt changes, read and written in bulk by `record`."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    claimed_by: str | None
    claimed_until: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str
    finished_at: datetime | None


_DELIVERIES = WebhookDelivery.__table__
# One statement for a batch of deliveries (executemany); `new_<column>` parameters carry the values.
_UPDATE_DELIVERY = (
    update(_DELIVERIES).where(_DELIVERIES.c.id == bindparam("new_id"))
    .values({name: bindparam(f"new_{name}") for name in _DeliveryState.__dataclass_fields__
             if name not in {"id", "endpoint_id"}} | {"updated_at": bindparam("updated_at_now")}))


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass
