"""Webhook dispatch throughput and lag: a burst of events delivered to a local receiver.

    .venv/bin/python bench/webhooks.py                          # 10 000 events, SQLite, one worker
    .venv/bin/python bench/webhooks.py --postgres postgresql://postgres@127.0.0.1:5432/postgres --workers 2
    .venv/bin/python bench/webhooks.py --events 2000 --concurrency 50 --receiver-delay 0.01
    .venv/bin/python bench/webhooks.py --events 3000 --rate 200    # steady load: lag when not saturated

A fresh database (a temporary SQLite file, or a temporary PostgreSQL database created
through the given admin URL and dropped afterwards) gets one endpoint pointing at an
aiohttp receiver in this process. `accord worker` runs as separate process(es), as in
production. Then the burst: `--events` events written to the outbox through
`accord.events.service.emit`, 1000 per transaction, as fast as possible.

Measured at the receiver: throughput (events per second from the first event written to
the last one received) and lag (receipt time minus the event's `created_at`: time in the
outbox + fan-out + claim + the HTTP request), p50/p99/max. In a burst the lag is mostly
queueing (the last event waits for the 9 999 before it); `--rate` shows the lag of a
dispatcher that keeps up. Also checked: every event
arrives exactly once and signatures verify. Prints one readable block and one
`BENCH_JSON {...}` line. Not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg
from aiohttp import web
from standardwebhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET_KEY = "accord-bench-secret-key-not-for-production"


class Receiver:
    """Records when each webhook-id arrived and the `created_at` it carries."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrivals: dict[str, tuple[float, float]] = {}  # webhook-id -> (arrival epoch s, created_at epoch s)
        self.duplicates = 0
        self.samples: list[tuple[bytes, dict[str, str]]] = []
        self.done = asyncio.Event()
        self.expected = 0

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        webhook_id = request.headers["webhook-id"]
        if webhook_id in self.arrivals:
            self.duplicates += 1
        else:
            created = datetime.fromisoformat(json.loads(body)["created_at"].replace("Z", "+00:00")).timestamp()
            self.arrivals[webhook_id] = (arrived, created)
            if len(self.samples) < 20:
                self.samples.append((body, dict(request.headers)))
            if len(self.arrivals) >= self.expected:
                self.done.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(text="ok")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def prepare(database_url: str, receiver_url: str) -> str:
    from accord.auth.actor import CLI_ACTOR
    from accord.core import migrate
    from accord.core.config import Settings
    from accord.core.db import create_engine, session_factory, session_scope
    from accord.webhooks import service
    from accord.webhooks.schemas import EndpointCreate

    await migrate.upgrade_async(database_url)
    settings = Settings(database_url=database_url, secret_key=SECRET_KEY, webhooks_allow_http=True,
                        webhooks_allow_private=True)
    engine = create_engine(database_url)
    try:
        async with session_scope(session_factory(engine)) as session:
            _, secret = await service.create_endpoint(session, CLI_ACTOR, settings, EndpointCreate(url=receiver_url),
                                                      partner_id=None)
        return secret
    finally:
        await engine.dispose()


async def burst(database_url: str, count: int, rate: float = 0.0) -> tuple[float, float]:
    """Write `count` events, 1000 per transaction (or `rate` per second, in tenths of a second);
    when the writing started and ended (epoch s)."""
    from accord.core.db import create_engine, session_factory, session_scope
    from accord.events import service as events

    engine = create_engine(database_url)
    per_transaction = max(1, int(rate / 10)) if rate else 1000
    try:
        started = time.time()
        for first in range(0, count, per_transaction):
            if rate:
                await asyncio.sleep(max(0.0, started + first / rate - time.time()))
            async with session_scope(session_factory(engine)) as session:
                for n in range(first, min(count, first + per_transaction)):
                    await events.emit(session, "partner.updated", partner_id=uuid.uuid4(),
                                      data={"object": {"n": n, "name": f"Partner {n}"},
                                            "changes": {"name": [f"Old {n}", f"Partner {n}"]},
                                            "actor": {"kind": "cli", "id": "bench", "label": "bench"}})
        return started, time.time()
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace, database_url: str) -> dict:
    receiver = Receiver(args.receiver_delay)
    receiver.expected = args.events
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    secret = await prepare(database_url, f"http://127.0.0.1:{port}/hook")

    env = {**os.environ, "ACCORD_DATABASE_URL": database_url, "ACCORD_SECRET_KEY": SECRET_KEY,
           "ACCORD_WEBHOOKS_ALLOW_HTTP": "true", "ACCORD_WEBHOOKS_ALLOW_PRIVATE": "true",
           "ACCORD_WEBHOOKS_CONCURRENCY": str(args.concurrency)}
    logs = [tempfile.NamedTemporaryFile("w+", prefix="accord-bench-worker-", suffix=".log", delete=False)
            for _ in range(args.workers)]
    workers = [subprocess.Popen([sys.executable, "-m", "accord.cli", "worker"], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT) for log in logs]
    try:
        await asyncio.sleep(2.0)  # the workers start and go idle
        for process, log in zip(workers, logs):
            if process.poll() is not None:
                raise SystemExit(f"accord worker exited:\n{Path(log.name).read_text()[-3000:]}")
        started, written = await burst(database_url, args.events, args.rate)
        try:
            await asyncio.wait_for(receiver.done.wait(), timeout=args.timeout)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(1.0)  # late duplicates, if any, would arrive now
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
            Path(log.name).unlink(missing_ok=True)
        await runner.cleanup()

    arrivals = list(receiver.arrivals.values())
    lags = [(arrived - created) * 1000 for arrived, created in arrivals]
    last = max((arrived for arrived, _ in arrivals), default=started)
    for body, headers in receiver.samples:
        Webhook(secret).verify(body, headers)
    return {
        "events": args.events, "delivered": len(arrivals), "duplicates": receiver.duplicates,
        "workers": args.workers, "concurrency": args.concurrency, "database": database_url.split(":")[0],
        "receiver_delay_ms": args.receiver_delay * 1000, "rate_per_s": args.rate or "burst",
        "burst_write_s": round(written - started, 3),
        "delivery_s": round(last - started, 3),
        "throughput_per_s": round(len(arrivals) / (last - started), 1) if arrivals else 0.0,
        "lag_ms_p50": round(percentile(lags, 0.50), 1) if lags else None,
        "lag_ms_p99": round(percentile(lags, 0.99), 1) if lags else None,
        "lag_ms_max": round(max(lags), 1) if lags else None,
        "lag_ms_mean": round(statistics.fmean(lags), 1) if lags else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1, help="`accord worker` processes")
    parser.add_argument("--concurrency", type=int, default=100, help="ACCORD_WEBHOOKS_CONCURRENCY per worker")
    parser.add_argument("--receiver-delay", type=float, default=0.0, help="seconds the receiver takes to answer")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="write this many events per second instead of a burst (lag when not saturated)")
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="run on a temporary PostgreSQL database instead")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    if args.postgres:
        name = f"accord_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        database_url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    else:
        directory = tempfile.mkdtemp(prefix="accord-bench-")
        database_url = f"sqlite+aiosqlite:///{directory}/webhooks.db"
    try:
        result = asyncio.run(run(args, database_url))
    finally:
        if args.postgres:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"webhooks: {result['delivered']}/{result['events']} events delivered "
          f"({result['duplicates']} duplicates) by {result['workers']} worker(s) on {result['database']}, "
          f"concurrency {result['concurrency']}")
    print(f"  events written ({result['rate_per_s']}) in {result['burst_write_s']} s; "
          f"all delivered {result['delivery_s']} s after the first was written")
    print(f"  throughput {result['throughput_per_s']} events/s")
    print(f"  lag (created_at -> receipt) p50 {result['lag_ms_p50']} ms, p99 {result['lag_ms_p99']} ms, "
          f"max {result['lag_ms_max']} ms")
    print("BENCH_JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
