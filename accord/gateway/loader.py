"""Keeps the gateway's snapshot current: polls the program version and rebuilds on change.

A poll is one primary-key read; a rebuild happens only when the version moved.
When the database is unreachable the gateway keeps serving from its last
snapshot and retries; the outage is logged once, not per poll.

A rebuild runs on a thread of its own, with its own event loop and engine: building
a snapshot is mostly Python work (1.7 s at 100k credentials), which on the serving
loop would stop every request for that long. On its own thread it shares the GIL with
the serving loop (which gets it back every `sys.getswitchinterval()`, 5 ms), so traffic
slows during a rebuild instead of stopping (bench/snapshot_bench.py measures both).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from accord.core.collector import collector_paused
from accord.core.db import create_engine
from accord.core.version import VERSION_QUERY
from accord.gateway.builder import build_snapshot
from accord.gateway.snapshot import EMPTY, Snapshot

log = logging.getLogger("accord.gateway.snapshot")


class BackgroundBuilder:
    """Builds snapshots on one thread with its own event loop and database engine."""

    def __init__(self, database_url: str, server_key: str) -> None:
        self._url = database_url
        self._key = server_key
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="accord-snapshot")
        self._loop: asyncio.AbstractEventLoop | None = None  # made and used on that thread only
        self._engine: AsyncEngine | None = None

    async def build(self) -> Snapshot:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, self._build)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._shutdown)
        self._executor.shutdown(wait=True)

    def _run(self, work: Any) -> Any:  # on the builder's thread
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        coroutine: Coroutine[Any, Any, Any] = work()
        return self._loop.run_until_complete(coroutine)

    async def _build(self) -> Snapshot:
        if self._engine is None:
            self._engine = create_engine(self._url)
        with collector_paused():  # a full collection mid-build would hold the GIL, and the serving loop
            async with self._engine.connect() as connection:
                return await build_snapshot(connection, self._key)

    def _shutdown(self) -> None:  # on the builder's thread
        if self._loop is None:
            return
        if self._engine is not None:
            self._loop.run_until_complete(self._engine.dispose())
            self._engine = None
        self._loop.close()
        self._loop = None


class SnapshotLoader:
    def __init__(self, database_url: str, server_key: str, *, poll_interval: float = 0.2) -> None:
        self._url = database_url
        self._key = server_key
        self.poll_interval = poll_interval
        self.current: Snapshot = EMPTY
        self.last_build_seconds = 0.0
        self.database_ok = False
        self._engine: AsyncEngine | None = None
        self._builder = BackgroundBuilder(database_url, server_key)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._engine = create_engine(self._url)
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="accord-snapshot-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._builder.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def refresh(self) -> bool:
        """Rebuild if the version moved; True when a new snapshot was installed."""
        assert self._engine is not None
        try:
            async with self._engine.connect() as connection:
                version = (await connection.execute(VERSION_QUERY)).scalar() or 0
                if version == self.current.version and self.current is not EMPTY:
                    self._mark_ok()
                    return False
            started = time.perf_counter()
            snapshot = await self._builder.build()
            self.last_build_seconds = time.perf_counter() - started
        except Exception as exc:  # any database trouble: keep serving what we have
            if self.database_ok or self.current is EMPTY:
                log.warning("cannot refresh the snapshot (serving version %s): %s", self.current.version, exc)
            self.database_ok = False
            return False
        self.current = snapshot
        # The snapshot is long-lived and immutable: take it (and the rest of the heap) out of the
        # cyclic GC's full passes, which otherwise stall the loop for 100+ ms at 100k credentials.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._mark_ok()
        log.info("snapshot version %s built in %.1f ms", snapshot.version, self.last_build_seconds * 1000)
        return True

    def _mark_ok(self) -> None:
        if not self.database_ok:
            self.database_ok = True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.refresh()
