"""Exact rate limits, in memory and in a real Redis.

The shared Redis is at ACCORD_TEST_REDIS_URL (default redis://127.0.0.1:6379/15);
these tests touch only keys under their own random prefix. Outside CI they skip
when it is unreachable; under CI=true they fail instead. Outage tests start a
private `redis-server` on a free port so the shared one is never stopped.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from accord.gateway.limits import (
    NO_LIMITS,
    LimitCheck,
    LimiterUnavailable,
    MemoryLimiter,
    RedisLimiter,
    policy_item,
    ratelimit_item,
)
from accord.gateway.periods import ETERNITY_END, window, window_seconds
from tests.databases import IN_CI
from tests.servers import free_port

REDIS_URL = os.environ.get("ACCORD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- helpers ----------------------------------------------------------------------------------

def epoch(iso: str) -> float:
    """'2024-02-29T23:59:59.9' (UTC) as epoch seconds."""
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, iso: str = "2024-06-01T12:00:00") -> None:
        self.now = epoch(iso)

    def at(self, iso: str) -> None:
        self.now = epoch(iso)

    def __call__(self) -> float:
        return self.now


def _unreachable(what: str, exc: Exception) -> None:
    message = f"{what}: {exc}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: Redis tests must run)", pytrace=False)
    pytest.skip(f"{message}; start Redis to run these tests")


def require_redis() -> None:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        _unreachable(f"Redis unreachable at {REDIS_URL}", exc)


def redis_keys(prefix: str, url: str = REDIS_URL) -> dict[str, int]:
    """Every counter under `prefix` and its value."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return {key: int(client.get(key)) for key in client.scan_iter(match=f"{prefix}*")}


class PrivateRedis:
    """A redis-server of the test's own, on a fixed free port, that the test may kill and restart."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _unreachable("redis-server not installed", FileNotFoundError("redis-server"))
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")  # a file, not a pipe nobody reads
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.directory)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
                    client.ping()
                return
            except (redis.RedisError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {(self.directory / 'redis.log').read_text()}")
                time.sleep(0.02)

    def kill(self) -> None:
        """Stop it hard, like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def value(self, key: str) -> int | None:
        with redis.Redis(port=self.port) as client:
            raw = client.get(key)
        return None if raw is None else int(raw)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (and no others)."""
    prefix = f"accord:test:{os.getpid()}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    try:
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
    except (redis.RedisError, OSError):
        pass


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: Clock,
                  prefix: str) -> AsyncIterator[MemoryLimiter | RedisLimiter]:
    if request.param == "memory":
        yield MemoryLimiter(clock)
        return
    require_redis()
    # Generous timeouts: a busy test machine must not turn into a (fallback) outage.
    limiter = RedisLimiter(REDIS_URL, clock=clock, key_prefix=prefix, connect_timeout=5, timeout=5)
    yield limiter
    assert limiter.unavailable_total == 0, "Redis was unreachable during the test: it ran on the fallback"
    await limiter.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


# --- RateLimit header items -------------------------------------------------------------------

def test_policy_and_ratelimit_items_follow_the_structured_field_draft() -> None:
    assert policy_item("hits", 60, 60) == '"hits";q=60;w=60'
    assert policy_item("hits", 1000, None) == '"hits";q=1000'  # eternity: no window
    assert ratelimit_item("hits", 41, 17) == '"hits";r=41;t=17'
    assert ratelimit_item("hits", 41, None) == '"hits";r=41'
    assert ratelimit_item("hits", -3, 5) == '"hits";r=0;t=5'  # r is a non-negative integer
    assert policy_item('a"b\\c', 1, 1) == '"a\\"b\\\\c";q=1;w=1'
    assert ratelimit_item("héllo\n", 1, 1) == '"h?llo?";r=1;t=1'


# --- windows ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("period", "instant", "start", "end"), [
    ("second", "2024-06-01T12:00:00.999", "2024-06-01T12:00:00", "2024-06-01T12:00:01"),
    ("minute", "2024-06-01T12:34:56.7", "2024-06-01T12:34:00", "2024-06-01T12:35:00"),
    ("hour", "2024-06-01T12:34:56", "2024-06-01T12:00:00", "2024-06-01T13:00:00"),
    ("day", "2024-12-31T23:59:59.9", "2024-12-31T00:00:00", "2025-01-01T00:00:00"),
    ("week", "2024-06-09T23:59:59.9", "2024-06-03T00:00:00", "2024-06-10T00:00:00"),  # Sunday → Monday
    ("week", "2024-06-10T00:00:00", "2024-06-10T00:00:00", "2024-06-17T00:00:00"),  # Monday starts one
    ("week", "1970-01-01T00:00:00", "1969-12-29T00:00:00", "1970-01-05T00:00:00"),  # the epoch was a Thursday
    ("month", "2024-02-29T23:59:59.9", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
    ("month", "2023-02-28T12:00:00", "2023-02-01T00:00:00", "2023-03-01T00:00:00"),
    ("month", "2024-12-31T23:59:59.999", "2024-12-01T00:00:00", "2025-01-01T00:00:00"),
    ("year", "2024-12-31T23:59:59.9", "2024-01-01T00:00:00", "2025-01-01T00:00:00"),
])
def test_windows_are_calendar_aligned_in_utc(period: str, instant: str, start: str, end: str) -> None:
    assert window(period, epoch(instant)) == (int(epoch(start)), int(epoch(end)))


def test_window_lengths() -> None:
    assert window_seconds("month", epoch("2024-02-10T00:00:00")) == 29 * 86_400
    assert window_seconds("month", epoch("2023-02-10T00:00:00")) == 28 * 86_400
    assert window_seconds("month", epoch("2024-01-10T00:00:00")) == 31 * 86_400
    assert window_seconds("year", epoch("2024-05-01T00:00:00")) == 366 * 86_400
    assert window_seconds("week", epoch("2024-05-01T00:00:00")) == 7 * 86_400
    assert window_seconds("eternity", epoch("2024-05-01T00:00:00")) is None
    assert window("eternity", epoch("2024-05-01T00:00:00")) == (0, ETERNITY_END)
    with pytest.raises(KeyError):
        window("fortnight", 0.0)


# --- exactness and atomicity (memory and Redis) -----------------------------------------------

async def test_concurrent_requests_admit_exactly_the_limit(limiter: MemoryLimiter | RedisLimiter) -> None:
    check = [LimitCheck("app|hits", "minute", 50, 1)]
    decisions = await asyncio.gather(*(limiter.consume(check) for _ in range(150)))
    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(50))
    assert all(d.retry_after == 60 and d.exceeded_key == "app|hits" for d in decisions if not d.allowed)


async def test_a_denied_request_consumes_nothing_from_any_counter(limiter: MemoryLimiter | RedisLimiter,
                                                                  clock: Clock) -> None:
    full = LimitCheck("app|hits", "minute", 1, 1)
    other = LimitCheck("app|hits|u:ann", "hour", 5, 1)
    assert (await limiter.consume([full])).allowed
    denied = await limiter.consume([other, full])
    assert not denied.allowed and denied.exceeded_key == "app|hits" and denied.remaining == 0
    assert denied.period == "minute" and denied.limit == 1
    after = await limiter.consume([other])
    assert after.allowed and after.remaining == 4  # untouched by the denied request
    if isinstance(limiter, RedisLimiter):
        assert await limiter._client.call("GET", limiter.counter_key(full, clock())) == b"1"
        assert await limiter._client.call("GET", limiter.counter_key(other, clock())) == b"1"


async def test_deltas_count_units_not_requests(limiter: MemoryLimiter | RedisLimiter) -> None:
    def take(units: int) -> list[LimitCheck]:
        return [LimitCheck("app|bytes", "minute", 10, units)]

    assert [(await limiter.consume(take(4))).remaining for _ in range(2)] == [6, 2]
    assert not (await limiter.consume(take(4))).allowed  # 8 + 4 > 10, and it takes nothing
    assert (await limiter.consume(take(2))).remaining == 0
    assert not (await limiter.consume(take(1))).allowed
    zero = await limiter.consume([LimitCheck("app|nothing", "minute", 0, 1)])
    assert not zero.allowed and zero.limit == 0 and zero.retry_after == 60


async def test_a_counter_named_twice_in_one_request_counts_both(limiter: MemoryLimiter | RedisLimiter) -> None:
    twice = [LimitCheck("app|hits", "minute", 5, 2), LimitCheck("app|hits", "minute", 5, 2)]
    assert (await limiter.consume(twice)).remaining == 1
    assert not (await limiter.consume(twice)).allowed
    assert (await limiter.consume([LimitCheck("app|hits", "minute", 5, 1)])).remaining == 0


async def test_no_checks_means_no_limits(limiter: MemoryLimiter | RedisLimiter) -> None:
    decision = await limiter.consume([])
    assert decision is NO_LIMITS
    assert decision.allowed and decision.limit == -1 and decision.remaining == -1 and decision.retry_after is None


# --- which check the decision describes -------------------------------------------------------

async def test_allowed_decision_describes_the_tightest_check(limiter: MemoryLimiter | RedisLimiter,
                                                             clock: Clock) -> None:
    clock.at("2024-06-01T12:00:30")
    decision = await limiter.consume([LimitCheck("app|hits", "minute", 10, 1),
                                      LimitCheck("app|hits", "hour", 5, 1)])
    assert (decision.limit, decision.remaining, decision.period, decision.reset) == (5, 4, "hour", 3570)
    assert decision.policy == '"app|hits-hour";q=5;w=3600' and decision.window == 3600
    # Equal remaining: the window that resets first wins.
    tie = await limiter.consume([LimitCheck("app|x", "hour", 5, 1), LimitCheck("app|x", "minute", 5, 1)])
    assert (tie.period, tie.remaining, tie.reset) == ("minute", 4, 30)


async def test_retry_after_is_the_latest_reset_among_the_failing_checks(limiter: MemoryLimiter | RedisLimiter,
                                                                        clock: Clock) -> None:
    clock.at("2024-06-01T12:00:30")
    minute = LimitCheck("app|hits", "minute", 1, 1)
    hour = LimitCheck("app|hits", "hour", 1, 1)
    day = LimitCheck("app|hits", "day", 100, 1)
    assert (await limiter.consume([minute, hour, day])).allowed
    both = await limiter.consume([minute, hour, day])
    assert not both.allowed
    assert (both.retry_after, both.reset, both.period, both.exceeded_key) == (3570, 3570, "hour", "app|hits")
    assert both.policy == '"app|hits-hour";q=1;w=3600' and both.remaining == 0
    clock.at("2024-06-01T13:00:10")  # new hour, same day; the minute counter is new too
    assert (await limiter.consume([hour])).allowed
    only_minute_ok = await limiter.consume([minute, hour])
    assert (only_minute_ok.retry_after, only_minute_ok.period) == (3590, "hour")
    minute_only = await limiter.consume([LimitCheck("app|hits", "minute", 1, 1)])
    assert minute_only.allowed  # the denied requests above took nothing from the minute
    assert (await limiter.consume([minute])).retry_after == 50


@pytest.mark.parametrize(("period", "instant", "reset", "length"), [
    ("second", "2024-06-01T12:00:00.25", 1, 1),
    ("minute", "2024-06-01T12:00:30", 30, 60),
    ("minute", "2024-06-01T12:00:30.5", 30, 60),  # whole seconds, rounded up
    ("hour", "2024-06-01T12:45:00", 900, 3600),
    ("day", "2024-06-01T18:00:00", 21_600, 86_400),
    ("week", "2024-05-15T12:00:00", 388_800, 604_800),  # Wednesday noon → Monday
    ("week", "2024-06-09T23:59:59.9", 1, 604_800),
    ("month", "2024-02-15T00:00:00", 15 * 86_400, 29 * 86_400),
    ("month", "2024-01-31T23:59:59.9", 1, 31 * 86_400),
    ("year", "2023-12-31T23:00:00", 3600, 365 * 86_400),
])
async def test_reset_at_known_instants(limiter: MemoryLimiter | RedisLimiter, clock: Clock, period: str,
                                       instant: str, reset: int, length: int) -> None:
    clock.at(instant)
    check = [LimitCheck("app|hits", period, 1, 1)]
    allowed = await limiter.consume(check)
    assert (allowed.reset, allowed.window, allowed.retry_after) == (reset, length, None)
    assert allowed.policy == f'"app|hits-{period}";q=1;w={length}'
    denied = await limiter.consume(check)
    assert (denied.reset, denied.retry_after) == (reset, reset)


# --- window boundaries ------------------------------------------------------------------------

BOUNDARIES = [
    # period, first instant of a window, its last instant, first instant of the next, next window's length
    ("second", "2024-06-01T12:00:00", "2024-06-01T12:00:00.999", "2024-06-01T12:00:01", 1),
    ("minute", "2024-06-01T12:00:00", "2024-06-01T12:00:59.9", "2024-06-01T12:01:00", 60),
    ("hour", "2024-06-01T12:00:00", "2024-06-01T12:59:59.9", "2024-06-01T13:00:00", 3600),
    ("day", "2024-02-29T00:00:00", "2024-02-29T23:59:59.9", "2024-03-01T00:00:00", 86_400),
    ("week", "2024-06-03T00:00:00", "2024-06-09T23:59:59.9", "2024-06-10T00:00:00", 604_800),
    ("month", "2024-01-01T00:00:00", "2024-01-31T23:59:59.9", "2024-02-01T00:00:00", 29 * 86_400),
    ("month", "2024-02-01T00:00:00", "2024-02-29T23:59:59.9", "2024-03-01T00:00:00", 31 * 86_400),
    ("month", "2023-02-01T00:00:00", "2023-02-28T23:59:59.9", "2023-03-01T00:00:00", 31 * 86_400),
    ("month", "2024-04-01T00:00:00", "2024-04-30T23:59:59.9", "2024-05-01T00:00:00", 31 * 86_400),
    ("month", "2024-12-01T00:00:00", "2024-12-31T23:59:59.9", "2025-01-01T00:00:00", 31 * 86_400),
    ("year", "2024-01-01T00:00:00", "2024-12-31T23:59:59.9", "2025-01-01T00:00:00", 365 * 86_400),
]


@pytest.mark.parametrize(("period", "first", "last", "next_first", "next_length"), BOUNDARIES,
                         ids=[f"{b[0]}-{b[2][:10]}" for b in BOUNDARIES])
async def test_each_window_counts_from_zero_at_its_boundary(limiter: MemoryLimiter | RedisLimiter,
                                                            clock: Clock, period: str, first: str, last: str,
                                                            next_first: str, next_length: int) -> None:
    check = [LimitCheck("app|hits", period, 2, 1)]
    clock.at(first)
    assert (await limiter.consume(check)).remaining == 1
    clock.at(last)  # same window, to its last instant
    assert (await limiter.consume(check)).remaining == 0
    denied = await limiter.consume(check)
    assert not denied.allowed and denied.retry_after == 1
    clock.at(next_first)
    fresh = await limiter.consume(check)
    assert fresh.allowed and fresh.remaining == 1 and fresh.reset == next_length
    clock.at(last)  # the previous window is still full if the clock goes back
    assert not (await limiter.consume(check)).allowed


async def test_eternity_never_resets(limiter: MemoryLimiter | RedisLimiter, clock: Clock) -> None:
    check = [LimitCheck("app|signups", "eternity", 2, 1)]
    clock.at("2024-01-01T00:00:00")
    first = await limiter.consume(check)
    assert first.reset == ETERNITY_END - int(epoch("2024-01-01T00:00:00"))
    assert first.window is None and first.policy == '"app|signups-eternity";q=2'
    clock.at("2031-07-15T08:00:00")
    assert (await limiter.consume(check)).remaining == 0
    clock.at("2999-12-31T23:59:59")
    denied = await limiter.consume(check)
    assert not denied.allowed and denied.retry_after == ETERNITY_END - int(epoch("2999-12-31T23:59:59"))
    if isinstance(limiter, RedisLimiter):
        assert await limiter._client.call("TTL", limiter.counter_key(check[0], clock())) == -1  # no expiry


# --- memory specifics -------------------------------------------------------------------------

def test_memory_drops_expired_windows_a_batch_at_a_time(clock: Clock) -> None:
    limiter = MemoryLimiter(clock, prune_batch=10, expiry_margin=60)
    clock.at("2024-06-01T12:00:10")
    for n in range(100):
        limiter.consume_now([LimitCheck(f"app|u:{n}", "minute", 5, 1)])
    limiter.consume_now([LimitCheck("app|forever", "eternity", 5, 1)])
    assert len(limiter) == 101
    clock.at("2024-06-01T12:05:00")
    limiter.consume_now([LimitCheck("app|live", "minute", 5, 1)])
    assert len(limiter) == 101 - 10 + 1  # one bounded batch per call
    for _ in range(10):
        limiter.consume_now([LimitCheck("app|live", "minute", 5, 0)])
    assert len(limiter) == 2  # the live minute and the eternity counter
    assert limiter.consume_now([LimitCheck("app|forever", "eternity", 5, 1)]).remaining == 3


def test_memory_prunes_windows_once_they_ended_plus_the_margin(clock: Clock) -> None:
    limiter = MemoryLimiter(clock, expiry_margin=10)
    minute, hour = LimitCheck("app|a", "minute", 5, 1), LimitCheck("app|a", "hour", 5, 1)
    clock.at("2024-06-01T12:00:30")
    limiter.consume_now([minute, hour])
    clock.at("2024-06-01T12:01:09.9")
    assert limiter.consume_now([minute, hour]).remaining == 3  # hour: 2 used; the new minute: 1
    assert len(limiter) == 3  # the 12:00 minute is kept 10 s past its end
    clock.at("2024-06-01T12:01:10")
    assert limiter.consume_now([minute]).remaining == 3
    assert len(limiter) == 2  # the 12:00 minute is gone; the hour and the 12:01 minute remain


def test_memory_consume_now_is_synchronous(clock: Clock) -> None:
    limiter = MemoryLimiter(clock)
    decision = limiter.consume_now([LimitCheck("app|hits", "minute", 1, 1)])
    assert decision.allowed and not limiter.consume_now([LimitCheck("app|hits", "minute", 1, 1)]).allowed


# --- Redis specifics --------------------------------------------------------------------------

async def test_redis_counters_expire_after_their_window(clock: Clock, prefix: str) -> None:
    require_redis()
    limiter = RedisLimiter(REDIS_URL, clock=clock, key_prefix=prefix, expiry_margin=60)
    try:
        clock.at("2024-06-01T12:00:30")
        check = LimitCheck("app|hits", "minute", 5, 1)
        await limiter.consume([check])
        key = limiter.counter_key(check, clock())
        assert key == f"{prefix}app|hits|minute|{int(epoch('2024-06-01T12:00:00'))}"
        assert redis_keys(prefix) == {key: 1}
        assert 85 <= await limiter._client.call("TTL", key) <= 90  # 30 s left in the minute + 60 s margin
    finally:
        await limiter.close()


WORKER = """
import asyncio, sys, time
from accord.gateway.limits import LimitCheck, RedisLimiter

url, prefix, instant, start_at, attempts, limit = sys.argv[1:7]

async def main():
    limiter = RedisLimiter(url, key_prefix=prefix, clock=lambda: float(instant), connect_timeout=5, timeout=5)
    check = [LimitCheck("app|hits", "hour", int(limit), 1)]
    admitted = 0

    async def hammer(n):
        nonlocal admitted
        for _ in range(n):
            decision = await limiter.consume(check)
            admitted += decision.allowed  # not `admitted += await ...`: that reads admitted before awaiting

    while time.time() < float(start_at):
        await asyncio.sleep(0.001)
    workers = 32
    await asyncio.gather(*(hammer(int(attempts) // workers) for _ in range(workers)))
    print(admitted, limiter.unavailable_total)
    await limiter.close()

asyncio.run(main())
"""


async def test_redis_is_exact_across_processes(prefix: str) -> None:
    require_redis()
    limit, attempts = 500, 640  # each process alone could take the whole limit
    instant = epoch("2024-06-01T12:30:00")
    start_at = time.time() + 3  # both start hammering at the same moment
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, REDIS_URL, prefix, str(instant), str(start_at),
                                   str(attempts), str(limit)], env=env, cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = []
    for process in processes:
        out, err = await asyncio.to_thread(process.communicate, timeout=120)
        assert process.returncode == 0, err
        admitted, unavailable = map(int, out.split())
        assert unavailable == 0, "a worker fell back to memory: the count would not be shared"
        results.append(admitted)
    assert sum(results) == limit
    assert all(admitted > 0 for admitted in results), results  # both really competed
    hour = int(epoch("2024-06-01T12:00:00"))
    assert redis_keys(prefix) == {f"{prefix}app|hits|hour|{hour}": limit}


async def test_fail_open_counts_in_memory_while_redis_is_down_and_returns_to_it(
        private_redis: PrivateRedis, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="accord.gateway.limits")
    limiter = RedisLimiter(private_redis.url, on_unavailable="open", clock=clock, retry_interval=2.0)
    check = LimitCheck("app|hits", "minute", 3, 1)
    key = limiter.counter_key(check, clock())
    try:
        assert (await limiter.consume([check])).remaining == 2
        assert private_redis.value(key) == 1 and limiter.available

        private_redis.kill()
        # Per process, from zero: this process's fallback admits 3 more, then denies.
        outage = [await limiter.consume([check]) for _ in range(5)]
        assert [d.allowed for d in outage] == [True, True, True, False, False]
        assert limiter.unavailable_total == 5 and not limiter.available

        private_redis.start()  # back at once, but the next retry is not due yet
        assert not (await limiter.consume([check])).allowed
        assert limiter.unavailable_total == 6 and private_redis.value(key) is None

        await asyncio.sleep(2.1)  # the next call probes Redis and stays there
        back = [await limiter.consume([check]) for _ in range(2)]
        assert [d.remaining for d in back] == [2, 1]  # a fresh server (no persistence), via EVAL after NOSCRIPT
        assert private_redis.value(key) == 2
        assert limiter.available and limiter.unavailable_total == 6
    finally:
        await limiter.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "accord.gateway.limits"]
    assert len(messages) == 2, messages  # once when it went down, once when it came back
    assert "unavailable" in messages[0] and "reachable again" in messages[1]


async def test_fail_closed_refuses_while_redis_is_down_and_recovers(private_redis: PrivateRedis,
                                                                    clock: Clock) -> None:
    limiter = RedisLimiter(private_redis.url, on_unavailable="closed", clock=clock, retry_interval=0.3)
    check = LimitCheck("app|hits", "minute", 3, 1)
    key = limiter.counter_key(check, clock())
    try:
        assert (await limiter.consume([check])).allowed
        private_redis.kill()
        for attempt in range(1, 4):
            with pytest.raises(LimiterUnavailable):
                await limiter.consume([check])
            assert limiter.unavailable_total == attempt
        private_redis.start()
        await asyncio.sleep(0.4)
        assert (await limiter.consume([check])).remaining == 2
        assert private_redis.value(key) == 1 and limiter.available
    finally:
        await limiter.close()


async def test_a_dead_redis_is_probed_at_most_once_per_interval(clock: Clock) -> None:
    # A port nothing listens on: every probe is a refused connection.
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", clock=clock, retry_interval=60)
    try:
        check = [LimitCheck("app|hits", "minute", 1000, 1)]
        started = time.monotonic()
        decisions = [await limiter.consume(check) for _ in range(200)]
        assert time.monotonic() - started < 1.0
        assert all(d.allowed for d in decisions) and decisions[-1].remaining == 800
        assert limiter.unavailable_total == 200 and not limiter.available
    finally:
        await limiter.close()


def test_on_unavailable_must_be_open_or_closed() -> None:
    with pytest.raises(ValueError, match="on_unavailable"):
        RedisLimiter(REDIS_URL, on_unavailable="maybe")
