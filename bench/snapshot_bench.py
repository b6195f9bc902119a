"""Snapshot build time and credential lookup cost with many credentials.

    .venv/bin/python bench/snapshot_bench.py 10000 100000 1000000

One SQLite database with bench/program.yaml applied, then credential rows
inserted directly (SQLAlchemy Core, batched) until each size is reached. At
each size:

- build: `accord.gateway.builder.build_snapshot` on one connection, as the
  gateway's loader runs it (best of a few; 1 at 1M), with the longest stall of
  the event loop meanwhile — the gateway serves nothing while the build holds
  the loop — and the memory the snapshot holds (RSS growth, approximate);
- lookup: the hot path's credential lookup,
  `snapshot.credentials.get(hmac.new(key, secret, sha256).hexdigest())`, for
  known and unknown keys, with its two halves timed apart; and the one-shot
  `hmac.digest(...).hex()` form for comparison.

Prints a readable line per size and one `BENCH_JSON {...}` line per size for
bench/gateway_bench.py. Not a test.
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert, select

BENCH = Path(__file__).resolve().parent
SECRET_KEY = "accord-bench-secret-key-not-for-production"
BATCH = 20_000
LOOKUPS = 200_000


def secret_for(n: int) -> str:
    """The n-th benchmark key: shaped like a real one (prefix + 40 characters)."""
    return "acc_live_" + hashlib.blake2b(n.to_bytes(8, "little"), digest_size=20).hexdigest()


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def prepare(database_url: str) -> None:
    from accord.auth.actor import CLI_ACTOR
    from accord.core import migrate
    from accord.core.config import Settings
    from accord.core.db import create_engine, session_factory, session_scope
    from accord.program.apply import apply_program
    from accord.program.document import load_document

    await migrate.upgrade_async(database_url)
    document = load_document(BENCH / "program.yaml", environ={"BENCH_UPSTREAM": "http://127.0.0.1:9"})
    engine = create_engine(database_url)
    try:
        async with session_scope(session_factory(engine)) as session:
            await apply_program(session, Settings(database_url=database_url, secret_key=SECRET_KEY), document,
                                actor=CLI_ACTOR)
    finally:
        await engine.dispose()


def insert_credentials(sync_url: str, start: int, stop: int) -> float:
    """Credential rows `start`..`stop`-1 for the program's one application; returns seconds taken."""
    from accord.apps.models import Application, Credential, CredentialKind
    from accord.core.security import keyed_hash

    table = Credential.__table__
    engine = create_sync_engine(sync_url)
    began = time.perf_counter()
    try:
        with engine.begin() as conn:
            app_id = conn.execute(select(Application.__table__.c.id)).scalar_one()
            now = datetime.now(UTC)
            for first in range(start, stop, BATCH):
                rows = []
                for n in range(first, min(first + BATCH, stop)):
                    secret = secret_for(n)
                    rows.append({"id": uuid.uuid4(), "created_at": now, "updated_at": now, "application_id": app_id,
                                 "kind": CredentialKind.api_key, "name": f"bench-{n}", "prefix": "acc_live_",
                                 "key_hash": keyed_hash(secret, SECRET_KEY), "last4": secret[-4:],
                                 "imported": False})
                conn.execute(insert(table), rows)
    finally:
        engine.dispose()
    return time.perf_counter() - began


async def timed_build(database_url: str, *, on_loop: bool = False) -> tuple[Any, float, float]:
    """(snapshot, seconds to build, longest event-loop stall in seconds while building).

    As the gateway's loader builds (on its own thread: accord.gateway.loader.BackgroundBuilder),
    or, with `on_loop`, on the serving loop itself (how it was built before: the stall to compare with).
    """
    from accord.core.db import create_engine
    from accord.gateway.builder import build_snapshot
    from accord.gateway.loader import BackgroundBuilder

    stall = 0.0
    building = True

    async def ticker() -> None:
        nonlocal stall
        last = time.perf_counter()
        while building:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall = max(stall, now - last)
            last = now

    engine = create_engine(database_url) if on_loop else None
    builder = None if on_loop else BackgroundBuilder(database_url, SECRET_KEY)
    try:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        began = time.perf_counter()
        if engine is not None:
            async with engine.connect() as connection:
                snapshot = await build_snapshot(connection, SECRET_KEY)
        else:
            snapshot = await builder.build()
        seconds = time.perf_counter() - began
        building = False
        await tick
    finally:
        if engine is not None:
            await engine.dispose()
        if builder is not None:
            await builder.close()
    return snapshot, seconds, stall


def per_op_ns(function: Any, items: list[Any], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        function(items)
        best = min(best, time.perf_counter() - began)
    return best / len(items) * 1e9


def lookup_costs(snapshot: Any, size: int) -> dict[str, float]:
    key = SECRET_KEY.encode()
    credentials = snapshot.credentials
    rng = random.Random(size)
    known = [secret_for(rng.randrange(size)) for _ in range(LOOKUPS)]
    unknown = [secret_for(size + 10_000_000 + n) for n in range(LOOKUPS)]
    hashes = [hmac.new(key, s.encode(), hashlib.sha256).hexdigest() for s in known]
    assert all(credentials.get(h) is not None for h in hashes[:1000]), "benchmark keys are missing from the snapshot"
    sha256 = hashlib.sha256

    def hot_path(secrets: list[str]) -> None:  # what accord/gateway/proxy.py does per request
        get = credentials.get
        for secret in secrets:
            get(hmac.new(key, secret.encode(), sha256).hexdigest())

    def hmac_only(secrets: list[str]) -> None:
        for secret in secrets:
            hmac.new(key, secret.encode(), sha256).hexdigest()

    def hmac_digest(secrets: list[str]) -> None:
        for secret in secrets:
            hmac.digest(key, secret.encode(), "sha256").hex()

    def dict_only(digests: list[str]) -> None:
        get = credentials.get
        for digest in digests:
            get(digest)

    def loop_only(items: list[str]) -> None:  # the loop's own cost, subtracted from the others
        for _ in items:
            pass

    base = per_op_ns(loop_only, known)
    return {
        "lookup_known_ns": round(per_op_ns(hot_path, known) - base),
        "lookup_unknown_ns": round(per_op_ns(hot_path, unknown) - base),
        "hmac_ns": round(per_op_ns(hmac_only, known) - base),
        "hmac_digest_ns": round(per_op_ns(hmac_digest, known) - base),
        "dict_get_ns": round(per_op_ns(dict_only, hashes) - base),
    }


async def main(sizes: list[int]) -> None:
    from accord.core.db import sync_url

    with tempfile.TemporaryDirectory(prefix="accord-snapshot-bench-") as tmp:
        database_url = f"sqlite+aiosqlite:///{tmp}/snapshot.db"
        await prepare(database_url)
        have = 0
        for size in sorted(sizes):
            inserted = insert_credentials(sync_url(database_url), have, size)
            have = size
            repeats = 3 if size <= 100_000 else 1
            builds, stalls = [], []
            snapshot = None
            for _ in range(repeats):
                snapshot = None
                gc.collect()
                before = rss_mb()
                snapshot, seconds, stall = await timed_build(database_url)
                held = rss_mb() - before
                builds.append(seconds)
                stalls.append(stall)
            assert snapshot is not None and len(snapshot.credentials) == size + 1  # + the program's own key
            on_loop_stall = None
            if size <= 100_000:  # the same build on the serving loop, for comparison
                _, _, on_loop_stall = await timed_build(database_url, on_loop=True)
            figures = {"credentials": size, "insert_seconds": round(inserted, 1),
                       "build_seconds": round(min(builds), 3), "build_seconds_all": [round(b, 3) for b in builds],
                       "longest_loop_stall_ms": round(max(stalls) * 1000, 1),
                       "loop_stall_if_built_on_the_loop_ms": round(on_loop_stall * 1000, 1) if on_loop_stall else None,
                       "snapshot_rss_mb": round(held, 1),
                       **lookup_costs(snapshot, size)}
            print(f"{size:>9,} credentials: build {figures['build_seconds'] * 1000:8.1f} ms "
                  f"(event loop stalled up to {figures['longest_loop_stall_ms']:.0f} ms"
                  + (f"; {on_loop_stall * 1000:.0f} ms if built on the loop" if on_loop_stall else "")
                  + f"), ~{held:.0f} MB; lookup "
                  f"known {figures['lookup_known_ns']} ns, unknown {figures['lookup_unknown_ns']} ns "
                  f"(hmac {figures['hmac_ns']} ns, hmac.digest {figures['hmac_digest_ns']} ns, "
                  f"dict {figures['dict_get_ns']} ns); rows inserted in {inserted:.1f} s", flush=True)
            print("BENCH_JSON " + json.dumps(figures), flush=True)
            del snapshot


if __name__ == "__main__":
    asyncio.run(main([int(arg) for arg in sys.argv[1:]] or [10_000, 100_000, 1_000_000]))
