"""Usage recording for the gateway: count in memory on the hot path, write in batches off it.

`UsageRecorder.record` (`accord.gateway.tally.Tally.record`, compiled with the request path) is
called once per request, synchronously and without I/O: it adds the request to in-memory counters keyed by (partner, application, API, metric,
environment, minute, status class, denial). Every `flush_interval` seconds a background
task writes everything counted so far in ONE transaction:

- `usage_counts`: upserts (`INSERT … ON CONFLICT (bucket_key) DO UPDATE SET count = count +
  excluded.count, …`), so flushes — from one gateway or several — add up;
- `first_calls`: each application's first admitted (2xx/3xx) call, kept at its earliest time;
- `credentials.last_used_at`: moved forward (never back) for the credentials seen.

Durability, stated plainly:

- A database outage loses nothing that is counted: a failed flush puts its batch back
  and the next interval retries it. Memory stays bounded: at most `max_pending_keys`
  distinct counters are held (default 100 000, about 40 MB); while the bound is
  reached, requests that would need a new counter are not counted and are tallied in
  `dropped_increments` instead (requests adding to an existing counter still count).
  The other pending state is bounded by the program itself: one entry per credential
  used and per application making its first call, plus the set of application ids
  that already made one (loaded at start).
- `close()` (graceful shutdown) makes a final flush.
- On a hard kill (SIGKILL, power loss) what was counted since the last successful
  flush is lost: at most one flush interval of traffic (more only if the database was
  already unreachable at the time).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from accord.apps.models import Credential
from accord.core.db import UTCDateTime, create_engine
from accord.events.models import Event
from accord.events.service import new_event_id
from accord.gateway.tally import Batch, Tally
from accord.usage.models import FirstCall, UsageCount

log = logging.getLogger("accord.gateway.recorder")

_USAGE = UsageCount.__table__
_FIRST_CALLS = FirstCall.__table__
_CREDENTIALS = Credential.__table__
_EVENTS = Event.__table__

class UsageRecorder:
    """Counts requests in memory (`record`) and writes them in batches (`flush`, every `flush_interval`)."""

    def __init__(self, database_url: str, *, flush_interval: float = 1.0,
                 clock: Callable[[], float] = time.time, max_pending_keys: int = 100_000,
                 shutdown_timeout: float = 10.0) -> None:
        self.database_url = database_url
        self.flush_interval = flush_interval
        # How long start() waits for the database and close() for its writes: a database
        # that hangs (rather than refuses) must not hold the gateway's start or shutdown.
        self.shutdown_timeout = shutdown_timeout
        self._clock = clock
        self.tally = Tally(clock, max_pending_keys)
        self.record = self.tally.record  # (the gateway's call per request: compiled, see accord.gateway.tally)
        self._engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        # For /metrics and operators.
        self.flush_lag_seconds = 0.0  # age of the oldest unflushed record at the last flush (attempt)
        self.flush_failures = 0

    @property
    def pending_keys(self) -> int:
        return self.tally.pending_keys

    @property
    def dropped_increments(self) -> int:
        return self.tally.dropped_increments

    @property
    def max_pending_keys(self) -> int:
        return self.tally.max_pending_keys

    # --- lifecycle --------------------------------------------------------

    def note_limit_threshold(self, *, application_id: str, partner_id: str, api_id: str, metric: str,
                             period: str, limit: int, percent: int) -> None:
        """A request took a limit's usage across 50, 80, 90 or 100 %: an event, written at the next flush."""
        now = self._clock()
        data = {"object": {"application_id": application_id, "api_id": api_id, "metric": metric, "period": period,
                           "limit": limit, "percent": percent}}
        self.tally.note(_event_row("usage.limit_threshold", partner_id, "applications", application_id, data, now), now)

    async def start(self) -> None:
        """Open the database and start flushing every `flush_interval` seconds."""
        if self._engine is not None:
            return
        self._engine = create_engine(self.database_url)
        try:
            await asyncio.wait_for(self._load_apps_with_first_call(), timeout=self.shutdown_timeout)
        except Exception as exc:  # noqa: BLE001 - the gateway must start even with its database down
            # Harmless: a first call already stored is kept by the upsert (earliest wins).
            log.warning("could not load the applications that already made a first call: %r", exc)
        self._stopping.clear()
        self._task = asyncio.create_task(self._flush_every_interval(), name="usage-recorder")

    async def close(self) -> None:
        """Stop the flush loop, write what is left (graceful shutdown) and close the database."""
        database_hangs = False
        if self._task is not None:
            self._stopping.set()
            # Let a flush in progress finish rather than cancel it mid-commit, unless it hangs.
            try:
                await asyncio.wait_for(self._task, timeout=self.shutdown_timeout)
            except TimeoutError:
                database_hangs = True
            self._task = None
        if self._engine is not None:
            if not database_hangs:
                try:
                    await asyncio.wait_for(self.flush(), timeout=self.shutdown_timeout)
                except TimeoutError:
                    pass
            if self.tally.pending:
                log.error("shutting down with %d usage counters unwritten (database unavailable); they are lost",
                          len(self.tally.pending.counters))
            await self._engine.dispose()
            self._engine = None

    async def _load_apps_with_first_call(self) -> None:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            ids = (await conn.execute(select(_FIRST_CALLS.c.application_id))).scalars().all()
        self.tally.apps_with_first_call.update(str(app_id) for app_id in ids)

    async def _flush_every_interval(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.flush_interval)
                return
            except TimeoutError:
                pass
            await self.flush()

    # --- writing ----------------------------------------------------------

    async def flush(self) -> None:
        """Write everything counted so far in one transaction.

        Never raises for a database failure: the batch is put back (merged with what was
        counted meanwhile), the failure is logged and counted in `flush_failures`, and the
        next flush retries it.
        """
        if self._engine is None:
            raise RuntimeError("UsageRecorder.start() must be awaited before flush()")
        async with self._flush_lock:
            batch = self.tally.take()
            self.flush_lag_seconds = self._clock() - batch.oldest if batch.oldest is not None else 0.0
            if not batch:
                self.tally.written()
                return
            try:
                await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - any failure: keep the counts, retry next time
                self.tally.put_back(batch)
                self.flush_failures += 1
                log.warning("usage flush failed (%d counters kept for the next attempt): %s",
                            len(batch.counters), exc)
            except BaseException:  # cancelled: the transaction was rolled back, so keep the counts
                self.tally.put_back(batch)
                raise
            finally:
                self.tally.written()

    async def _write(self, batch: Batch) -> None:
        usage_rows = self._usage_rows(batch)
        first_call_rows = self._first_call_rows(batch)
        last_used_rows = self._last_used_rows(batch)
        assert self._engine is not None
        async with self._engine.begin() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            if usage_rows:
                stmt = insert(_USAGE)
                excluded, current = stmt.excluded, _USAGE.c
                stmt = stmt.on_conflict_do_update(index_elements=[current.bucket_key], set_={
                    "count": current["count"] + excluded["count"],
                    "units": current.units + excluded.units,
                    "latency_ms_sum": current.latency_ms_sum + excluded.latency_ms_sum,
                    "latency_ms_max": case((excluded.latency_ms_max > current.latency_ms_max,
                                            excluded.latency_ms_max), else_=current.latency_ms_max),
                })
                await conn.execute(stmt, usage_rows)
            if first_call_rows:
                # New first calls are events (usage.first_call.<environment>): insert-if-absent
                # tells exactly which ones are new, even with several gateways flushing at once.
                new_ids = set((await conn.execute(
                    insert(_FIRST_CALLS).on_conflict_do_nothing(index_elements=[_FIRST_CALLS.c.application_id])
                    .returning(_FIRST_CALLS.c.application_id), first_call_rows)).scalars().all())
                events = [_first_call_event(row) for row in first_call_rows if row["application_id"] in new_ids]
                if events:
                    await conn.execute(insert(_EVENTS), events)
                stored_before = [row for row in first_call_rows if row["application_id"] not in new_ids]
                if stored_before:
                    stmt = insert(_FIRST_CALLS)
                    excluded, current = stmt.excluded, _FIRST_CALLS.c
                    # Another gateway may have stored a later one: the earliest wins.
                    stmt = stmt.on_conflict_do_update(
                        index_elements=[current.application_id],
                        set_={"at": excluded.at, "partner_id": excluded.partner_id, "api_id": excluded.api_id,
                              "environment": excluded.environment},
                        where=excluded.at < current.at)
                    await conn.execute(stmt, stored_before)
            if batch.thresholds:
                await conn.execute(insert(_EVENTS), batch.thresholds)
            if last_used_rows:
                # A Core UPDATE, not an ORM change: it does not bump the program version
                # (accord.core.version), so gateways do not rebuild their snapshot for it.
                seen = bindparam("seen", type_=UTCDateTime())
                stmt = (update(_CREDENTIALS)
                        .where(and_(_CREDENTIALS.c.id == bindparam("credential_id"),
                                    or_(_CREDENTIALS.c.last_used_at.is_(None), _CREDENTIALS.c.last_used_at < seen)))
                        .values(last_used_at=seen))
                await conn.execute(stmt, last_used_rows)

    # Rows are built (and checked) before the transaction. Input that could never be
    # written — a malformed id — is dropped from the batch with an error logged, so one
    # bad record cannot block every later flush.

    def _usage_rows(self, batch: Batch) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for key, counter in list(batch.counters.items()):
            count, units, ms_sum, ms_max = counter.count, counter.units, counter.ms_sum, counter.ms_max
            partner, app, api, metric, environment, minute, klass, denial = key
            try:
                ids = (_as_uuid(partner), _as_uuid(app), _as_uuid(api), _as_uuid(metric))
            except ValueError:
                log.error("usage with a malformed id is dropped: %r", key)
                del batch.counters[key]
                self.tally.dropped_increments += int(count)
                continue
            environment = _text(environment, 32) or None
            denial = _text(denial, 64)
            bucket_key = _bucket_key(*ids, environment, minute, klass, denial)
            row = rows.get(bucket_key)
            if row is not None:  # two keys that differ only by what was truncated: one row
                row["count"] += count
                row["units"] += units
                row["latency_ms_sum"] += ms_sum
                row["latency_ms_max"] = max(row["latency_ms_max"], ms_max)
                continue
            rows[bucket_key] = {
                "bucket_key": bucket_key, "minute": datetime.fromtimestamp(minute, UTC),
                "partner_id": ids[0], "application_id": ids[1], "api_id": ids[2], "metric_id": ids[3],
                "environment": environment, "status_class": klass, "denial": denial,
                "count": count, "units": units, "latency_ms_sum": ms_sum, "latency_ms_max": ms_max,
            }
        return list(rows.values())

    def _first_call_rows(self, batch: Batch) -> list[dict[str, Any]]:
        rows = []
        for app_id, (at, partner, api, environment) in list(batch.first_calls.items()):
            try:
                rows.append({"application_id": _as_uuid(app_id), "partner_id": _as_uuid(partner),
                             "api_id": _as_uuid(api), "environment": _text(environment, 32) or None,
                             "at": datetime.fromtimestamp(at, UTC)})
            except ValueError:
                log.error("first call with a malformed id is dropped: %r", (app_id, partner, api))
                del batch.first_calls[app_id]
        return rows

    def _last_used_rows(self, batch: Batch) -> list[dict[str, Any]]:
        rows = []
        for credential_id, seen in list(batch.last_used.items()):
            try:
                rows.append({"credential_id": _as_uuid(credential_id), "seen": datetime.fromtimestamp(seen, UTC)})
            except ValueError:
                log.error("credential use with a malformed id is dropped: %r", credential_id)
                del batch.last_used[credential_id]
        return rows


def _as_uuid(value: str | uuid.UUID | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value)


def _text(value: str | None, length: int) -> str:
    """Fit a column: no NUL (PostgreSQL refuses it), at most `length` characters."""
    return (value or "").replace("\x00", "")[:length]


def _bucket_key(partner: uuid.UUID | None, app: uuid.UUID | None, api: uuid.UUID | None,
                metric: uuid.UUID | None, environment: str | None, minute: int, klass: str, denial: str) -> str:
    parts = [str(v) if v is not None else "" for v in (partner, app, api, metric)]
    joined = "|".join([*parts, environment or "", str(minute), klass, denial])
    return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()


def _event_row(event_type: str, partner_id: str | uuid.UUID | None, subject_type: str, subject_id: str,
               data: dict[str, Any], at: float) -> dict[str, Any]:
    """An outbox row written with Core (the gateway has no ORM session)."""
    return {"id": new_event_id(), "type": event_type, "partner_id": _as_uuid(partner_id) if partner_id else None,
            "subject_type": subject_type, "subject_id": str(subject_id), "data": data,
            "created_at": datetime.fromtimestamp(at, UTC)}


def _first_call_event(row: dict[str, Any]) -> dict[str, Any]:
    environment = row["environment"] or "production"
    data = {"object": {"application_id": str(row["application_id"]),
                       "partner_id": str(row["partner_id"]) if row["partner_id"] else None,
                       "api_id": str(row["api_id"]) if row["api_id"] else None,
                       "environment": environment, "at": row["at"].isoformat()}}
    return _event_row(f"usage.first_call.{environment}", row["partner_id"], "applications",
                      str(row["application_id"]), data, row["at"].timestamp())
