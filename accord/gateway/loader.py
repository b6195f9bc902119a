"""Keeps the gateway's snapshot current: polls the program version and rebuilds on change.

A poll is one primary-key read; a rebuild happens only when the version moved.
When the database is unreachable the gateway keeps serving from its last
snapshot and retries; the outage is logged once, not per poll.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from accord.core.db import create_engine
from accord.core.version import VERSION_QUERY
from accord.gateway.builder import build_snapshot
from accord.gateway.snapshot import EMPTY, Snapshot

log = logging.getLogger("accord.gateway.snapshot")


class SnapshotLoader:
    def __init__(self, database_url: str, server_key: str, *, poll_interval: float = 0.2) -> None:
        self._url = database_url
        self._key = server_key
        self.poll_interval = poll_interval
        self.current: Snapshot = EMPTY
        self.last_build_seconds = 0.0
        self.database_ok = False
        self._engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None

    def get(self) -> Snapshot:
        return self.current

    async def start(self) -> None:
        self._engine = create_engine(self._url)
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="accord-snapshot-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
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
                snapshot = await build_snapshot(connection, self._key)
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
