"""Micro benchmark of the rate limiter: decisions per second, in memory and in Redis.

    .venv/bin/python bench/limits.py [redis-url]     (default redis://127.0.0.1:6379/15)

Each decision is one request with two checks (per application per minute, per
application and end user per day) over 1 000 applications, so counters spread
like real traffic. Redis figures include the network round trip; the keys it
writes live under a random prefix and are deleted afterwards. Not a test.
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import redis

from accord.gateway.limits import LimitCheck, MemoryLimiter, RedisLimiter

APPS = 1_000
BIG = 10**12  # limits nobody reaches: the benchmark measures admitted requests


def requests(count: int) -> list[list[LimitCheck]]:
    return [[LimitCheck(f"app{n % APPS}|hits", "minute", BIG, 1),
             LimitCheck(f"app{n % APPS}|hits|u:user{n % 7}", "day", BIG, 1)] for n in range(count)]


def report(label: str, count: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<42} {count / seconds:>12,.0f} decisions/s   {seconds * 1e6 / count:>8.1f} µs each{extra}")


def bench_memory_sync(count: int) -> None:
    limiter = MemoryLimiter()
    batch = requests(count)
    started = time.perf_counter()
    for checks in batch:
        limiter.consume_now(checks)
    report("memory, consume_now (sync)", count, time.perf_counter() - started)


async def bench_memory_async(count: int) -> None:
    limiter = MemoryLimiter()
    batch = requests(count)
    started = time.perf_counter()
    for checks in batch:
        await limiter.consume(checks)
    report("memory, await consume", count, time.perf_counter() - started)


async def bench_redis_sequential(url: str, prefix: str, count: int) -> None:
    limiter = RedisLimiter(url, key_prefix=prefix, connect_timeout=2, timeout=2)
    batch = requests(count)
    await limiter.consume(batch[0])  # connect and load the script outside the measurement
    latencies = []
    started = time.perf_counter()
    for checks in batch:
        before = time.perf_counter()
        await limiter.consume(checks)
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    await limiter.close()
    cuts = statistics.quantiles(latencies, n=100)
    report("redis, one at a time", count, elapsed,
           f"   p50 {cuts[49] * 1e6:.0f} µs, p99 {cuts[98] * 1e6:.0f} µs")
    assert limiter.unavailable_total == 0, "Redis was unreachable: figures are the fallback's"


async def bench_redis_concurrent(url: str, prefix: str, count: int, concurrency: int) -> None:
    limiter = RedisLimiter(url, key_prefix=prefix, connect_timeout=2, timeout=2, max_connections=concurrency)
    batch = requests(count)
    await limiter.consume(batch[0])
    share = count // concurrency

    async def worker(offset: int) -> None:
        for checks in batch[offset:offset + share]:
            await limiter.consume(checks)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n * share) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    await limiter.close()
    report(f"redis, {concurrency} concurrent (one process)", share * concurrency, elapsed)
    assert limiter.unavailable_total == 0, "Redis was unreachable: figures are the fallback's"


async def main(url: str) -> None:
    print(f"Python {sys.version.split()[0]}, redis-py {redis.__version__}, Redis at {url}")
    bench_memory_sync(300_000)
    await bench_memory_async(300_000)
    prefix = f"accord:bench:{uuid.uuid4().hex[:8]}:"
    try:
        await bench_redis_sequential(url, prefix, 20_000)
        for concurrency in (16, 64):
            await bench_redis_concurrent(url, prefix, 60_000, concurrency)
    finally:
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/15"))
