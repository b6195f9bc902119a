"""The usage recorder against real SQLite and PostgreSQL databases of the test's own (it commits for real)."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from accord.apps.models import Credential
from accord.core.db import create_engine, session_factory
from accord.gateway.recorder import UsageRecorder
from accord.usage.models import FirstCall, UsageCount
from tests.conftest import TEST_SECRET
from tests.factories import Factory

# 2025-03-01T10:00:00Z: a minute boundary.
T0 = 1_740_823_200.0
NEVER = 3600.0  # a flush interval the tests never reach: they flush explicitly


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def at(seconds_after_t0: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds_after_t0, UTC)


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's own committed database, for reading what the recorder wrote."""
    engine = create_engine(fresh_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def recorder(fresh_database_url: str, clock: FakeClock) -> AsyncIterator[UsageRecorder]:
    recorder = UsageRecorder(fresh_database_url, flush_interval=NEVER, clock=clock)
    await recorder.start()
    yield recorder
    await recorder.close()


async def usage_rows(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(select(UsageCount.__table__))).all())


async def first_call_rows(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(select(FirstCall.__table__))).all())


def by_dimensions(rows: list[Any]) -> dict[tuple, tuple]:
    """(app, metric, minute, status class, denial) -> (count, units, ms sum, ms max)."""
    return {(str(r.application_id) if r.application_id else None, str(r.metric_id) if r.metric_id else None,
             r.minute, r.status_class, r.denial): (r._mapping["count"], r.units, round(r.latency_ms_sum, 6),
                                                   r.latency_ms_max)
            for r in rows}


async def test_counts_are_aggregated_per_minute_status_class_denial_and_metric(
        recorder: UsageRecorder, clock: FakeClock, db: AsyncEngine) -> None:
    partner, app, api, hits, search = ids(5)
    call = dict(application_id=app, partner_id=partner, api_id=api, environment="production")
    for i in range(5):  # minute 0: five admitted calls matching two rules
        clock.now = T0 + i
        recorder.record(**call, metrics=[(hits, 1), (search, 3)], status=200, denial=None, latency=0.010 * (i + 1))
    clock.now = T0 + 61  # minute 1: two upstream failures, one redirect
    recorder.record(**call, metrics=[(hits, 1)], status=502, denial=None, latency=0.5)
    recorder.record(**call, metrics=[(hits, 1)], status=503, denial=None, latency=0.25)
    recorder.record(**call, metrics=[(hits, 1)], status=302, denial=None, latency=0.001)
    for _ in range(3):  # unknown credential: refused before any application or rule
        recorder.record(application_id=None, partner_id=None, api_id=api, environment="production", metrics=(),
                        status=403, denial="credential-unknown", latency=0.002)
    recorder.record(**call, metrics=[(hits, 1)], status=429, denial="limit-reached", latency=0.003)
    # Two rules mapping to one metric: one request, the deltas added.
    recorder.record(**call, metrics=[(search, 2), (search, 5)], status=200, denial=None, latency=0.004)

    await recorder.flush()
    rows = by_dimensions(await usage_rows(db))

    assert rows == {
        (app, None, at(0), "2xx", ""): (5, 0, 150.0, 50.0),
        (app, hits, at(0), "2xx", ""): (5, 5, 150.0, 50.0),
        (app, search, at(0), "2xx", ""): (5, 15, 150.0, 50.0),
        (app, None, at(60), "5xx", ""): (2, 0, 750.0, 500.0),
        (app, hits, at(60), "5xx", ""): (2, 2, 750.0, 500.0),
        (app, None, at(60), "3xx", ""): (1, 0, 1.0, 1.0),
        (app, hits, at(60), "3xx", ""): (1, 1, 1.0, 1.0),
        (None, None, at(60), "4xx", "credential-unknown"): (3, 0, 6.0, 2.0),
        (app, None, at(60), "4xx", "limit-reached"): (1, 0, 3.0, 3.0),
        (app, hits, at(60), "4xx", "limit-reached"): (1, 1, 3.0, 3.0),
        (app, None, at(60), "2xx", ""): (1, 0, 4.0, 4.0),
        (app, search, at(60), "2xx", ""): (1, 7, 4.0, 4.0),
    }
    raw = await usage_rows(db)
    unknown = next(r for r in raw if r.denial == "credential-unknown")
    assert unknown.partner_id is None and str(unknown.api_id) == api and unknown.environment == "production"
    assert {str(r.partner_id) for r in raw if r.application_id is not None} == {partner}
    assert recorder.pending_keys == 0


async def test_two_flushes_add_up_in_the_same_rows(recorder: UsageRecorder, clock: FakeClock,
                                                   db: AsyncEngine) -> None:
    partner, app, api, hits = ids(4)
    call = dict(application_id=app, partner_id=partner, api_id=api, environment="sandbox", metrics=[(hits, 2)],
                status=200, denial=None)
    for _ in range(3):
        recorder.record(**call, latency=0.1)
    await recorder.flush()
    clock.now = T0 + 30  # same minute
    recorder.record(**call, latency=0.3)
    recorder.record(**call, latency=0.05)
    await recorder.flush()

    rows = by_dimensions(await usage_rows(db))
    assert rows == {
        (app, None, at(0), "2xx", ""): (5, 0, 650.0, 300.0),
        (app, hits, at(0), "2xx", ""): (5, 10, 650.0, 300.0),
    }
    # A later maximum does not lower an earlier one.
    recorder.record(**call, latency=0.001)
    await recorder.flush()
    rows = by_dimensions(await usage_rows(db))
    assert rows[(app, hits, at(0), "2xx", "")] == (6, 12, 651.0, 300.0)


async def test_first_admitted_call_is_stored_once_at_its_earliest_time(
        fresh_database_url: str, recorder: UsageRecorder, clock: FakeClock, db: AsyncEngine) -> None:
    partner, app, other_app, api = ids(4)
    call = dict(application_id=app, partner_id=partner, api_id=api, environment="sandbox", metrics=())
    recorder.record(**call, status=403, denial="method-not-in-product", latency=0.001)  # refused: not a first call
    clock.now = T0 + 5
    recorder.record(**call, status=502, denial=None, latency=0.001)  # upstream failed: not admitted either
    clock.now = T0 + 10
    recorder.record(**call, status=200, denial=None, latency=0.001)  # the first call
    clock.now = T0 + 20
    recorder.record(**call, status=201, denial=None, latency=0.001)
    await recorder.flush()
    clock.now = T0 + 30
    recorder.record(**call, status=200, denial=None, latency=0.001)
    await recorder.flush()

    rows = await first_call_rows(db)
    assert [(str(r.application_id), str(r.partner_id), str(r.api_id), r.environment, r.at) for r in rows] == [
        (app, partner, api, "sandbox", at(10))]

    # A restarted gateway loads who already made a first call and does not write it again.
    restarted = UsageRecorder(fresh_database_url, flush_interval=NEVER, clock=FakeClock(T0 + 99))
    await restarted.start()
    restarted.record(**call, status=200, denial=None, latency=0.001)
    restarted.record(application_id=other_app, partner_id=partner, api_id=api, environment="production",
                     metrics=(), status=204, denial=None, latency=0.001)
    await restarted.close()
    rows = {str(r.application_id): r.at for r in await first_call_rows(db)}
    assert rows == {app: at(10), other_app: at(99)}


async def test_earliest_first_call_wins_between_gateways(fresh_database_url: str, db: AsyncEngine) -> None:
    partner, app, api = ids(3)
    call = dict(application_id=app, partner_id=partner, api_id=api, environment="production", metrics=(),
                status=200, denial=None, latency=0.001)
    # Three gateways started before the application's first call, each seeing one of its calls.
    gateways = [UsageRecorder(fresh_database_url, flush_interval=NEVER, clock=FakeClock(T0 + seconds))
                for seconds in (100, 200, 50)]
    for gateway in gateways:
        await gateway.start()
        gateway.record(**call)
    try:
        await gateways[0].flush()
        assert [r.at for r in await first_call_rows(db)] == [at(100)]
        await gateways[1].flush()  # a later one does not replace it …
        assert [r.at for r in await first_call_rows(db)] == [at(100)]
        await gateways[2].flush()  # … an earlier one does
        assert [r.at for r in await first_call_rows(db)] == [at(50)]
    finally:
        for gateway in gateways:
            await gateway.close()


async def test_a_failed_flush_keeps_everything_for_the_next_one(
        recorder: UsageRecorder, clock: FakeClock, db: AsyncEngine) -> None:
    partner, app, api, hits = ids(4)
    call = dict(application_id=app, partner_id=partner, api_id=api, environment="production", metrics=[(hits, 1)],
                denial=None, latency=0.01)
    recorder.record(**call, status=200)
    recorder.record(**call, status=500)

    async with db.begin() as conn:  # the table disappears: every write of the flush fails
        await conn.execute(text("ALTER TABLE usage_counts RENAME TO usage_counts_away"))
    clock.now = T0 + 2
    await recorder.flush()
    assert recorder.flush_failures == 1
    assert recorder.pending_keys == 4
    assert recorder.flush_lag_seconds == 2.0
    # One transaction: the first call of this flush was not written either.
    assert await first_call_rows(db) == []

    clock.now = T0 + 70  # more traffic while the database is away, in the same and a new minute
    recorder.record(**call, status=200)
    clock.now = T0 + 75
    await recorder.flush()
    assert recorder.flush_failures == 2
    assert recorder.flush_lag_seconds == 75.0  # the oldest record waits since T0

    async with db.begin() as conn:
        await conn.execute(text("ALTER TABLE usage_counts_away RENAME TO usage_counts"))
    await recorder.flush()
    assert recorder.pending_keys == 0
    rows = by_dimensions(await usage_rows(db))
    assert rows == {
        (app, None, at(0), "2xx", ""): (1, 0, 10.0, 10.0),
        (app, hits, at(0), "2xx", ""): (1, 1, 10.0, 10.0),
        (app, None, at(0), "5xx", ""): (1, 0, 10.0, 10.0),
        (app, hits, at(0), "5xx", ""): (1, 1, 10.0, 10.0),
        (app, None, at(60), "2xx", ""): (1, 0, 10.0, 10.0),
        (app, hits, at(60), "2xx", ""): (1, 1, 10.0, 10.0),
    }
    assert [r.at for r in await first_call_rows(db)] == [at(0)]


async def test_counts_made_while_the_database_is_unreachable_are_kept(
        backend: str, tmp_path: Path, clock: FakeClock) -> None:
    if backend == "postgres":
        url = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/missing-directory/accord.db"
    recorder = UsageRecorder(url, flush_interval=NEVER, clock=clock)
    await recorder.start()  # the gateway starts anyway
    partner, app, api = ids(3)
    recorder.record(application_id=app, partner_id=partner, api_id=api, environment="production", metrics=(),
                    status=200, denial=None, latency=0.01)
    await recorder.flush()
    assert recorder.flush_failures == 1 and recorder.pending_keys == 1
    await recorder.close()  # logs what is lost; does not raise
    assert recorder.flush_failures == 2


async def test_close_writes_what_is_left(fresh_database_url: str, clock: FakeClock, db: AsyncEngine) -> None:
    recorder = UsageRecorder(fresh_database_url, flush_interval=NEVER, clock=clock)
    await recorder.start()
    partner, app, api = ids(3)
    for _ in range(4):
        recorder.record(application_id=app, partner_id=partner, api_id=api, environment="sandbox", metrics=(),
                        status=404, denial=None, latency=0.02)
    assert await usage_rows(db) == []
    await recorder.close()
    assert by_dimensions(await usage_rows(db)) == {(app, None, at(0), "4xx", ""): (4, 0, 80.0, 20.0)}


async def test_the_background_loop_flushes_every_interval(fresh_database_url: str, db: AsyncEngine) -> None:
    recorder = UsageRecorder(fresh_database_url, flush_interval=0.05)
    await recorder.start()
    try:
        partner, app, api = ids(3)
        recorder.record(application_id=app, partner_id=partner, api_id=api, environment="sandbox", metrics=(),
                        status=200, denial=None, latency=0.02)
        for _ in range(200):
            if await usage_rows(db):
                break
            await asyncio.sleep(0.05)
        rows = await usage_rows(db)
        assert [(str(r.application_id), r._mapping["count"]) for r in rows] == [(app, 1)]
        assert 0.0 <= recorder.flush_lag_seconds < 30
    finally:
        await recorder.close()


async def test_credentials_last_used_is_moved_forward_in_the_flush(
        fresh_database_url: str, recorder: UsageRecorder, clock: FakeClock, db: AsyncEngine) -> None:
    async with session_factory(db)() as session:
        factory = Factory(session, TEST_SECRET)
        app = await factory.application(await factory.partner())
        used, _ = await factory.credential(app)
        recent, _ = await factory.credential(app, name="recent", last_used_at=at(3600))
        await session.commit()
        app_id, partner_id = str(app.id), str(app.partner_id)
        used_id, recent_id = str(used.id), str(recent.id)

    call = dict(application_id=app_id, partner_id=partner_id, api_id=None, environment="sandbox", metrics=(),
                status=200, denial=None, latency=0.001)
    recorder.record(**call, credential_id=used_id)
    clock.now = T0 + 40
    recorder.record(**call, credential_id=used_id)
    recorder.record(**call, credential_id=recent_id)  # already used later than this: unchanged
    clock.now = T0 + 45
    recorder.record(**call)  # no credential
    await recorder.flush()

    async with db.connect() as conn:
        last_used = dict((await conn.execute(select(Credential.id, Credential.last_used_at))).all())
    assert last_used == {used.id: at(40), recent.id: at(3600)}

    # And a credential deleted meanwhile does not fail the flush.
    async with db.begin() as conn:
        await conn.execute(update(Credential.__table__).values(last_used_at=None))
    clock.now = T0 + 50
    recorder.record(**call, credential_id=str(uuid.uuid4()))
    recorder.record(**call, credential_id=recent_id)
    await recorder.flush()
    assert recorder.flush_failures == 0
    async with db.connect() as conn:
        last_used = dict((await conn.execute(select(Credential.id, Credential.last_used_at))).all())
    assert last_used == {used.id: None, recent.id: at(50)}


async def test_a_malformed_id_is_dropped_without_blocking_the_rest(
        recorder: UsageRecorder, db: AsyncEngine) -> None:
    partner, app, api = ids(3)
    recorder.record(application_id="not-a-uuid", partner_id=partner, api_id=api, environment="sandbox",
                    metrics=(), status=200, denial=None, latency=0.001)
    recorder.record(application_id=app, partner_id=partner, api_id=api, environment="sandbox", metrics=(),
                    status=200, denial=None, latency=0.001)
    await recorder.flush()
    assert recorder.flush_failures == 0 and recorder.dropped_increments == 1
    assert [str(r.application_id) for r in await usage_rows(db)] == [app]
    assert [str(r.application_id) for r in await first_call_rows(db)] == [app]


def test_memory_is_bounded_by_max_pending_keys() -> None:
    recorder = UsageRecorder("sqlite+aiosqlite:///unused.db", clock=FakeClock(), max_pending_keys=3)
    partner, api = ids(2)
    apps = ids(5)
    for app in apps:
        recorder.record(application_id=app, partner_id=partner, api_id=api, environment="sandbox", metrics=(),
                        status=200, denial=None, latency=0.001)
    assert recorder.pending_keys == 3
    assert recorder.dropped_increments == 2
    # Counters already held keep counting.
    recorder.record(application_id=apps[0], partner_id=partner, api_id=api, environment="sandbox", metrics=(),
                    status=200, denial=None, latency=0.001)
    assert recorder.pending_keys == 3 and recorder.dropped_increments == 2


async def test_flush_lag_is_the_age_of_the_oldest_unflushed_record(
        recorder: UsageRecorder, clock: FakeClock) -> None:
    partner, app, api = ids(3)
    call = dict(application_id=app, partner_id=partner, api_id=api, environment="sandbox", metrics=(),
                status=200, denial=None, latency=0.001)
    recorder.record(**call)
    clock.now = T0 + 1.5
    recorder.record(**call)
    clock.now = T0 + 2.5
    await recorder.flush()
    assert recorder.flush_lag_seconds == 2.5
    clock.now = T0 + 9
    await recorder.flush()
    assert recorder.flush_lag_seconds == 0.0


async def test_a_hanging_database_holds_neither_start_nor_shutdown(clock: FakeClock) -> None:
    """A server that accepts connections and never answers (a black-holed database)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    recorder = UsageRecorder(f"postgresql://postgres@127.0.0.1:{port}/accord", flush_interval=NEVER, clock=clock,
                             shutdown_timeout=0.3)
    try:
        started = asyncio.get_running_loop().time()
        await recorder.start()
        partner, app, api = ids(3)
        recorder.record(application_id=app, partner_id=partner, api_id=api, environment="production", metrics=(),
                        status=200, denial=None, latency=0.01)
        await recorder.close()
        assert asyncio.get_running_loop().time() - started < 5
        assert accepted, "the recorder never tried the database"
        assert recorder.pending_keys == 1  # not written, and not double counted as written
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
